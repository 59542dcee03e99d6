"""RIPU: active domain adaptation by region impurity and prediction uncertainty
(Xie et al., CVPR 2022, arXiv 2111.12940).

The algorithm box. A segmentation network G is trained on labelled source images and an
unlabelled target pool; at a few iterations during training (the *selection rounds*) the
model scores every target pixel with the floating-region acquisition function
``A = RI x PU`` (:mod:`kit.active`) and an oracle labels the chosen regions (RA: the
(2k+1)^2 region around each pick) or pixels (PA: the centre pixel). Each iteration:

    L = CE(G(x_s), y_s)                        source cross-entropy
      + CE(G(x_t), y_t on labelled pixels)     the actively labelled target pixels
      + lambda_cr * L_cr(G(x_s), y_s)          local consistency on the source (weight 0.1)
      + lambda_nl * L_nl(G(x_t))               negative learning on the target (weight 1.0)

The source-free variant (``source_free=True``) drops the source batches (and with them
L_cr, which needs source labels): ``L = CE_t + lambda_nl * L_nl``.

Selection rounds are iteration numbers (``select_at``); at each the whole pool is
predicted, already-labelled pixels get score ``-inf``, and every image receives its
share of the budget (:class:`kit.active.Budget`: a fraction of pixels spread evenly over
the rounds for RA; ``pa_points`` centre pixels for PA). Baselines at equal budget:
``acquisition`` in {random, uncertainty, impurity} and ``mode`` in {point (single pixels at
the RA pixel budget), image (whole images, highest mean score first)}.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn

from .. import active, losses
from ..cache import load_or_train, save_checkpoint
from ..config import Config, register_method, resolve
from ..data import make_da_datasets
from ..engine import Engine, History, evaluate, predict, seed_everything
from .supervised import build_model, da_cache_key, load_or_train_baseline, make_model_optimizer

__all__ = ["ActivePool", "RIPUStep", "make_budget", "selection_iters", "baseline_config", "build_ripu_model",
           "train_ripu", "load_or_train_ripu", "select_on_pool", "train"]

register_method("ripu", {
    "common": {
        "acquisition": "ripu",     # "ripu" (RI x PU) | "impurity" | "uncertainty" | "random"
        "mode": "region",          # "region" (RA) | "pixel" (PA) | "point" (points at the RA pixel budget) | "image"
        "radius_k": 1,             # regions are (2k+1)^2
        "budget": 0.022,           # labelled fraction of target pixels (region / point / image modes)
        "pa_points": 40,           # PA: labelled pixels per image
        "suppress": None,          # suppression radius; None means 2k (RA), pa_suppress (PA), 1 (point)
        "pa_suppress": 32,         # PA suppression radius (65x65 window in the paper)
        "rounds": 5,
        "select_at": None,         # iterations of the selection rounds; None means evenly over the first 40%
        "lambda_cr": 0.1,
        "lambda_nl": 1.0,
        "tau": 0.05,
        "source_free": False,
        "pool_size": None,         # target images in the active pool; None means all of target_train
        "target_batch_size": None,  # None means batch_size
        "select_batch_size": 32,
        "init": "source_only",     # "source_only" (cached baseline) | "pretrained" (cfg.pretrained / random)
        "max_iters": None,
        "eval_items": None,
    },
    "smoke": {"iters": 4, "batch_size": 2, "rounds": 2, "select_at": [0, 2], "pool_size": 8, "pa_suppress": 2,
              "pa_points": 8, "eval_items": 8, "lr": 5e-4},
    # toy world at 64x128 (1/10 of the paper's 640x1280 target crops): PA suppression 32 -> 3;
    # fine-tuned from the cached source-only model with Adam, short schedule (see the notebook)
    "quick": {"iters": 60, "batch_size": 4, "lr": 5e-4, "pool_size": 100, "pa_suppress": 3,
              "eval_items": 100, "log_every": 10, "progress": False},
    "paper": {"iters": 62500, "max_iters": 40000, "batch_size": 2, "select_at": [10000, 12000, 14000, 16000, 18000],
              "init": "pretrained", "size": [640, 1280], "source_size": [720, 1280], "eval_size": [1024, 2048],
              "eval_every": 2000, "flip_eval": True, "select_batch_size": 2},
})


def make_budget(cfg: Mapping[str, Any]) -> active.Budget:
    """The :class:`kit.active.Budget` of a config."""
    return active.Budget(cfg["mode"], float(cfg["budget"]), int(cfg["rounds"]), int(cfg["radius_k"]),
                         int(cfg["pa_points"]))


def suppression_radius(cfg: Mapping[str, Any]) -> int | None:
    if cfg["suppress"] is not None:
        return int(cfg["suppress"])
    return {"region": 2 * int(cfg["radius_k"]), "pixel": int(cfg["pa_suppress"]), "point": 1, "image": None}[cfg["mode"]]


def selection_iters(cfg: Mapping[str, Any]) -> list[int]:
    """The iterations at which selection rounds run (``select_at`` or evenly over the first 40%)."""
    if cfg["select_at"] is not None:
        its = [int(i) for i in cfg["select_at"]]
        if len(its) != int(cfg["rounds"]):
            raise ValueError(f"select_at has {len(its)} iterations but rounds = {cfg['rounds']}")
    else:
        last = int(cfg["max_iters"] or cfg["iters"])
        its = [int(round(r * 0.4 * last / max(1, int(cfg["rounds"])))) for r in range(int(cfg["rounds"]))]
    if its != sorted(set(its)):
        raise ValueError(f"selection iterations must be increasing and distinct, got {its}")
    return its


class ActivePool(torch.utils.data.Dataset):
    """The target pool: ``(image, label)`` with every pixel not yet annotated set to 255.

    Wraps the first ``n`` items of a target dataset; ``self.state`` is the
    :class:`kit.active.AnnotationState` the selection rounds write into; ``self.round_map``
    (int8 [N,H,W], -1 = unlabelled) records in which round each pixel was labelled.
    """

    def __init__(self, base, n: int | None = None):
        self.base = base
        self.n = len(base) if n is None else min(int(n), len(base))
        if self.n < 1:
            raise ValueError("the active pool needs at least one target image")
        x, y = base[0]
        self.h, self.w = y.shape[-2:]
        self.state = active.AnnotationState.empty(self.n, self.h, self.w)
        self.round_map = torch.full((self.n, self.h, self.w), -1, dtype=torch.int8)
        self.num_classes = base.num_classes
        self.classes = getattr(base, "classes", None)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return x, self.state.masked_labels(y, i)

    def full_label(self, i: int) -> torch.Tensor:
        return self.base[i][1]


@torch.no_grad()
def select_on_pool(model: nn.Module, pool: ActivePool, cfg: Mapping[str, Any], round_idx: int,
                   device: torch.device | str = "cpu", seed: int = 0) -> dict[str, Any]:
    """Run one selection round over the whole pool with the model's current predictions.

    Updates ``pool.state`` and ``pool.round_map``; returns a log record (labelled pixels, fraction).
    """
    budget = make_budget(cfg)
    gen = torch.Generator().manual_seed(10007 * seed + round_idx)
    was = model.training
    model.eval()
    bs = int(cfg["select_batch_size"])
    before = pool.state.mask.clone()
    image_scores = []
    for start in range(0, pool.n, bs):
        idx = list(range(start, min(pool.n, start + bs)))
        x = torch.stack([pool.base[i][0] for i in idx]).to(device)
        prob = predict(model, x, size=(pool.h, pool.w), amp=cfg["amp"]).float()
        if budget.mode == "image":
            sc = active.acquisition_map(prob, cfg["acquisition"], budget.k, gen)
            image_scores.append(sc.flatten(1).mean(1).cpu())
        else:
            active.select_round(prob, pool.state, idx, budget, cfg["acquisition"], suppression_radius(cfg), gen,
                                round_idx=round_idx)
            pool.state.history.pop()   # one record per round, below
    if budget.mode == "image":
        active.image_level_select(torch.cat(image_scores), pool.state, budget)
        pool.state.history.pop()
    new = pool.state.mask & ~before
    pool.round_map[new] = round_idx
    rec = {"round": round_idx, "new_pixels": int(new.sum()), "labeled_pixels": pool.state.labeled_pixels,
           "labeled_fraction": pool.state.labeled_fraction}
    pool.state.history.append(rec)
    model.train(was)
    return rec


class RIPUStep:
    """The per-iteration step for :class:`kit.engine.Engine` (streams ``source`` unless source-free,
    and ``target`` = an :class:`ActivePool`). Runs a selection round first when ``engine.it`` is a
    selection iteration. Logged: ``src`` (CE source), ``tgt`` (CE labelled target), ``cr``, ``nl``."""

    def __init__(self, cfg: Mapping[str, Any], pool: ActivePool, seed: int = 0):
        self.cfg = cfg
        self.pool = pool
        self.seed = seed
        self.rounds = selection_iters(cfg)
        self.lambda_cr, self.lambda_nl, self.tau = float(cfg["lambda_cr"]), float(cfg["lambda_nl"]), float(cfg["tau"])
        self.source_free = bool(cfg["source_free"])

    def __call__(self, batch: Mapping[str, Any], engine: Engine) -> dict[str, torch.Tensor]:
        G, opt = engine.modules["model"], engine.optimizers["model"]
        if engine.it in self.rounds:
            select_on_pool(engine.raw_modules["model"], self.pool, self.cfg, self.rounds.index(engine.it),
                           engine.device, self.seed)
        xt, yt = batch["target"]
        opt.zero_grad(set_to_none=True)
        logs: dict[str, torch.Tensor] = {}
        if not self.source_free:
            xs, ys = batch["source"]
            with engine.autocast():
                out_s = G(xs)
                l_src = losses.seg_loss(out_s["out"], ys)
                l_cr = losses.local_consistency_loss(out_s["out"], ys) if self.lambda_cr else l_src * 0
                loss_s = l_src + self.lambda_cr * l_cr
            loss_s.backward()
            logs.update(src=l_src.detach(), cr=l_cr.detach())
        with engine.autocast():
            out_t = G(xt)
            l_tgt = losses.seg_loss(out_t["out"], yt)
            l_nl = losses.negative_learning_loss(out_t["out"], self.tau) if self.lambda_nl else l_tgt * 0
            loss_t = l_tgt + self.lambda_nl * l_nl
        loss_t.backward()
        opt.step()
        logs.update(tgt=l_tgt.detach(), nl=l_nl.detach())
        return logs


#: fields shared with the supervised baselines (data and network)
_SHARED = ("device", "amp", "channels_last", "num_workers", "progress", "data_root", "source", "target", "size",
           "source_size", "eval_size", "n_train", "n_val", "model", "depth", "width", "output_stride",
           "official_aspp", "aspp_dilations", "frozen_bn", "pretrained", "eval_batch_size", "cache_dir", "seeds")


def baseline_config(cfg: Mapping[str, Any]) -> Config:
    """The supervised config of the same profile, data and network (the cached source-only model
    and oracle); the RIPU schedule is not carried over."""
    return resolve(cfg["profile"], "supervised", **{k: cfg[k] for k in _SHARED if k in cfg})


def _validate(cfg: Mapping[str, Any]) -> None:
    if cfg["acquisition"] not in active.ACQUISITIONS:
        raise ValueError(f"acquisition must be one of {active.ACQUISITIONS}, got {cfg['acquisition']!r}")
    if cfg["mode"] not in active.MODES:
        raise ValueError(f"mode must be one of {active.MODES}, got {cfg['mode']!r}")
    if cfg["init"] not in ("source_only", "pretrained"):
        raise ValueError(f"init must be 'source_only' or 'pretrained', got {cfg['init']!r}")
    make_budget(cfg)
    its = selection_iters(cfg)
    last = int(cfg["max_iters"] or cfg["iters"])
    if its and its[-1] >= last:
        raise ValueError(f"selection round at iteration {its[-1]} would never run (training stops at {last})")
    for k in ("lambda_cr", "lambda_nl"):
        if float(cfg[k]) < 0:
            raise ValueError(f"{k} must be >= 0, got {cfg[k]}")


def build_ripu_model(cfg: Mapping[str, Any], num_classes: int, seed: int = 0, datasets=None,
                     verbose: bool = False) -> nn.Module:
    """G before adaptation: the cached source-only model (``init="source_only"``) or a fresh
    network from ``cfg.pretrained`` (the paper: ImageNet ResNet-101)."""
    seed_everything(seed)
    model = build_model(cfg, num_classes)
    if cfg["init"] == "source_only":
        base, _ = load_or_train_baseline("source_only", baseline_config(cfg), seed, datasets, verbose=verbose)
        model.load_state_dict(base.state_dict())
    return model


def train_ripu(cfg: Mapping[str, Any], seed: int = 0, datasets: Mapping[str, Any] | None = None,
               desc: str | None = None, verbose: bool = False) -> tuple[nn.Module, ActivePool, History]:
    """Train RIPU (or a baseline acquisition/mode) for one seed; returns ``(G, pool, history)``."""
    _validate(cfg)
    ds = dict(datasets) if datasets is not None else make_da_datasets(cfg)
    num_classes = ds["target_train"].num_classes
    model = build_ripu_model(cfg, num_classes, seed, ds, verbose)
    opt = make_model_optimizer(cfg, model)
    pool = ActivePool(ds["target_train"], cfg["pool_size"])
    step = RIPUStep(cfg, pool, seed)
    val = ds["target_val"]

    def eval_fn(eng: Engine) -> dict[str, float]:
        return {"miou": evaluate(eng.modules["model"], val, num_classes, cfg["eval_batch_size"], amp=cfg["amp"],
                                 flip=cfg["flip_eval"], max_items=cfg["eval_items"]).miou,
                "labeled_fraction": pool.state.labeled_fraction}

    data = {"target": pool} if cfg["source_free"] else {"source": ds["source_train"], "target": pool}
    tb = cfg["target_batch_size"] or cfg["batch_size"]
    bs = {"target": int(tb)} if cfg["source_free"] else {"source": int(cfg["batch_size"]), "target": int(tb)}
    eng = Engine({"model": model}, {"model": opt}, step, data, bs, cfg["iters"], max_iters=cfg["max_iters"],
                 poly_power=cfg["poly_power"], device=cfg["device"], amp=cfg["amp"], channels_last=cfg["channels_last"],
                 seed=seed, eval_fn=eval_fn if val is not None else None, eval_every=cfg["eval_every"],
                 log_every=cfg["log_every"], progress=cfg["progress"], num_workers=cfg["num_workers"],
                 desc=desc or f"ripu {cfg['acquisition']}/{cfg['mode']} seed {seed}")
    history = eng.run()
    return model, pool, history


#: fields, besides the run-only ones, that do not change the trained model
_NOT_IN_KEY = ("select_batch_size",)


def load_or_train_ripu(cfg: Mapping[str, Any], seed: int = 0, datasets: Mapping[str, Any] | None = None,
                       verbose: bool = True) -> tuple[nn.Module, dict]:
    """The cached RIPU model for ``(cfg, seed)``, else train it: ``(G, meta)``.

    ``meta``: ``history`` (losses, final target mIoU), ``miou``, ``labeled_fraction``,
    ``labeled_pixels``, ``rounds`` (per-round log), ``pool_shape``; the state also holds
    ``round_map`` (int8 [N,H,W]: the round each pool pixel was labelled in, -1 = never),
    returned as ``meta["round_map"]``.
    """
    _validate(cfg)
    ds = dict(datasets) if datasets is not None else make_da_datasets(cfg)
    num_classes = ds["target_train"].num_classes
    key = da_cache_key(cfg, seed, ds, num_classes, ignore=_NOT_IN_KEY)

    def fit():
        model, pool, hist = train_ripu(cfg, seed, ds, verbose=verbose)
        val = hist.val[-1] if hist.val else {}
        meta = {"history": hist.to_dict(), "miou": val.get("miou"), "labeled_fraction": pool.state.labeled_fraction,
                "labeled_pixels": pool.state.labeled_pixels, "rounds": pool.state.history,
                "pool_shape": list(pool.round_map.shape)}
        return {"model": model.state_dict(), "round_map": pool.round_map}, meta

    state, meta = load_or_train(f"ripu_{cfg['acquisition']}_{cfg['mode']}", key, fit, cfg.get("cache_dir"),
                                verbose=verbose)
    model = build_model(cfg, num_classes)
    model.load_state_dict(state["model"])
    model.eval()
    meta = dict(meta)
    meta["round_map"] = state["round_map"]
    return model, meta


# ---------------------------------------------------------------------------------------------
# `kit train ripu` (registered in kit.methods)
# ---------------------------------------------------------------------------------------------
def train(cfg: Mapping[str, Any]) -> Path | None:
    """Trainer for ``kit train ripu``: one RIPU run (first seed); saves ``<run_dir>/ripu.pt``
    (model, round map) with the config, history and budget log in the JSON beside it."""
    from .. import distributed
    from . import train_output_path

    _validate(cfg)
    ds = make_da_datasets(cfg)
    seed = int(cfg["seeds"][0])
    model, pool, history = train_ripu(cfg, seed, ds, verbose=distributed.is_main())
    path = train_output_path(cfg, "ripu")
    if distributed.is_main():
        meta = {"method": "ripu", "seed": seed, "num_classes": ds["target_train"].num_classes, "config": dict(cfg),
                "history": history.to_dict(), "rounds": pool.state.history,
                "labeled_fraction": pool.state.labeled_fraction}
        save_checkpoint(path, {"model": model.state_dict(), "round_map": pool.round_map}, meta)
    distributed.barrier()
    return path if distributed.is_main() else None
