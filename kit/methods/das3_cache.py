"""DAS3's cache: the source model it starts from and every stage's model, keyed by its
config and the key of the model it started from.

:func:`load_source_model` gives the source-trained model and its key (a checkpoint file's
SHA-256, or the kit's cached source-only baseline); :func:`load_or_run_stage` runs one stage
of :mod:`kit.methods.das3` from a model, or loads its result, keyed by :func:`stage_key`
(the config without the other stages' fields, which reach it through the key of its input
model); :func:`eval_record` is what is stored with each stage's model about its
validation set. ``kit.fit``, ``kit.experiments.das3`` and the notebook chain the stages
through these functions.
"""
from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from ..cache import cache_name, load_into, load_or_train, model_key
from ..hashing import data_identity
from ..engine import evaluate
from .supervised import build_model, load_or_train_baseline

__all__ = ["stage_tags", "stage_key", "load_or_run_stage", "eval_record", "load_source_model"]


def stage_tags(stage: int, cfg: Mapping[str, Any]) -> tuple[str, ...]:
    """The tags of a stage's model (:mod:`kit.defaults`): ``stage<N>``, plus ``atp`` for
    the authors' stage 3 (its EMA / augmentation / optimizer fields are in its key only then)."""
    from .das3 import _STAGES  # on use: kit.methods.das3 imports this module

    if stage not in _STAGES:
        raise ValueError(f"unknown DAS3 stage {stage!r}; expected 1, 2 or 3")
    return (f"stage{stage}", "atp") if stage == 3 and cfg["stage3"] == "atp" else (f"stage{stage}",)


def stage_key(stage: int, cfg: Mapping[str, Any], prev_key: str, seed: int, target: Dataset | None = None) -> dict:
    """The cache key of a stage (:func:`kit.cache.model_key`): the config (the fields of the other
    stages left out: they reach it through ``prev_key``, the key of its input model), the seed and
    the identity of the target data."""
    return model_key(cfg, "das3", seed=seed, data={"target": target}, parents=[prev_key],
                     tags=stage_tags(stage, cfg), stage=int(stage))


def load_or_run_stage(stage: int, model: nn.Module, prev_key: str, target: Dataset, cfg: Mapping[str, Any],
                      seed: int = 0, val_set: Dataset | None = None, verbose: bool = False) -> tuple[nn.Module, dict]:
    """The model after ``stage`` from ``model`` (whose cache key is ``prev_key``), cached.

    Returns ``(model, meta)``; ``meta`` has ``key`` (for the next stage), ``history``,
    ``info`` (thresholds, easy/hard split) and, when ``val_set`` is given, ``eval``
    (mIoU and per-class IoU on it; stored with the checkpoint, recomputed only for
    another validation set).
    """
    key = stage_key(stage, cfg, prev_key, seed, target)
    vfp = data_identity(val_set)

    def run():
        from .das3 import _STAGES  # on use: kit.methods.das3 imports this module

        res = _STAGES[stage](model, target, cfg, seed)
        meta = {"history": res.history.to_dict(), "info": res.info}
        if val_set is not None:
            meta["eval"] = eval_record(res.model, val_set, cfg, vfp)
        return {"model": res.model.state_dict()}, meta

    def build(state):
        out = copy.deepcopy(model)
        load_into(cache_name(f"das3-stage{stage}", key), {"model": out}, state)
        return out

    out, meta = load_or_train(f"das3-stage{stage}", key, run, cfg.get("cache_dir"), verbose=verbose, build=build)
    for p in out.parameters():
        p.requires_grad_(True)
    out.eval()
    if val_set is not None and (meta.get("eval") or {}).get("val") != vfp:
        meta["eval"] = eval_record(out, val_set, cfg, vfp)
    return out, meta


def eval_record(model: nn.Module, val_set: Dataset, cfg: Mapping[str, Any], fingerprint=None) -> dict:
    """mIoU, per-class IoU and the predicted / true pixel share per class of ``model`` on ``val_set``."""
    res = evaluate(model, val_set, batch_size=cfg["eval_batch_size"], flip=cfg["flip_eval"], amp=cfg["amp"])
    classes = res.classes or tuple(str(i) for i in range(len(res.iou)))
    cm = res.confusion.double()
    return {"val": fingerprint, "miou": res.miou,
            "iou": {c: (None if v != v else float(v)) for c, v in zip(classes, res.iou.tolist())},
            "pred_share": dict(zip(classes, (cm.sum(0) / cm.sum()).tolist())),
            "true_share": dict(zip(classes, (cm.sum(1) / cm.sum()).tolist()))}




def load_source_model(cfg: Mapping[str, Any], seed: int = 0, datasets: Mapping[str, Any] | None = None,
                      num_classes: int | None = None) -> tuple[nn.Module, str]:
    """The source-trained model DAS3 starts from, and its cache key.

    ``cfg["source_checkpoint"]``: a file with the network's ``state_dict`` (or a kit
    checkpoint holding it under ``"model"``), loaded into :func:`build_model` of the config;
    its key is the file's SHA-256. Otherwise the kit's cached source-only baseline
    (:func:`kit.methods.supervised.load_or_train_baseline`, trained if not cached -- the
    only place where source data is used, before adaptation starts).
    """
    path = cfg.get("source_checkpoint")
    if path:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"source_checkpoint {path} does not exist; expected a state_dict file (.pt)")
        if num_classes is None:
            if datasets is None:
                raise ValueError("num_classes (or datasets) is needed to build the network for a source checkpoint")
            num_classes = datasets["target_train"].num_classes
        data = path.read_bytes()
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
            state = state["model"]
        model = build_model(cfg, num_classes)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"source_checkpoint {path} does not fit the config's network "
                             f"({cfg['model']} depth {cfg['depth']} width {cfg['width']}, {num_classes} classes): "
                             f"{str(e)[:300]}") from None
        model.eval()
        return model, "file-" + hashlib.sha256(data).hexdigest()[:16]
    model, meta = load_or_train_baseline("source_only", cfg, seed, datasets, verbose=False)
    return model, str(meta["key"])
