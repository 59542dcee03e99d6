"""Supervised baselines shared by the domain-adaptation notebooks.

* **source-only**: trained on labelled source images, evaluated on the target -- the
  "no adaptation" row of every DA table;
* **target oracle**: trained on labelled target images -- the upper bound.

Both are the same recipe (DeepLab-v2 style, SGD, poly decay, 10x head LR); only the
training data differ. :func:`load_or_train_baseline` caches them by config hash so the
paper notebooks start from the model the introduction notebook trained, or train it
themselves if it is not cached.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn

from .. import losses
from ..cache import load_or_train
from ..config import Config
from ..data import make_da_datasets
from ..engine import Engine, evaluate, make_optimizer, seed_everything
from ..models import build_segmenter

__all__ = ["build_model", "make_model_optimizer", "supervised_step", "train_supervised", "load_or_train_baseline", "toy_datasets",
           "MODEL_KEYS"]

#: the config fields that define the segmentation network
MODEL_KEYS = ("model", "depth", "width", "output_stride", "multi_level", "official_aspp", "aspp_dilations",
              "frozen_bn", "pretrained")


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
    eng = Engine({"model": model}, {"model": opt}, supervised_step, {"train": train_set}, cfg["batch_size"],
                 cfg["iters"], poly_power=cfg["poly_power"], device=cfg["device"], amp=cfg["amp"],
                 channels_last=cfg["channels_last"], seed=seed, eval_fn=eval_fn, eval_every=cfg["eval_every"],
                 log_every=cfg["log_every"], progress=cfg["progress"], num_workers=cfg["num_workers"], desc=desc)
    history = eng.run()
    return model, history


_TRAIN_KEYS = ("size", "source_size", "data_root", "n_train", "iters", "batch_size", "optimizer", "lr", "head_lr_mult", "momentum", "weight_decay", "poly_power", "amp",
               "channels_last")


#: config fields that never change a trained model (where it runs, how it logs, what else the notebook does)
RUN_ONLY_KEYS = ("progress", "log_every", "cache_dir", "run_dir", "num_workers", "eval_batch_size", "device",
                 "seeds", "profile")


def da_cache_key(cfg: Mapping[str, Any], seed: int, datasets: Mapping[str, Any], num_classes: int,
                 ignore: tuple[str, ...] = ()) -> dict:
    """The cache key of a domain-adaptation model: every config field except the run-only ones
    (:data:`RUN_ONLY_KEYS` and ``ignore``), the seed, the label space and the fingerprints of
    the source and target training data."""
    key = {k: v for k, v in cfg.items() if k not in RUN_ONLY_KEYS + tuple(ignore)}
    key.update(seed=seed, num_classes=num_classes,
               data=[getattr(datasets[k], "fingerprint", None) for k in ("source_train", "target_train")])
    return key


def load_or_train_baseline(kind: str, cfg: Config, seed: int = 0, datasets: Mapping[str, Any] | None = None,
                           verbose: bool = True) -> tuple[nn.Module, dict]:
    """The cached source-only (``kind="source_only"``) or target-oracle (``"oracle"``) model.

    The cache key covers the network, the training recipe, the domains and the seed,
    so every notebook that asks for the same baseline gets the same weights.
    """
    if kind not in ("source_only", "oracle"):
        raise ValueError(f"unknown baseline {kind!r}; expected 'source_only' or 'oracle'")
    ds = dict(datasets) if datasets is not None else toy_datasets(cfg)
    train_set = ds["source_train"] if kind == "source_only" else ds["target_train"]
    domain = getattr(train_set, "domain", type(train_set).__name__)
    key = {k: cfg[k] for k in MODEL_KEYS + _TRAIN_KEYS}
    key.update(kind=kind, domain=domain, data=getattr(train_set, "fingerprint", None), seed=seed,
               num_classes=train_set.num_classes)

    def train():
        model, hist = train_supervised(cfg, train_set, None, seed, desc=f"{kind} seed {seed}")
        return {"model": model.state_dict()}, {"history": hist.to_dict()}

    state, meta = load_or_train(kind, key, train, cfg.get("cache_dir"), verbose=verbose)
    model = build_model(cfg, train_set.num_classes)
    model.load_state_dict(state["model"])
    model.eval()
    return model, meta
