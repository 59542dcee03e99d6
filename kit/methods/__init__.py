"""The methods of the kit, one module per paper, and a registry of trainers for ``kit train``.

A *trainer* is ``train_fn(cfg) -> Path | None``: it trains one model from a resolved
config (:func:`kit.config.resolve`) outside any notebook -- e.g. on several GPUs under
``torchrun`` (see :mod:`kit.distributed`) -- and saves it with
:func:`kit.cache.save_checkpoint` on rank 0, returning the checkpoint path there (``None``
on the other ranks). Trainers are registered by name; modules are imported lazily, so
``import kit.methods`` stays cheap::

    from kit import methods
    methods.register("mymethod", my_train_fn)
    methods.get("mymethod")(cfg)
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Mapping

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


def _train_baseline(cfg: Mapping[str, Any], kind: str, name: str) -> Path | None:
    from .. import distributed
    from ..cache import save_checkpoint
    from ..data import make_da_datasets
    from .supervised import train_supervised

    ds = make_da_datasets(cfg)
    train_set = ds["source_train"] if kind == "source" else ds["target_train"]
    seed = int(cfg["seeds"][0])
    model, history = train_supervised(cfg, train_set, ds["target_val"], seed=seed,
                                      num_classes=train_set.num_classes, desc=f"{name} seed {seed}")
    path = train_output_path(cfg, name)
    if distributed.is_main():
        meta = {"method": name, "trained_on": kind, "seed": seed, "world_size": distributed.world_size(),
                "global_batch_size": int(cfg["batch_size"]) * distributed.world_size(),
                "num_classes": train_set.num_classes, "config": dict(cfg), "history": history.to_dict()}
        save_checkpoint(path, {"model": model.state_dict()}, meta)
    distributed.barrier()
    return path if distributed.is_main() else None


def train_source_only(cfg: Mapping[str, Any]) -> Path | None:
    """Source-only baseline: the config's network on the labelled source (toy world, or GTA5/SYNTHIA
    with ``data_root``), evaluated on the target val split; saved as ``<run_dir>/supervised.pt``."""
    return _train_baseline(cfg, "source", "supervised")


def train_oracle(cfg: Mapping[str, Any]) -> Path | None:
    """Target oracle: the same recipe trained on the labelled target; saved as ``<run_dir>/oracle.pt``."""
    return _train_baseline(cfg, "target", "oracle")


register("supervised", train_source_only)
register("oracle", train_oracle, config="supervised")
register("adaptseg", "kit.methods.adaptseg:train", config="adaptseg")
register("cdcl", "kit.methods.cdcl:train", config="cdcl")
register("ripu", "kit.methods.ripu:train", config="ripu")
register("ddep", "kit.methods.ddep:train", config="ddep")
register("das3", "kit.methods.das3:train", config="das3")
