"""RIPU's active-learning pool and its selection rounds (the method: :mod:`kit.methods.ripu`).

:class:`ActivePool` is the target pool the training loop streams: ``(image, label)`` with every
pixel not yet annotated set to 255. :func:`select_on_pool` runs one selection round over it with
the model's current predictions and the acquisition functions of :mod:`kit.active`;
:func:`selection_iters` says at which iterations the rounds run, :func:`make_budget` and
:func:`suppression_radius` turn the config into the per-round budget and suppression window,
:func:`label_resolution_dataset` supplies the original-size labels selection runs on.

Fidelity of the selection to the official code (BIT-DA/RIPU), with the config fields that choose:

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

Labels reach training with any ``num_workers``: the pool keeps its annotation state in a
memory-mapped file (``<storage>/annotations.u8``) that every ``__getitem__`` reads, so
DataLoader workers started before a selection round see its labels; with ``run_dir`` the file
and the engine checkpoint survive a kill and :func:`kit.methods.ripu.train_ripu` resumes (rounds
the checkpoint had not reached are rolled back and run again).
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

from .. import active, annotation
from ..machine import autocast

__all__ = ["ActivePool", "select_on_pool", "make_budget", "suppression_radius", "selection_iters",
           "label_resolution_dataset"]


def make_budget(cfg: Mapping[str, Any], pixel_scale: float = 1.0) -> annotation.Budget:
    """The :class:`kit.annotation.Budget` of a config. ``pixel_scale``: selection area over training
    area (PA picks scale with it, as in the official formula)."""
    return annotation.Budget(cfg["mode"], float(cfg["budget"]), int(cfg["rounds"]), int(cfg["radius_k"]),
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
    :func:`kit.methods.ripu.train_ripu` to supply one.
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

    ``self.state`` is the :class:`kit.annotation.AnnotationState` the selection rounds write into.
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
        self.state = annotation.AnnotationState(planes[0], planes[1], history)
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
            annotation.select_round(prob, pool.state, idx, budget, cfg["acquisition"], suppression_radius(cfg), gen,
                                round_idx=round_idx, tie_order=cfg["tie_order"],
                                persist_suppression=bool(cfg["persist_suppression"]),
                                normalize=None if budget.mode == "pixel" else bool(cfg["normalize_impurity"]),
                                record=False)   # one record per round, below
    if budget.mode == "image":
        annotation.image_level_select(torch.cat(image_scores), pool.state, budget, round_idx=round_idx)
        pool.state.history.pop()
    rec = {"round": round_idx, "new_pixels": pool.state.labeled_pixels - before,
           "labeled_pixels": pool.state.labeled_pixels, "labeled_fraction": pool.state.labeled_fraction}
    pool.state.history.append(rec)
    pool.sync()
    model.train(was)
    return rec
