"""Supervised baselines shared by the domain-adaptation notebooks.

* **source-only**: trained on labelled source images, evaluated on the target -- the
  "no adaptation" row of every DA table;
* **target oracle**: trained on labelled target images -- the upper bound.

Both are the same recipe (DeepLab-v2 style, SGD, poly decay, 10x head LR); only the
training data differ. :func:`load_or_train_baseline` caches them (:func:`baseline_key`: the
``supervised`` method's fields of the config, the training data's identity and the seed) so
the paper notebooks start from the model the introduction notebook trained, or train it
themselves if it is not cached.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn

from .. import losses
from ..cache import cache_name, load_into, load_or_train, model_key
from ..config import Config
from ..data import make_da_datasets
from ..engine import Engine, evaluate, make_optimizer, seed_everything
from ..models import build_segmenter

__all__ = ["build_model", "make_model_optimizer", "supervised_step", "train_supervised", "load_or_train_baseline", "toy_datasets",
           "baseline_key", "baseline_name", "BASELINES"]

#: the supervised baselines and the training split each is trained on
BASELINES = {"source_only": "source_train", "oracle": "target_train"}


def build_model(cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
    """The segmentation network described by ``cfg`` (DeepLab-v2 unless ``cfg['model']`` says otherwise)."""
    kw: dict[str, Any] = {"depth": cfg["depth"], "width": cfg["width"], "pretrained": cfg.get("pretrained")}
    if cfg["model"] == "deeplabv2":
        kw.update(output_stride=cfg["output_stride"], multi_level=cfg["multi_level"],
                  official_aspp=cfg["official_aspp"], frozen_bn=cfg["frozen_bn"],
                  dilations=tuple(cfg["aspp_dilations"]))
    elif cfg["model"] == "pspnet":
        kw.update(output_stride=cfg["output_stride"])
    return build_segmenter(cfg["model"], num_classes, **kw)


def make_model_optimizer(cfg: Mapping[str, Any], model: nn.Module, lr: float | None = None):
    """The config's optimizer over the model's param groups, heads at ``head_lr_mult`` x LR.

    Weight decay applies to SGD (the DeepLab recipe); Adam runs without it.
    """
    groups = model.param_groups() if hasattr(model, "param_groups") else [{"params": list(model.parameters())}]
    for g in groups:
        if g.get("name") == "head":
            g["lr_mult"] = cfg["head_lr_mult"]
    wd = cfg["weight_decay"] if cfg["optimizer"] == "sgd" else 0.0
    return make_optimizer(cfg["optimizer"], groups, cfg["lr"] if lr is None else lr, cfg["momentum"], wd)


def toy_datasets(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Source/target train/val datasets of the config (the toy world unless ``data_root`` is set)."""
    return make_da_datasets(cfg)


def supervised_step(batch, engine: Engine) -> dict[str, torch.Tensor]:
    """One SGD step of pixel-wise cross-entropy (main head + 0.1 x auxiliary head if present)."""
    model, opt = engine.modules["model"], engine.optimizers["model"]
    x, y = batch["train"]
    opt.zero_grad(set_to_none=True)
    with engine.autocast():
        out = model(x)
        loss = losses.seg_loss(out["out"], y)
        if "aux" in out:
            loss = loss + 0.1 * losses.seg_loss(out["aux"], y)
    loss.backward()
    opt.step()
    return {"seg": loss.detach()}


def train_supervised(cfg: Config, train_set, val_set=None, seed: int = 0, num_classes: int | None = None,
                     desc: str = "supervised") -> tuple[nn.Module, Any]:
    """Train the config's network on ``train_set``; returns ``(model, history)``."""
    num_classes = num_classes or train_set.num_classes
    seed_everything(seed)
    model = build_model(cfg, num_classes)
    opt = make_model_optimizer(cfg, model)
    eval_fn = None
    if val_set is not None:
        eval_fn = lambda eng: {"miou": evaluate(eng.modules["model"], val_set, num_classes,  # noqa: E731
                                                 cfg["eval_batch_size"], amp=cfg["amp"]).miou}
    eng = Engine.from_config(cfg, {"model": model}, {"model": opt}, supervised_step, {"train": train_set}, seed=seed,
                             eval_fn=eval_fn, eval_every=cfg["eval_every"], desc=desc)
    history = eng.run()
    return model, history


def baseline_key(kind: str, cfg: Mapping[str, Any], seed: int, train_set) -> dict:
    """The cache key of a baseline: the ``supervised`` method's fields of ``cfg`` (another
    method's config gives the same key as long as those fields agree), the identity of
    ``train_set``, the seed and the label space."""
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}; expected one of {list(BASELINES)}")
    return model_key(cfg, "supervised", seed=seed, data={"train": train_set}, kind=kind,
                     num_classes=train_set.num_classes)


def baseline_name(kind: str, cfg: Mapping[str, Any], seed: int, datasets: Mapping[str, Any]) -> str:
    """The cache name (``<kind>-<hash>``) of a baseline, without loading or training it: what a
    model fine-tuned from it records as its parent."""
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}; expected one of {list(BASELINES)}")
    return cache_name(kind, baseline_key(kind, cfg, seed, datasets[BASELINES[kind]]))


def load_or_train_baseline(kind: str, cfg: Config, seed: int = 0, datasets: Mapping[str, Any] | None = None,
                           verbose: bool = True) -> tuple[nn.Module, dict]:
    """The cached source-only (``kind="source_only"``) or target-oracle (``"oracle"``) model.

    The cache key (:func:`baseline_key`) covers the network, the training recipe, the
    training data and the seed, so every notebook that asks for the same baseline gets the
    same weights.
    """
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}; expected one of {list(BASELINES)}")
    ds = dict(datasets) if datasets is not None else toy_datasets(cfg)
    train_set = ds[BASELINES[kind]]
    key = baseline_key(kind, cfg, seed, train_set)

    def train():
        model, hist = train_supervised(cfg, train_set, None, seed, desc=f"{kind} seed {seed}")
        return {"model": model.state_dict()}, {"history": hist.to_dict()}

    def build(state):
        model = build_model(cfg, train_set.num_classes)
        load_into(cache_name(kind, key), {"model": model}, state)
        return model.eval()

    return load_or_train(kind, key, train, cfg.get("cache_dir"), verbose=verbose, build=build)
