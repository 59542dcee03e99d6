"""One entry point for every method's cached training: ``fit(method, cfg, seed, data, **spec)``.

Each method module keeps its own load-or-train function (they differ in what a model is: an
AdaptSegNet generator comes with its discriminators, a DAS3 stage starts from the previous
stage's model, a CDCL model is trained on several datasets, a DDeP model is fine-tuned from
a pretraining). :func:`fit` gives them one name and one return shape, :class:`Fitted`:
the trained model in eval mode, the meta the cache stored with it (``history``, ``key``,
``cached``, and what the method records, e.g. its target mIoU), and the other trained
modules (``parts``). Like the functions it calls, it loads the model from the cache when
its key is there (:mod:`kit.cache`) and trains it otherwise.

=================  =====================================================  =================================
method             what one call fits                                     ``spec``
=================  =====================================================  =================================
``source_only``    the supervised model on the labelled source            --
``oracle``         the same recipe on the labelled target                 --
``adaptseg``       AdaptSegNet's generator (``parts["discriminators"]``)  --
``das3``           DAS3 up to ``stage`` from the cached source model      ``stage`` = 1, 2 or 3 (default 3)
``ripu``           RIPU's actively labelled, adapted model                --
``cdcl``           a CDCL model of ``kind`` on ``names``                  ``kind`` (default "dat"),
                                                                          ``names`` (default
                                                                          ``cfg.datasets``), ``init``
``ddep``           a fine-tuned U-Net from ``init`` on ``fraction``       ``init``, ``fraction`` (required)
=================  =====================================================  =================================

``kit train NAME`` is :func:`train`: the same ``fit`` for the config's first seed, inside
:func:`kit.cache.bypassed`, so every model of the pipeline trains afresh (also under
``torchrun``) and the notebooks' cache is left alone; rank 0 saves ``<run_dir>/NAME.pt``.

    >>> from kit.fit import METHODS
    >>> METHODS
    ('source_only', 'oracle', 'adaptseg', 'das3', 'ripu', 'cdcl', 'ddep')
    >>> sorted(TRAINERS)[:3]
    ['adaptseg', 'cdcl', 'das3']
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

__all__ = ["METHODS", "TRAINERS", "Fitted", "fit", "train", "Trainer"]

METHODS = ("source_only", "oracle", "adaptseg", "das3", "ripu", "cdcl", "ddep")
#: the ``spec`` names each method accepts, and which of them are required
SPEC = {"das3": ({"stage"}, set()), "cdcl": ({"kind", "names", "init"}, set()),
        "ddep": ({"init", "fraction", "eval_every"}, {"init", "fraction"})}


@dataclass
class Fitted:
    """A trained model (eval mode), the meta the cache stored with it, and any other trained modules."""

    method: str
    model: nn.Module
    meta: dict
    parts: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str | None:
        """The model's cache name (``<name>-<hash>``)."""
        return self.meta.get("key")

    @property
    def cached(self) -> bool:
        """True when the model came from the cache, False when this call trained it."""
        return bool(self.meta.get("cached"))

    @property
    def history(self) -> dict | None:
        return self.meta.get("history")


def _check(method: str, spec: Mapping[str, Any]) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; fit knows {', '.join(METHODS)}")
    allowed, required = SPEC.get(method, (set(), set()))
    unknown, missing = set(spec) - allowed, required - set(spec)
    if unknown:
        raise TypeError(f"fit({method!r}) got unexpected {sorted(unknown)}; it accepts {sorted(allowed) or 'nothing'}")
    if missing:
        raise TypeError(f"fit({method!r}) needs {sorted(missing)}")


def fit(method: str, cfg: Mapping[str, Any], seed: int = 0, data: Mapping[str, Any] | None = None,
        verbose: bool = False, **spec: Any) -> Fitted:
    """The cached model of ``method`` for the resolved config ``cfg`` and ``seed`` (trained if it
    is not cached); ``data`` the method's datasets (``kit.data.make_da_datasets(cfg)``, or
    ``kit.methods.cdcl.make_cdcl_datasets(cfg)`` for CDCL; built from ``cfg`` when None)."""
    _check(method, spec)
    if method in ("source_only", "oracle"):
        from .methods.supervised import load_or_train_baseline

        model, meta = load_or_train_baseline(method, cfg, seed, data, verbose=verbose)
        return Fitted(method, model, meta)
    if method == "adaptseg":
        from .methods.adaptseg import load_or_train_adaptseg

        model, discs, meta = load_or_train_adaptseg(cfg, seed, data, verbose=verbose)
        return Fitted(method, model, meta, {"discriminators": discs})
    if method == "ripu":
        from .methods.ripu import load_or_train_ripu

        model, meta = load_or_train_ripu(cfg, seed, data, verbose=verbose)
        return Fitted(method, model, meta)
    if method == "das3":
        return _fit_das3(cfg, seed, data, int(spec.get("stage", 3)), verbose)
    if method == "cdcl":
        from .methods.cdcl import load_or_train_cdcl

        names = list(spec.get("names") or cfg["datasets"])
        model, meta = load_or_train_cdcl(cfg, spec.get("kind", "dat"), names, seed, data, init=spec.get("init"),
                                         verbose=verbose)
        return Fitted(method, model, meta)
    from .data import make_da_datasets
    from .methods.ddep import load_or_finetune

    ds = data if data is not None else make_da_datasets(cfg)
    model, meta = load_or_finetune(cfg, spec["init"], float(spec["fraction"]), seed, ds,
                                   eval_every=int(spec.get("eval_every", 0)), verbose=verbose)
    return Fitted(method, model, meta)


def _fit_das3(cfg, seed, data, stage: int, verbose: bool) -> Fitted:
    """DAS3's stages 1..``stage`` from the source model, each cached under the key of the one
    before it; ``parts["stages"]`` holds every stage's meta (with its val ``eval``)."""
    from .data import make_da_datasets
    from .methods.das3 import load_or_run_stage, load_source_model

    if stage not in (1, 2, 3):
        raise ValueError(f"DAS3 stage must be 1, 2 or 3, got {stage}")
    ds = data if data is not None else make_da_datasets(cfg)
    model, key = load_source_model(cfg, seed, ds)
    metas = {}
    for s in range(1, stage + 1):
        model, meta = load_or_run_stage(s, model, key, ds["target_train"], cfg, seed, val_set=ds.get("target_val"),
                                        verbose=verbose)
        metas[s], key = meta, meta["key"]
    return Fitted("das3", model, metas[stage], {"stages": metas})


#: ``kit train NAME`` -> the method :func:`fit` runs (its ``spec`` from the config, :func:`_train_spec`)
TRAINERS = {"supervised": "source_only", "oracle": "oracle", "adaptseg": "adaptseg", "das3": "das3",
            "ripu": "ripu", "cdcl": "cdcl", "ddep": "ddep"}


def _train_spec(method: str, cfg: Mapping[str, Any]) -> dict:
    if method == "ddep":   # the paper's pipeline: DDeP pretraining, fine-tuned on cfg.fraction of the labels
        return {"init": "ddep", "fraction": float(cfg["fraction"])}
    return {}


def train(name: str, cfg: Mapping[str, Any]) -> Path | None:
    """``kit train NAME``: the model :func:`fit` gives for ``cfg`` and its first seed, every model
    it starts from trained afresh (:func:`kit.cache.bypassed`), saved by rank 0 as
    ``<run_dir>/NAME.pt`` (:func:`kit.cache.save_checkpoint`). The state holds ``model``, the
    discriminators as ``d_<level>`` (AdaptSegNet) and any tensor the method records (RIPU's
    ``round_map``); the JSON beside it the method's meta (``history``, its evaluations; the
    baselines' ``target_eval`` on the target val split), the
    resolved ``config``, ``seed``, ``world_size`` and ``global_batch_size``. Returns the path on
    rank 0, None on the other ranks."""
    from . import distributed
    from .cache import bypassed, save_checkpoint
    from .methods import train_output_path

    if name not in TRAINERS:
        raise ValueError(f"unknown trainer {name!r}; kit.fit.train knows {', '.join(sorted(TRAINERS))}")
    method, seed = TRAINERS[name], int(cfg["seeds"][0])
    spec = _train_spec(method, cfg)
    data = None
    if method in ("source_only", "oracle"):   # the baselines' fit has no evaluation: evaluate here
        from .data import make_da_datasets

        data = make_da_datasets(cfg)
    with bypassed():
        fitted = fit(method, cfg, seed, data, verbose=distributed.is_main(), **spec)
    if data is not None and data.get("target_val") is not None:
        from .evaluation import evaluate

        fitted.meta["target_eval"] = evaluate(fitted.model, data["target_val"], batch_size=cfg["eval_batch_size"],
                                              amp=cfg["amp"]).as_dict()
    state: dict[str, Any] = {"model": fitted.model.state_dict()}
    state.update({f"d_{k}": d.state_dict() for k, d in fitted.parts.get("discriminators", {}).items()})
    meta: dict[str, Any] = {}
    for k, v in fitted.meta.items():
        if torch.is_tensor(v):
            state[k] = v
        elif k not in ("cached", "key", "config"):
            meta[k] = v
    if "stages" in fitted.parts:
        meta["stages"] = {s: m.get("eval") for s, m in fitted.parts["stages"].items()}
    ws = distributed.world_size()
    meta.update(method=name, seed=seed, world_size=ws, global_batch_size=int(cfg["batch_size"]) * ws,
                config=dict(cfg), **spec)
    if method == "cdcl":
        meta["datasets"] = list(cfg["datasets"])
    path = train_output_path(cfg, name)
    if distributed.is_main():
        save_checkpoint(path, state, meta)
    distributed.barrier()
    return path if distributed.is_main() else None


@dataclass(frozen=True)
class Trainer:
    """``kit train NAME``'s callable (``Trainer(name)(cfg)`` is :func:`train`), as registered in
    :mod:`kit.methods`."""

    name: str

    def __call__(self, cfg: Mapping[str, Any]) -> Path | None:
        return train(self.name, cfg)
