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
image receives its share of the budget (:class:`kit.active.Budget`: a fraction of pixels
spread evenly over the rounds for RA; ``pa_points`` centre pixels per training-size image for
PA). Baselines at equal budget: ``acquisition`` in {random, uncertainty, impurity} and
``mode`` in {point (single pixels at the RA pixel budget), image (whole images, highest mean
score first)}.

Fidelity to the official code (BIT-DA/RIPU), with the config fields that choose:

* ``select_size="label"`` (default): the logits of the training-size image are upsampled
  (bilinear, ``align_corners=True``) to the ORIGINAL label size and regions are scored and
  picked there; the chosen labels live at that size and the pool resizes them to the training
  size (nearest) at every ``__getitem__``. Real Cityscapes: the label files' size (1024x2048);
  toy world: ``eval_size``. Where that equals the training size (the toy profiles) nothing
  changes. ``"train"``: pick at the training size.
* ``tie_order="column"``: the official tie rule (lowest column first); ``"row"``: row-major.
* ``persist_suppression=True``: every pixel ever inside a suppression window starts later
  rounds at ``-inf`` (the official "active" indicator); ``False``: only labelled pixels.
* ``normalize_impurity=True``: RA impurity divided by log C (official); same ranking either way.
* PA: score = pixel entropy (nats) x impurity of the ``(2*pa_suppress+1)^2`` window (nats),
  suppression radius ``pa_suppress`` (32 in the paper), ``ceil(pa_points / rounds * s)`` picks
  per image and round with ``s`` = selection area / training area (official: 40 / 5 x 2.56 -> 21).
* ``budget_rounding``: ``"exact"`` (never above the budget) or ``"ceil"`` (official, the paper
  profile's default): ``ceil(H*W * budget / rounds / (2k+1)^2)`` regions per image and round.
* ``cr_variant="official"``: the official L_cr (Laplacian boundary mask with zero padding,
  replicate-padded 3x3 mean); ``"in_image"``: the kit's earlier form.
* L_nl on the target logits upsampled (``align_corners=True``) to the training size; the
  source and target cross-entropies upsample with ``align_corners=True`` too, as the official code.
* The source-free configuration of the official code (``RA_source_free``): :func:`preset_config`
  with ``"ra_source_free"``.

Labels reach training with any ``num_workers``: the pool keeps its annotation state in a
memory-mapped file (``<storage>/annotations.u8``) that every ``__getitem__`` reads, so
DataLoader workers started before a selection round see its labels; with ``run_dir`` the file
and the engine checkpoint survive a kill and :func:`train_ripu` resumes (rounds the checkpoint
had not reached are rolled back and run again).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import active, losses
from ..cache import checkpoint_exists, load_or_train, model_key, save_checkpoint
from ..config import Config, inherit, resolve
from ..data import make_da_datasets
from ..engine import Engine, History, autocast, evaluate, seed_everything
from .supervised import baseline_name, build_model, load_or_train_baseline, make_model_optimizer

__all__ = ["ActivePool", "RIPUStep", "PRESETS", "preset_config", "make_budget", "selection_iters",
           "label_resolution_dataset", "baseline_config", "build_ripu_model", "train_ripu", "ripu_key", "load_or_train_ripu",
           "select_on_pool", "train"]

# Defaults and sections of every field: kit.methods.defaults (METHODS["ripu"]).


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


def make_budget(cfg: Mapping[str, Any], pixel_scale: float = 1.0) -> active.Budget:
    """The :class:`kit.active.Budget` of a config. ``pixel_scale``: selection area over training
    area (PA picks scale with it, as in the official formula)."""
    return active.Budget(cfg["mode"], float(cfg["budget"]), int(cfg["rounds"]), int(cfg["radius_k"]),
                         int(cfg["pa_points"]), float(pixel_scale), cfg["budget_rounding"])


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


def label_resolution_dataset(cfg: Mapping[str, Any], target_train) -> Any | None:
    """A dataset whose item ``i`` holds the ORIGINAL-size label of ``target_train[i]`` (where the
    official code selects), or None when selection runs at the training size.

    ``select_size="train"``: None. ``"label"``: the toy world renders the same scene with labels
    at ``eval_size`` (None when that is the training size, as at the toy profiles); Cityscapes
    reads the label files at their full size (1024x2048). Any other dataset: None (its labels
    are taken to be the original ones); pass ``datasets["target_labels"]`` to
    :func:`train_ripu` to supply one.
    """
    if cfg["select_size"] == "train":
        return None
    from ..data import ResizeImage
    from ..data.world import ToyWorld

    if isinstance(target_train, ToyWorld):
        size = tuple(int(v) for v in cfg["eval_size"])
        if size == tuple(target_train.size):
            return None
        return ToyWorld(target_train.spec, target_train.split, size, target_train.length, cache=False,
                        offset=target_train.offset, device=target_train.device)
    from ..data import real

    if isinstance(target_train, real.Cityscapes):
        return real.Cityscapes(target_train.root, target_train.split, classes=target_train.num_classes,
                               transform=ResizeImage(tuple(cfg["size"])))
    return None


def _remove_dir(path: str, owner_pid: int) -> None:
    if os.getpid() == owner_pid:   # never from a forked DataLoader worker
        shutil.rmtree(path, ignore_errors=True)


class ActivePool(torch.utils.data.Dataset):
    """The target pool: ``(image, label)`` with every pixel not yet annotated set to 255.

    Wraps the first ``n`` items of a target dataset ``base`` (training-size images). ``labels``:
    an optional dataset whose item ``i`` holds the label of ``base[i]`` at the ORIGINAL size
    (see :func:`label_resolution_dataset`); selection then runs at that size (``self.h``,
    ``self.w``) and ``__getitem__`` resizes the masked label to the training size (nearest,
    pixel centres, like PIL's NEAREST in the official code).

    ``self.state`` is the :class:`kit.active.AnnotationState` the selection rounds write into.
    Its two planes (label round, suppression round) are views on a uint8 memory-mapped file
    ``<storage>/annotations.u8`` [2,N,H,W] (0 = never, r+1 = round r) that every ``__getitem__``
    reads, so DataLoader worker processes -- forked or spawned before a round -- see its labels.
    ``storage=None``: a temporary folder removed with the pool; a given folder keeps the file
    (and ``annotations.json``: shape and round log) and reopens it, so a killed run resumes with
    its labels (see :meth:`rollback`).
    """

    FILE, META = "annotations.u8", "annotations.json"

    def __init__(self, base, n: int | None = None, labels=None, storage: str | Path | None = None):
        self.base = base
        self.labels = labels
        self.n = len(base) if n is None else min(int(n), len(base))
        if self.n < 1:
            raise ValueError("the active pool needs at least one target image")
        if labels is not None and len(labels) < self.n:
            raise ValueError(f"the label-resolution dataset has {len(labels)} items, fewer than the pool's {self.n}")
        _, y = base[0]
        self.train_size = tuple(int(v) for v in y.shape[-2:])
        self.h, self.w = tuple(int(v) for v in labels[0][1].shape[-2:]) if labels is not None else self.train_size
        self.num_classes = base.num_classes
        self.classes = getattr(base, "classes", None)
        devs = [torch.device(getattr(d, "device", "cpu")) for d in (base, labels) if d is not None]
        #: where the items are made (the engine gives a CUDA-rendering pool no worker processes)
        self.device = next((d for d in devs if d.type != "cpu"), torch.device("cpu"))
        if storage is None:
            self.storage = Path(tempfile.mkdtemp(prefix="kit_ripu_pool_"))
            self._finalizer = weakref.finalize(self, _remove_dir, str(self.storage), os.getpid())
        else:
            self.storage = Path(storage)
            self.storage.mkdir(parents=True, exist_ok=True)
            self._finalizer = None
        self.shape = (2, self.n, self.h, self.w)
        path, meta_path = self.storage / self.FILE, self.storage / self.META
        history: list = []
        if path.exists():
            meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
            if list(meta.get("shape", [])) != list(self.shape) or path.stat().st_size != int(np.prod(self.shape)):
                raise ValueError(f"{path} holds annotations of shape {meta.get('shape')} "
                                 f"({path.stat().st_size} bytes), not {list(self.shape)}: another pool's file; "
                                 f"use another storage folder or delete it")
            history = list(meta.get("history", []))
            self._mm = np.memmap(path, dtype=np.uint8, mode="r+", shape=self.shape)
        else:
            self._mm = np.memmap(path, dtype=np.uint8, mode="w+", shape=self.shape)   # zeros, sparse on disk
        planes = torch.from_numpy(self._mm)
        self.state = active.AnnotationState(planes[0], planes[1], history)
        self.sync()

    # -- worker processes: reopen the file read-only instead of pickling the arrays ----------
    def __getstate__(self):
        d = self.__dict__.copy()
        for k in ("_mm", "state", "_finalizer"):
            d[k] = None
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)

    def _planes(self) -> np.ndarray:
        if self._mm is None:
            self._mm = np.memmap(self.storage / self.FILE, dtype=np.uint8, mode="r", shape=self.shape)
        return self._mm

    def sync(self) -> None:
        """Flush the file and write the round log beside it."""
        if self.state is None:
            raise RuntimeError("sync() runs in the process that owns the pool, not in a DataLoader worker")
        self._mm.flush()
        tmp = self.storage / (self.META + ".tmp")
        tmp.write_text(json.dumps({"shape": list(self.shape), "history": self.state.history}))
        tmp.replace(self.storage / self.META)

    def rollback(self, round_idx: int) -> None:
        """Forget rounds ``round_idx`` and later (a run resumed from a checkpoint taken before them)."""
        self.state.rollback(round_idx)
        self.sync()

    @property
    def round_map(self) -> torch.Tensor:
        """int8 [N,H,W]: the round each pool pixel was labelled in, -1 = never (a copy)."""
        return self.state.round_map

    def __len__(self) -> int:
        return self.n

    def label_at_selection_size(self, i: int) -> torch.Tensor:
        """The full label of pool image ``i`` at the selection resolution."""
        return (self.labels if self.labels is not None else self.base)[i][1]

    def __getitem__(self, i: int):
        x, y = self.base[i]
        if self.labels is not None:
            y = self.labels[i][1]
        code = torch.from_numpy(np.array(self._planes()[0, i]))   # read at every access: never stale
        y = y.clone()
        y[code.to(y.device) == 0] = 255
        if tuple(y.shape[-2:]) != self.train_size:
            y = F.interpolate(y[None, None].float(), size=self.train_size, mode="nearest-exact")[0, 0].long()
        return x, y

    def full_label(self, i: int) -> torch.Tensor:
        """The full label of pool image ``i`` at the selection resolution."""
        return self.label_at_selection_size(i)


@torch.no_grad()
def select_on_pool(model: nn.Module, pool: ActivePool, cfg: Mapping[str, Any], round_idx: int,
                   device: torch.device | str = "cpu", seed: int = 0) -> dict[str, Any]:
    """Run one selection round over the whole pool with the model's current predictions.

    As the official code: the logits of the training-size image are upsampled (bilinear,
    ``align_corners=True``) to the pool's selection size (the original label size with
    ``select_size="label"``), then the softmax; scores and picks are computed there. Updates
    ``pool.state`` (persisted to the pool's file); returns a log record (labelled pixels, fraction).
    The model runs where its parameters are (``device`` is kept for callers; it is not used).
    """
    area_scale = pool.h * pool.w / (pool.train_size[0] * pool.train_size[1])
    budget = make_budget(cfg, pixel_scale=area_scale)
    gen = torch.Generator().manual_seed(10007 * seed + round_idx)
    was = model.training
    model.eval()
    bs = int(cfg["select_batch_size"])
    before = pool.state.labeled_pixels
    image_scores = []
    dev = next(model.parameters()).device
    for start in range(0, pool.n, bs):
        idx = list(range(start, min(pool.n, start + bs)))
        x = torch.stack([pool.base[i][0] for i in idx]).to(dev)
        with autocast(dev, cfg["amp"]):
            out = model(x)
        logits = (out["out"] if isinstance(out, Mapping) else out).float()
        logits = F.interpolate(logits, size=(pool.h, pool.w), mode="bilinear", align_corners=True)
        prob = F.softmax(logits, dim=1)
        if budget.mode == "image":
            sc = active.acquisition_map(prob, cfg["acquisition"], budget.k, gen, normalize=cfg["normalize_impurity"])
            image_scores.append(sc.flatten(1).mean(1).cpu())
        else:
            active.select_round(prob, pool.state, idx, budget, cfg["acquisition"], suppression_radius(cfg), gen,
                                round_idx=round_idx, tie_order=cfg["tie_order"],
                                persist_suppression=bool(cfg["persist_suppression"]),
                                normalize=None if budget.mode == "pixel" else bool(cfg["normalize_impurity"]),
                                record=False)   # one record per round, below
    if budget.mode == "image":
        active.image_level_select(torch.cat(image_scores), pool.state, budget, round_idx=round_idx)
        pool.state.history.pop()
    rec = {"round": round_idx, "new_pixels": pool.state.labeled_pixels - before,
           "labeled_pixels": pool.state.labeled_pixels, "labeled_fraction": pool.state.labeled_fraction}
    pool.state.history.append(rec)
    pool.sync()
    model.train(was)
    return rec


class RIPUStep:
    """The per-iteration step for :class:`kit.engine.Engine` (streams ``source`` unless source-free,
    and ``target`` = an :class:`ActivePool`). Runs a selection round first when ``engine.it`` is a
    selection iteration. Logged: ``src`` (CE source), ``tgt`` (CE labelled target), ``cr``, ``nl``.
    (A run resumed from a checkpoint must first forget the rounds the checkpoint had not reached:
    :meth:`rounds_done` and :meth:`ActivePool.rollback`, as :func:`train_ripu` does.)"""

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


def baseline_config(cfg: Mapping[str, Any]) -> Config:
    """The supervised config of the same profile, data and network (the cached source-only model
    and oracle): its data, network and run fields are ``cfg``'s (:func:`kit.config.inherit`);
    the RIPU schedule is not carried over."""
    return inherit(cfg, "supervised")


def _validate(cfg: Mapping[str, Any]) -> None:
    if cfg["acquisition"] not in active.ACQUISITIONS:
        raise ValueError(f"acquisition must be one of {active.ACQUISITIONS}, got {cfg['acquisition']!r}")
    if cfg["mode"] not in active.MODES:
        raise ValueError(f"mode must be one of {active.MODES}, got {cfg['mode']!r}")
    if cfg["init"] not in ("source_only", "pretrained"):
        raise ValueError(f"init must be 'source_only' or 'pretrained', got {cfg['init']!r}")
    choices = {"select_size": ("label", "train"), "tie_order": active.TIE_ORDERS,
               "budget_rounding": active.BUDGET_ROUNDINGS, "cr_variant": losses.CR_VARIANTS}
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
               desc: str | None = None, verbose: bool = False, run_dir: str | Path | None = None,
               checkpoint_every: int = 0) -> tuple[nn.Module, ActivePool, History]:
    """Train RIPU (or a baseline acquisition/mode) for one seed; returns ``(G, pool, history)``.

    ``datasets`` may hold ``"target_labels"``: a dataset with the original-size labels of
    ``target_train`` (else :func:`label_resolution_dataset` decides). ``run_dir``: keep the
    engine checkpoint (``ripu_engine.pt``, every ``checkpoint_every`` iterations and at the end)
    and the pool's annotations (``ripu_pool/``) there; calling again with the same ``run_dir``
    resumes a killed run with its labels.
    """
    _validate(cfg)
    ds = dict(datasets) if datasets is not None else make_da_datasets(cfg)
    num_classes = ds["target_train"].num_classes
    model = build_ripu_model(cfg, num_classes, seed, ds, verbose)
    opt = make_model_optimizer(cfg, model)
    labels = ds["target_labels"] if ds.get("target_labels") is not None else \
        label_resolution_dataset(cfg, ds["target_train"])
    run_dir = Path(run_dir) if run_dir is not None else None
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
    eng = Engine({"model": model}, {"model": opt}, step, data, bs, cfg["iters"], max_iters=cfg["max_iters"],
                 poly_power=cfg["poly_power"], device=cfg["device"], amp=cfg["amp"], channels_last=cfg["channels_last"],
                 seed=seed, eval_fn=eval_fn if val is not None else None, eval_every=cfg["eval_every"],
                 log_every=cfg["log_every"], progress=cfg["progress"], num_workers=cfg["num_workers"],
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


def ripu_key(cfg: Mapping[str, Any], seed: int, datasets: Mapping[str, Any]) -> dict:
    """The cache key of a RIPU model (:func:`kit.cache.model_key`): the config, the source,
    target (and its original-size labels, if given) and validation data, the seed and, with
    ``init="source_only"``, the key of the source-only model it starts from."""
    parents = [baseline_name("source_only", baseline_config(cfg), seed, datasets)] if cfg["init"] == "source_only" else []
    return model_key(cfg, "ripu", seed=seed, parents=parents,
                     data={"source": datasets["source_train"], "target": datasets["target_train"],
                           "target_labels": datasets.get("target_labels"), "val": datasets.get("target_val")},
                     num_classes=datasets["target_train"].num_classes)


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
    key = ripu_key(cfg, seed, ds)

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
