"""The methods of the kit, one module per paper, and a registry of trainers for ``kit train``.

A *trainer* is ``train_fn(cfg) -> Path | None``: it trains one model from a resolved
config (:func:`kit.config.resolve`) outside any notebook -- e.g. on several GPUs under
``torchrun`` (see :mod:`kit.distributed`) -- and saves it with
:func:`kit.cache.save_checkpoint` on rank 0, returning the checkpoint path there (``None``
on the other ranks). Trainers are registered by name. The kit's own methods all register
:class:`kit.fit.Trainer` (``kit.fit.train``: the method's :func:`kit.fit.fit`, every model of
its pipeline trained afresh); a user's may be any callable or a lazy ``"module:function"``::

    from kit import methods
    methods.register("mymethod", my_train_fn)
    methods.get("mymethod")(cfg)
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Mapping

from ..fit import Trainer

__all__ = ["register", "get", "names", "config_method", "train_output_path"]

TrainFn = Callable[[Mapping[str, Any]], "Path | None"]

#: name -> a callable, or "module:function" resolved on first use
_REGISTRY: dict[str, TrainFn | str] = {}
#: name -> the kit.config method whose defaults the trainer's config uses
_CONFIG: dict[str, str] = {}


def register(name: str, train_fn: TrainFn | str, config: str | None = None) -> None:
    """Register ``train_fn`` (a callable or a lazy ``"package.module:function"``) under ``name``.

    ``config``: the :mod:`kit.config` method whose defaults ``kit train`` resolves the
    trainer's config with (default: ``name`` itself if config knows it, else "supervised").
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"method name must be a non-empty string, got {name!r}")
    if not (callable(train_fn) or (isinstance(train_fn, str) and ":" in train_fn)):
        raise TypeError(f"train_fn for {name!r} must be callable or 'module:function', got {train_fn!r}")
    _REGISTRY[name] = train_fn
    if config is not None:
        _CONFIG[name] = config


def config_method(name: str) -> str:
    """The :mod:`kit.config` method name that ``kit train NAME`` resolves its config with."""
    from ..config import METHODS

    get(name)  # validates the name
    if name in _CONFIG:
        return _CONFIG[name]
    return name if name in METHODS else "supervised"


def names() -> list[str]:
    """The registered method names, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> TrainFn:
    """The trainer registered under ``name``; an unknown name raises ValueError listing the valid ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; registered methods: {', '.join(names()) or '(none)'}")
    fn = _REGISTRY[name]
    if isinstance(fn, str):
        module, _, attr = fn.partition(":")
        fn = getattr(importlib.import_module(module), attr)
        _REGISTRY[name] = fn
    return fn


def train_output_path(cfg: Mapping[str, Any], name: str) -> Path:
    """``<run_dir>/<name>.pt``; ``run_dir`` defaults to ``runs/<profile>/train``."""
    from ..cache import runs_root

    return Path(cfg.get("run_dir") or runs_root() / cfg["profile"] / "train") / f"{name}.pt"


# every method's trainer is kit.fit.train: its cached pipeline (fit), trained afresh and saved
for _name, _config in (("supervised", None), ("oracle", "supervised"), ("adaptseg", "adaptseg"), ("cdcl", "cdcl"),
                       ("ripu", "ripu"), ("ddep", "ddep"), ("das3", "das3")):
    register(_name, Trainer(_name), config=_config)
del _name, _config
