"""The methods of the kit, one module per paper, each a declaration (:class:`kit.methods.base.Method`)
that the one runner, :func:`kit.fit.fit`, trains, caches and loads; and their registry.

A method is registered under its name; ``fit(name, cfg, ...)`` and ``kit train NAME`` find it
here. The kit's own are registered lazily (``"module:attribute"``, imported on first use), so
importing this package imports no method module. A user's method is registered the same way::

    from kit import methods
    methods.register(MyMethod())        # a Method subclass with name = "mine"
    fit("mine", cfg)
"""
from __future__ import annotations

import importlib

from .base import Method

__all__ = ["register", "get", "names"]

#: name -> a Method, or "module:attribute" resolved on first use
_REGISTRY: dict[str, "Method | str"] = {
    "source_only": "kit.methods.supervised:SOURCE_ONLY",
    "oracle": "kit.methods.supervised:ORACLE",
    "weights_file": "kit.methods.supervised:WEIGHTS_FILE",
    "adaptseg": "kit.methods.adaptseg:ADAPTSEG",
    "das3": "kit.methods.das3:DAS3_METHOD",
    "ripu": "kit.methods.ripu:RIPU_METHOD",
    "cdcl": "kit.methods.cdcl:CDCL_METHOD",
    "ddep": "kit.methods.ddep:FINETUNE",
    "ddep_encoder": "kit.methods.ddep:ENCODER",
    "ddep_pretrain": "kit.methods.ddep:PRETRAIN",
}


def register(method: Method, replace: bool = False) -> Method:
    """Register ``method`` (a :class:`Method` instance) under ``method.name``; a name already
    taken raises ValueError unless ``replace``. Returns ``method``."""
    if not isinstance(method, Method):
        raise TypeError(f"register takes a kit.methods.base.Method instance, got {method!r}")
    if not isinstance(method.name, str) or not method.name:
        raise ValueError(f"{type(method).__name__}.name must be a non-empty string, got {method.name!r}")
    if method.name in _REGISTRY and not replace:
        raise ValueError(f"a method named {method.name!r} is already registered; pass replace=True to replace it")
    _REGISTRY[method.name] = method
    return method


def names() -> list[str]:
    """The registered method names, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> Method:
    """The method registered under ``name``; an unknown name raises ValueError listing the valid ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; registered methods: {', '.join(names())}")
    m = _REGISTRY[name]
    if isinstance(m, str):
        module, _, attr = m.partition(":")
        m = _REGISTRY[name] = getattr(importlib.import_module(module), attr)
    return m
