"""The one runner: ``fit(method, cfg, seed, data, **spec)`` gives any registered method's model.

A method declares what it is (:class:`kit.methods.base.Method`: its spec, datasets, parents,
key, modules and training); :func:`fit` does the rest, the same for every method:

1. checks the spec against the method's declaration and the config with :meth:`~Method.check`;
2. builds the datasets when none are given (:meth:`~Method.datasets`);
3. computes the key: the method's own inputs plus the cache names of its parent models,
   recursively (:func:`key_of` computes it without loading or training anything);
4. loads the model from the cache, or, under the key's lock, fits the parents (same seed,
   same data), trains, and saves (:func:`kit.cache.load_or_train`);
5. returns a :class:`~kit.methods.base.Fitted`: the model in eval mode, the meta the cache
   stored with it (``history``, ``key``, ``cached``, and what the method records, e.g. its
   target mIoU), and the other trained modules (``parts``).

For an unsupervised method (AdaptSegNet, DAS3: ``Method.watch``) the runner also records, when
it trains, what the starting and the adapted model predict on the unlabelled target images
(:func:`kit.evaluation.class_mix`), and every fit of the model, trained or loaded, warns with
:class:`kit.evaluation.CollapseWarning` when the class mix moved far or a class vanished
(:func:`kit.evaluation.collapse_report`) -- a check a source-free user can make without labels.

=================  =====================================================  =================================
method             what one call fits                                     ``spec``
=================  =====================================================  =================================
``source_only``    the supervised model on the labelled source            --
``oracle``         the same recipe on the labelled target                 --
``adaptseg``       AdaptSegNet's generator (``parts["discriminators"]``)  --
``das3``           DAS3 up to ``stage`` from the source model             ``stage`` = 1, 2 or 3 (default 3)
``ripu``           RIPU's actively labelled, adapted model                --
``cdcl``           a CDCL model of ``kind`` on ``names``                  ``kind`` (default "dat"),
                                                                          ``names`` (default
                                                                          ``cfg.datasets``), ``init``
``ddep``           a fine-tuned U-Net from ``init`` on ``fraction``       ``init``, ``fraction`` (required),
                                                                          ``eval_every``, ``overrides``
``ddep_pretrain``  DeP / DDeP denoising pretraining                       ``kind`` ("dep" / "ddep"), ``overrides``
``ddep_encoder``   DDeP's supervised encoder                              --
``weights_file``   the config's network from a state_dict file            ``path``
=================  =====================================================  =================================

``kit train NAME`` is :func:`train`: the same ``fit`` for the config's first seed, inside
:func:`kit.cache.bypassed`, so every model of the pipeline trains afresh (also under
``torchrun``) and the notebooks' cache is left alone; rank 0 saves ``<run_dir>/NAME.pt``.

    >>> from kit import methods
    >>> methods.names()[:3]
    ['adaptseg', 'cdcl', 'das3']
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

import warnings

from . import methods
from .cache import StaleCheckpointError, cache_name, load_into, load_or_train
from .evaluation import CollapseWarning, class_mix, collapse_report
from .methods.base import REQUIRED, Fitted, Method

__all__ = ["fit", "key_of", "train", "train_output_path"]


def _spec(m: Method, spec: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(spec) - set(m.spec))
    if unknown:
        raise TypeError(f"fit({m.name!r}) got unexpected {unknown}; it accepts {sorted(m.spec) or 'nothing'}")
    missing = sorted(k for k, v in m.spec.items() if v is REQUIRED and k not in spec)
    if missing:
        raise TypeError(f"fit({m.name!r}) needs {missing}")
    return {**m.spec, **spec}


def _prepare(method: str, cfg: Mapping[str, Any], data: Mapping[str, Any] | None, spec: Mapping[str, Any]):
    m = methods.get(method)
    spec = _spec(m, spec)
    m.check(cfg, spec)
    return m, spec, (data if data is not None else m.datasets(cfg, spec))


def key_of(method: str, cfg: Mapping[str, Any], seed: int = 0, data: Mapping[str, Any] | None = None,
           **spec: Any) -> str:
    """The cache name (``<name>-<hash>``) :func:`fit` would give the model, without loading or
    training it or any of its parents."""
    m, spec, ds = _prepare(method, cfg, data, spec)
    ext = m.external(cfg, seed, ds, spec)
    if ext is not None:
        return ext[0]
    parents = {role: key_of(p.method, p.cfg, seed, ds, **p.spec) for role, p in m.parents(cfg, spec).items()}
    return cache_name(m.cache_name(cfg, spec), m.key(cfg, seed, ds, spec, parents))


def _fit_parents(m: Method, cfg, seed, ds, spec, verbose) -> dict[str, Fitted]:
    return {role: fit(p.method, p.cfg, seed, ds, verbose, **p.spec) for role, p in m.parents(cfg, spec).items()}


def fit(method: str, cfg: Mapping[str, Any], seed: int = 0, data: Mapping[str, Any] | None = None,
        verbose: bool = False, **spec: Any) -> Fitted:
    """The cached model of ``method`` for the resolved config ``cfg`` and ``seed`` (trained if it
    is not cached); ``data`` the method's datasets (built from ``cfg`` when None: the method's
    :meth:`~kit.methods.base.Method.datasets`); ``spec`` the method's other arguments."""
    m, spec, ds = _prepare(method, cfg, data, spec)
    ext = m.external(cfg, seed, ds, spec)
    if ext is not None:
        fitted = ext[1]()
        fitted.modules = fitted.modules or {"model": fitted.model}
        return fitted
    parents = _fit_parents(m, cfg, seed, ds, spec, verbose) if m.load_parents else None
    if parents is not None:
        names = {role: f.key for role, f in parents.items()}
    else:
        names = {role: key_of(p.method, p.cfg, seed, ds, **p.spec) for role, p in m.parents(cfg, spec).items()}
    key = m.key(cfg, seed, ds, spec, names)
    prefix = m.cache_name(cfg, spec)

    def train():
        fitted = parents if parents is not None else _fit_parents(m, cfg, seed, ds, spec, verbose)
        modules, meta = m.train(cfg, seed, ds, spec, fitted, verbose)
        meta = dict(meta)
        if m.watch is not None and m.watch[0] in fitted:   # what adaptation did to the predictions, label-free
            images, kw = ds[m.watch[1]], {"batch_size": cfg.get("eval_batch_size", 16), "amp": cfg.get("amp", "auto")}
            meta["class_mix"] = {"start": class_mix(fitted[m.watch[0]].model, images, **kw),
                                 "end": class_mix(modules["model"], images, **kw)}
        state = {name: module.state_dict() for name, module in modules.items()}
        state.update({t: meta.pop(t) for t in m.tensors})
        return state, meta

    def build(state):
        modules = m.build(cfg, ds, spec)
        load_into(cache_name(prefix, key), modules, state)
        missing = [t for t in m.tensors if t not in state]
        if missing:
            raise StaleCheckpointError(f"{cache_name(prefix, key)} has no {missing}")
        return modules, {t: state[t] for t in m.tensors}

    (modules, tensors), meta = load_or_train(prefix, key, train, cfg.get("cache_dir"), verbose=verbose, build=build)
    fitted = m.result(cfg, ds, spec, modules, {**meta, **tensors}, parents or {})
    fitted.modules = modules
    _warn_if_collapsed(fitted, ds[m.watch[1]] if m.watch is not None else None)
    return fitted


def _warn_if_collapsed(fitted: Fitted, images) -> None:
    mix = fitted.meta.get("class_mix")
    if mix is None:    # not an unsupervised method, no starting model, or cached before the check
        return
    report = collapse_report(mix["start"], mix["end"], getattr(images, "classes", None))
    if report is not None:
        warnings.warn(CollapseWarning(f"{fitted.key}: {report}. Look at its predictions before trusting it "
                                      "(unsupervised adaptation can collapse onto a few classes)."), stacklevel=3)


def train_output_path(cfg: Mapping[str, Any], name: str) -> Path:
    """``<run_dir>/<name>.pt``; ``run_dir`` defaults to ``runs/<profile>/train``."""
    from .cache import runs_root

    return Path(cfg.get("run_dir") or runs_root() / cfg["profile"] / "train") / f"{name}.pt"


def train(name: str, cfg: Mapping[str, Any]) -> Path | None:
    """``kit train NAME``: the model :func:`fit` gives for ``cfg`` and its first seed (with the
    method's :meth:`~kit.methods.base.Method.train_spec`), every model it starts from trained
    afresh (:func:`kit.cache.bypassed`), saved by rank 0 as ``<run_dir>/NAME.pt``
    (:func:`kit.cache.save_checkpoint`). The state holds every module cached under the model's
    key (``Fitted.modules``: ``model``, AdaptSegNet's ``d_<level>``) and any tensor the method
    records (RIPU's ``round_map``); the JSON beside it the method's meta (``history``, its
    evaluations; the baselines' ``target_eval`` on the target val split), what the method's
    :meth:`~kit.methods.base.Method.train_record` adds (DAS3: each stage's evaluation), the
    resolved ``config``, ``seed``, ``world_size`` and ``global_batch_size``. Returns the path on
    rank 0, None on the other ranks."""
    from . import distributed
    from .cache import bypassed, save_checkpoint

    m = methods.get(name)
    seed, spec = int(cfg["seeds"][0]), m.train_spec(cfg)
    with bypassed():
        fitted = fit(name, cfg, seed, None, verbose=distributed.is_main(), **spec)
    state: dict[str, Any] = {name: module.state_dict() for name, module in fitted.modules.items()}
    meta: dict[str, Any] = {}
    for k, v in fitted.meta.items():
        if torch.is_tensor(v):
            state[k] = v
        elif k not in ("cached", "key", "config"):
            meta[k] = v
    meta.update(m.train_record(fitted))
    ws = distributed.world_size()
    meta.update(method=name, seed=seed, world_size=ws, global_batch_size=int(cfg["batch_size"]) * ws,
                config=dict(cfg), **spec)
    path = train_output_path(cfg, name)
    if distributed.is_main():
        save_checkpoint(path, state, meta)
    distributed.barrier()
    return path if distributed.is_main() else None
