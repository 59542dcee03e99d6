"""Supervised baselines shared by the domain-adaptation notebooks.

* **source-only**: trained on labelled source images, evaluated on the target -- the
  "no adaptation" row of every DA table;
* **target oracle**: trained on labelled target images -- the upper bound.

Both are the same recipe (DeepLab-v2 style, SGD, poly decay, 10x head LR); only the
training data differ: :data:`SOURCE_ONLY` and :data:`ORACLE` declare them for
:func:`kit.fit.fit` (keyed by the ``supervised`` method's fields of the config, the training
data's identity and the seed), so the paper notebooks start from the model the introduction
notebook trained, or train it themselves if it is not cached. :data:`WEIGHTS_FILE` is the
config's network read from a file instead (DAS3's given source model).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from .. import losses
from ..cache import model_key
from ..config import Config, inherit
from ..hashing import file_sha256
from ..engine import Engine, make_optimizer, seed_everything
from ..evaluation import evaluate
from ..models import build_segmenter
from .base import REQUIRED, Fitted, Method, Parent

__all__ = ["build_model", "make_model_optimizer", "supervised_step", "train_supervised", "baseline_config",
           "source_only_parents", "Baseline", "SOURCE_ONLY", "ORACLE", "WeightsFile", "WEIGHTS_FILE"]


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


def baseline_config(cfg: Mapping[str, Any]) -> Config:
    """The supervised config of ``cfg``'s profile, data and network: the cached source-only model and
    oracle an adapted model is compared with (and, with ``init="source_only"``, starts from). Its
    data, network and run fields are ``cfg``'s (:func:`kit.config.inherit`); the adaptation schedule
    (``iters``, ``lr``, ``batch_size`` ...) is *not* carried over."""
    return inherit(cfg, "supervised")


def source_only_parents(cfg: Mapping[str, Any]) -> dict[str, Parent]:
    """The parents of a model that starts as ``cfg["init"]`` says: ``{"init": the source-only model
    of baseline_config(cfg)}`` for ``"source_only"``, none otherwise (AdaptSegNet, RIPU)."""
    return {"init": Parent("source_only", baseline_config(cfg))} if cfg["init"] == "source_only" else {}


class Baseline(Method):
    """A supervised baseline: the config's network trained on one labelled split (``split``)."""

    config = "supervised"

    def __init__(self, name: str, split: str):
        self.name, self.split = name, split

    def key(self, cfg, seed, data, spec, parents):
        """The ``supervised`` method's fields of ``cfg`` (another method's config gives the same key
        as long as those fields agree), the identity of the training split, the seed and the label space."""
        train_set = data[self.split]
        return model_key(cfg, "supervised", seed=seed, data={"train": train_set}, kind=self.name,
                         num_classes=train_set.num_classes)

    def build(self, cfg, data, spec):
        return {"model": build_model(cfg, data[self.split].num_classes)}

    def train(self, cfg, seed, data, spec, parents, verbose=False):
        model, hist = train_supervised(cfg, data[self.split], None, seed, desc=f"{self.name} seed {seed}")
        meta = {"history": hist.to_dict()}
        if data.get("target_val") is not None:    # the final model on the whole target val split
            meta["target_eval"] = evaluate(model, data["target_val"], batch_size=cfg["eval_batch_size"],
                                           amp=cfg["amp"]).as_dict()
        return {"model": model}, meta


#: the source-only model (the "no adaptation" row) and the target oracle (the upper bound)
SOURCE_ONLY = Baseline("source_only", "source_train")
ORACLE = Baseline("oracle", "target_train")


class WeightsFile(Method):
    """The config's network with weights read from a file (``spec["path"]``: a ``state_dict``, or a
    kit checkpoint holding it under ``"model"``); its name is the file's SHA-256, so a model derived
    from it (DAS3 from a given source model) is keyed by the file's content."""

    name = "weights_file"
    spec = {"path": REQUIRED}

    def external(self, cfg, seed, data, spec):
        path = Path(spec["path"])
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} does not exist; expected a state_dict file (.pt)")

        def load() -> Fitted:
            num_classes = data["target_train"].num_classes
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
                state = state["model"]
            model = build_model(cfg, num_classes)
            try:
                model.load_state_dict(state)
            except RuntimeError as e:
                raise ValueError(f"{path} does not fit the config's network ({cfg['model']} depth {cfg['depth']} "
                                 f"width {cfg['width']}, {num_classes} classes): {str(e)[:300]}") from None
            return Fitted(self.name, model.eval(), {"key": name, "cached": True})

        name = "file-" + file_sha256(path)[:16]
        return name, load


WEIGHTS_FILE = WeightsFile()
