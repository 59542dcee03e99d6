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
predicted, pixels labelled or suppressed in earlier rounds get score ``-inf``, and every
image receives its share of the budget (:class:`kit.annotation.Budget`: a fraction of pixels
spread evenly over the rounds for RA; ``pa_points`` centre pixels per training-size image for
PA). Baselines at equal budget: ``acquisition`` in {random, uncertainty, impurity} and
``mode`` in {point (single pixels at the RA pixel budget), image (whole images, highest mean
score first)}.

Fidelity to the official code (BIT-DA/RIPU), with the config fields that choose:

* the selection rounds -- ``select_size`` (default ``"label"``: pick at the original label size),
  ``tie_order``, ``persist_suppression``, ``normalize_impurity``, the PA score and
  ``budget_rounding``: :mod:`kit.methods.ripu_pool`, with the pool that keeps the labels.
* ``cr_variant="official"``: the official L_cr (Laplacian boundary mask with zero padding,
  replicate-padded 3x3 mean); ``"in_image"``: the kit's earlier form.
* L_nl on the target logits upsampled (``align_corners=True``) to the training size; the
  source and target cross-entropies upsample with ``align_corners=True`` too, as the official code.
* The source-free configuration of the official code (``RA_source_free``): :func:`preset_config`
  with ``"ra_source_free"``.

The pool (:class:`kit.methods.ripu_pool.ActivePool`) keeps its labels in a memory-mapped file, so
they reach DataLoader workers, and with ``run_dir`` :func:`train_ripu` resumes a killed run.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from .. import active, annotation, losses
from ..cache import cache_name, checkpoint_exists, claim_run_dir, model_key
from ..config import Config, resolve
from ..data import make_da_datasets
from ..engine import Engine, History, seed_everything
from ..evaluation import evaluate
from .ripu_pool import ActivePool, label_resolution_dataset, make_budget, select_on_pool, selection_iters
from .base import Fitted, Method
from .supervised import build_model, make_model_optimizer, source_only_parents

__all__ = ["RIPUStep", "PRESETS", "preset_config", "build_ripu_model", "train_ripu", "RIPU"]

# Defaults and sections of every field: kit.defaults (METHODS["ripu"]).


#: named configurations of the official code, applied by :func:`preset_config`
PRESETS: dict[str, dict[str, Any]] = {
    # configs/*/deeplabv2_r101_RA_source_free.yaml + train_source_free.py: target only, k = 9,
    # selection at iterations 0, 2000, ..., 8000 of the 62.5k poly schedule, stop at 30k,
    # starting from a source-only checkpoint (the official code refuses to start without one)
    "ra_source_free": {"source_free": True, "mode": "region", "radius_k": 9, "budget": 0.022, "rounds": 5,
                       "select_at": [0, 2000, 4000, 6000, 8000], "iters": 62500, "max_iters": 30000,
                       "init": "source_only"},
}


def preset_config(name: str, profile: str = "paper", **overrides: Any) -> Config:
    """The RIPU config of a named official configuration (:data:`PRESETS`) at ``profile``,
    with ``overrides`` on top.

    ``"ra_source_free"`` (the official RA_source_free config): source-free RA at 2.2%, regions
    of 19x19 (k = 9), selection rounds at iterations 0, 2000, 4000, 6000, 8000, training stopped
    at 30000 of the 62500-iteration poly schedule, starting from the source-only model
    (``init="source_only"``; the official code needs that checkpoint). Its iteration numbers and
    k are the paper's: only the ``paper`` profile is accepted (on 64x128 toy images a 19x19
    region alone would exceed a 2.2% budget; use ``source_free=True`` with the toy profiles).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown RIPU preset {name!r}; expected one of {sorted(PRESETS)}")
    if profile != "paper":
        raise ValueError(f"preset {name!r} is the official paper-scale configuration; use profile='paper' "
                         f"(got {profile!r}), or set source_free=True on a toy profile")
    return resolve(profile, "ripu", **{**PRESETS[name], **overrides})


class RIPUStep:
    """The per-iteration step for :class:`kit.engine.Engine` (streams ``source`` unless source-free,
    and ``target`` = an :class:`kit.methods.ripu_pool.ActivePool`). Runs a selection round
    (:func:`kit.methods.ripu_pool.select_on_pool`) first when ``engine.it`` is a selection iteration.
    Logged: ``src`` (CE source), ``tgt`` (CE labelled target), ``cr``, ``nl``.
    (A run resumed from a checkpoint must first forget the rounds the checkpoint had not reached:
    :meth:`rounds_done` and :meth:`kit.methods.ripu_pool.ActivePool.rollback`, as :func:`train_ripu` does.)"""

    def __init__(self, cfg: Mapping[str, Any], pool: ActivePool, seed: int = 0):
        self.cfg = cfg
        self.pool = pool
        self.seed = seed
        self.rounds = selection_iters(cfg)
        self.lambda_cr, self.lambda_nl, self.tau = float(cfg["lambda_cr"]), float(cfg["lambda_nl"]), float(cfg["tau"])
        self.cr_variant = cfg["cr_variant"]
        self.source_free = bool(cfg["source_free"])

    def rounds_done(self, it: int) -> int:
        """Selection rounds complete before iteration ``it`` (a round runs at the start of its iteration)."""
        return sum(1 for r in self.rounds if r < int(it))

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
                l_src = losses.seg_loss(out_s["out"], ys, align_corners=True)   # as the official code
                l_cr = losses.local_consistency_loss(out_s["out"], ys, variant=self.cr_variant) \
                    if self.lambda_cr else l_src * 0
                loss_s = l_src + self.lambda_cr * l_cr
            loss_s.backward()
            logs.update(src=l_src.detach(), cr=l_cr.detach())
        with engine.autocast():
            out_t = G(xt)
            l_tgt = losses.seg_loss(out_t["out"], yt, align_corners=True)
            # L_nl on the logits upsampled to the training size, as the official code
            l_nl = losses.negative_learning_loss(out_t["out"], self.tau, size=xt.shape[-2:]) \
                if self.lambda_nl else l_tgt * 0
            loss_t = l_tgt + self.lambda_nl * l_nl
        loss_t.backward()
        opt.step()
        logs.update(tgt=l_tgt.detach(), nl=l_nl.detach())
        return logs


def _validate(cfg: Mapping[str, Any]) -> None:
    if cfg["acquisition"] not in active.ACQUISITIONS:
        raise ValueError(f"acquisition must be one of {active.ACQUISITIONS}, got {cfg['acquisition']!r}")
    if cfg["mode"] not in active.MODES:
        raise ValueError(f"mode must be one of {active.MODES}, got {cfg['mode']!r}")
    if cfg["init"] not in ("source_only", "pretrained"):
        raise ValueError(f"init must be 'source_only' or 'pretrained', got {cfg['init']!r}")
    choices = {"select_size": ("label", "train"), "tie_order": active.TIE_ORDERS,
               "budget_rounding": annotation.BUDGET_ROUNDINGS, "cr_variant": losses.CR_VARIANTS}
    for k, valid in choices.items():
        if cfg[k] not in valid:
            raise ValueError(f"{k} must be one of {tuple(valid)}, got {cfg[k]!r}")
    make_budget(cfg)
    its = selection_iters(cfg)
    last = int(cfg["max_iters"] or cfg["iters"])
    if its and its[-1] >= last:
        raise ValueError(f"selection round at iteration {its[-1]} would never run (training stops at {last})")
    for k in ("lambda_cr", "lambda_nl"):
        if float(cfg[k]) < 0:
            raise ValueError(f"{k} must be >= 0, got {cfg[k]}")


def build_ripu_model(cfg: Mapping[str, Any], num_classes: int, seed: int = 0, source: Fitted | None = None) -> nn.Module:
    """G before adaptation: ``source``, the fitted source-only model (``init="source_only"``), or a
    fresh network from ``cfg.pretrained`` (the paper: ImageNet ResNet-101)."""
    seed_everything(seed)
    model = build_model(cfg, num_classes)
    if cfg["init"] == "source_only":
        if source is None:
            raise ValueError("init='source_only' starts G from the source-only model: pass it as `source` "
                             "(kit.fit.fit('ripu', ...) does)")
        model.load_state_dict(source.model.state_dict())
    return model


def train_ripu(cfg: Mapping[str, Any], seed: int = 0, datasets: Mapping[str, Any] | None = None,
               source: Fitted | None = None, desc: str | None = None, run_dir: str | Path | None = None,
               checkpoint_every: int = 0) -> tuple[nn.Module, ActivePool, History]:
    """Train RIPU (or a baseline acquisition/mode) for one seed, G starting from ``source`` (the
    fitted source-only model) with ``init="source_only"``; returns ``(G, pool, history)``.

    ``datasets`` may hold ``"target_labels"``: a dataset with the original-size labels of
    ``target_train`` (else :func:`kit.methods.ripu_pool.label_resolution_dataset` decides). ``run_dir``: keep the
    engine checkpoint (``ripu_engine.pt``, every ``checkpoint_every`` iterations and at the end)
    and the pool's annotations (``ripu_pool/``) there; calling again with the same ``run_dir``
    resumes a killed run with its labels; a ``run_dir`` of a run with another config (another
    cache key) is refused (:func:`kit.cache.claim_run_dir`).
    """
    _validate(cfg)
    ds = dict(datasets) if datasets is not None else make_da_datasets(cfg)
    num_classes = ds["target_train"].num_classes
    model = build_ripu_model(cfg, num_classes, seed, source)
    opt = make_model_optimizer(cfg, model)
    labels = ds["target_labels"] if ds.get("target_labels") is not None else \
        label_resolution_dataset(cfg, ds["target_train"])
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None:    # resume only a run of this very model, before its folder is read
        parents = {"init": source.key} if source is not None else {}
        claim_run_dir(run_dir, cache_name("ripu", RIPU_METHOD.key(cfg, seed, ds, {}, parents)),
                      parts=("ripu_pool", "ripu_engine.pt"))
    pool = ActivePool(ds["target_train"], cfg["pool_size"], labels=labels,
                      storage=run_dir / "ripu_pool" if run_dir is not None else None)
    step = RIPUStep(cfg, pool, seed)
    val = ds["target_val"]

    def eval_fn(eng: Engine) -> dict[str, float]:
        return {"miou": evaluate(eng.modules["model"], val, num_classes, cfg["eval_batch_size"], amp=cfg["amp"],
                                 flip=cfg["flip_eval"], max_items=cfg["eval_items"]).miou,
                "labeled_fraction": pool.state.labeled_fraction}

    data = {"target": pool} if cfg["source_free"] else {"source": ds["source_train"], "target": pool}
    tb = cfg["target_batch_size"] or cfg["batch_size"]
    bs = {"target": int(tb)} if cfg["source_free"] else {"source": int(cfg["batch_size"]), "target": int(tb)}
    eng = Engine.from_config(cfg, {"model": model}, {"model": opt}, step, data, seed=seed, batch_size=bs,
                             max_iters=cfg["max_iters"], eval_fn=eval_fn if val is not None else None,
                             eval_every=cfg["eval_every"],
                             checkpoint=run_dir / "ripu_engine.pt" if run_dir is not None else None,
                             checkpoint_every=int(checkpoint_every),
                             desc=desc or f"ripu {cfg['acquisition']}/{cfg['mode']} seed {seed}")
    # resume: the pool's file may hold rounds the checkpoint had not reached (a kill between a
    # round and the next checkpoint); forget them before the first batch is read, they run again
    start = 0
    if eng.checkpoint is not None and checkpoint_exists(eng.checkpoint):
        start = int(json.loads(eng.checkpoint.with_suffix(".json").read_text())["meta"]["iteration"])
    pool.rollback(step.rounds_done(start))
    history = eng.run()
    return model, pool, history


class RIPU(Method):
    """RIPU for :func:`kit.fit.fit`: G from the source-only model (``init="source_only"``) or the
    network's initial weights, cached as ``ripu_<acquisition>_<mode>``, keyed by the config, the
    source, target (and its original-size labels, if given) and validation data, the seed and the
    parent's key. The meta: ``history`` (losses, final target mIoU), ``miou``, ``labeled_fraction``,
    ``labeled_pixels``, ``rounds`` (per-round log), ``pool_shape`` and ``round_map`` (int8 [N,H,W]:
    the round each pool pixel was labelled in, -1 = never; stored with the weights)."""

    name = config = "ripu"
    tensors = ("round_map",)

    def check(self, cfg, spec):
        _validate(cfg)

    def parents(self, cfg, spec):
        return source_only_parents(cfg)

    def cache_name(self, cfg, spec):
        return f"ripu_{cfg['acquisition']}_{cfg['mode']}"

    def key(self, cfg, seed, data, spec, parents):
        return model_key(cfg, "ripu", seed=seed, parents=list(parents.values()),
                         data={"source": data["source_train"], "target": data["target_train"],
                               "target_labels": data.get("target_labels"), "val": data.get("target_val")},
                         num_classes=data["target_train"].num_classes)

    def build(self, cfg, data, spec):
        return {"model": build_model(cfg, data["target_train"].num_classes)}

    def train(self, cfg, seed, data, spec, parents, verbose=False):
        model, pool, hist = train_ripu(cfg, seed, data, parents.get("init"))
        val = hist.val[-1] if hist.val else {}
        return {"model": model}, {"history": hist.to_dict(), "miou": val.get("miou"),
                                  "labeled_fraction": pool.state.labeled_fraction,
                                  "labeled_pixels": pool.state.labeled_pixels, "rounds": pool.state.history,
                                  "pool_shape": list(pool.round_map.shape), "round_map": pool.round_map}


RIPU_METHOD = RIPU()
