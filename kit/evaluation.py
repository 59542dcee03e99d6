"""Inference and evaluation of a segmentation model: :func:`predict` (class
probabilities, optionally flip-averaged) and :func:`evaluate` (mIoU from one
dataset-level confusion matrix, NaN for absent classes, as mmsegmentation and ADVENT
compute it), returning an :class:`EvalResult`.

Generic over models: a model's forward returns logits ``[B, C, h, w]`` or a mapping
holding them under ``key`` (default ``"out"``). Nothing here trains, so the methods,
the notebooks and user code evaluate the same way. (These used to live in
:mod:`kit.engine`.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .data import VOID_LABELS_HINT, describe_dataset
from .data.labels import IGNORE_INDEX
from .machine import autocast
from .metrics import ConfusionMatrix

__all__ = ["evaluate", "predict", "EvalResult", "boundary_mask", "boundary_errors", "class_mix", "collapse_report",
           "CollapseWarning"]


def _logits(model: nn.Module, x: torch.Tensor, key: str = "out", **kw) -> torch.Tensor:
    out = model(x, **kw)
    return out[key] if isinstance(out, Mapping) else out


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, size: Sequence[int] | None = None, flip: bool = False,
            amp: str = "auto", key: str = "out", **kw) -> torch.Tensor:
    """Class probabilities [B,C,H,W] at ``size`` (default: the input size), optionally flip-averaged."""
    dev = next(model.parameters()).device
    x = images.to(dev)
    size = tuple(size) if size is not None else tuple(x.shape[-2:])
    with autocast(dev, amp):
        logits = _logits(model, x, key, **kw)
        prob = F.softmax(F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False), dim=1)
        if flip:
            lf = _logits(model, x.flip(-1), key, **kw)
            prob = prob + F.softmax(F.interpolate(lf.float(), size=size, mode="bilinear", align_corners=False), 1).flip(-1)
            prob = prob / 2
    return prob


def _loader(dataset: Dataset, max_items: int | None, batch_size: int, num_workers: int = 0) -> DataLoader:
    """The first ``max_items`` items of ``dataset`` (all with None), in order, in batches."""
    n = len(dataset) if max_items is None else min(max_items, len(dataset))  # type: ignore[arg-type]
    sub = torch.utils.data.Subset(dataset, range(n)) if n < len(dataset) else dataset  # type: ignore[arg-type]
    return DataLoader(sub, batch_size=batch_size, shuffle=False, num_workers=num_workers)


@dataclass
class EvalResult:
    """mIoU (in %, as the papers report it), per-class IoU (%) and the confusion matrix."""

    miou: float
    iou: np.ndarray
    confusion: torch.Tensor
    accuracy: float
    classes: tuple[str, ...] | None = None

    def table(self):
        from .metrics import iou_table

        return iou_table(self.confusion, self.classes)

    def as_dict(self) -> dict:
        names = self.classes or tuple(str(i) for i in range(len(self.iou)))
        return {"miou": self.miou, "accuracy": self.accuracy,
                "iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, self.iou)}}


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, num_classes: int | None = None, batch_size: int = 16,
             flip: bool = False, amp: str = "auto", classes: Sequence[str] | None = None,
             max_items: int | None = None, num_workers: int = 0, **kw) -> EvalResult:
    """Evaluate a segmentation model on a dataset with one dataset-level confusion matrix.

    Predictions are upsampled to the label size. Returns an :class:`EvalResult` with
    mIoU in percent. Extra keyword arguments are passed to the model (e.g. ``head=1``).
    Raises ``ValueError`` naming the dataset when none of the evaluated labels has a labelled
    pixel (every pixel 255 = ignore): there is nothing to score, and a NaN mIoU would pass
    for a result.
    """
    classes = tuple(classes) if classes is not None else tuple(getattr(dataset, "classes", ()) or ()) or None
    if num_classes is None:
        num_classes = getattr(dataset, "num_classes", None) or (len(classes) if classes else None)
    if num_classes is None:
        raise ValueError("num_classes is needed for a dataset without a 'num_classes' attribute")
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes)
    for x, y in _loader(dataset, max_items, batch_size, num_workers):
        prob = predict(model, x, size=y.shape[-2:], flip=flip, amp=amp, **kw)
        cm.update(prob.argmax(1).cpu(), y)
    model.train(was_training)
    if int(cm.matrix.sum()) == 0:
        n = len(dataset) if max_items is None else min(max_items, len(dataset))  # type: ignore[arg-type]
        raise ValueError(
            f"evaluate: no labelled pixel in the {n} evaluated item(s) of {describe_dataset(dataset)}: every "
            f"label pixel is {IGNORE_INDEX} (ignore), so there is no mIoU. {VOID_LABELS_HINT}")
    iou = cm.iou()
    return EvalResult(100 * cm.miou(), 100 * iou, cm.matrix, cm.pixel_accuracy(), classes)


def boundary_mask(labels: torch.Tensor, width: int = 1, ignore_index: int = 255) -> torch.Tensor:
    """Pixels [B,H,W] (bool) within ``width`` pixels (a (2w+1)^2 window) of a pixel of another
    labelled class; ignored pixels are never boundary pixels and never make one.

    >>> y = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [255, 255, 255, 255]]])
    >>> boundary_mask(y).int().tolist()
    [[[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]]
    """
    if labels.dim() != 3:
        raise ValueError(f"labels must be [B,H,W], got shape {tuple(labels.shape)}")
    k = 2 * int(width) + 1
    valid = labels != ignore_index
    y = labels.float()[:, None]
    hi = F.max_pool2d(torch.where(valid[:, None], y, torch.full_like(y, -1.0)), k, 1, width)[:, 0]
    lo = -F.max_pool2d(torch.where(valid[:, None], -y, torch.full_like(y, -1e9)), k, 1, width)[:, 0]
    y = y[:, 0]
    return valid & ((hi != y) | (lo != y))


@torch.no_grad()
def boundary_errors(model: nn.Module, dataset: Dataset, width: int = 1, batch_size: int = 16, amp: str = "auto",
                    max_items: int | None = None, ignore_index: int = 255, **kw) -> dict[str, float]:
    """Where a model's errors are: near class boundaries (:func:`boundary_mask`) or inside regions.

    Returns ``boundary_error`` and ``interior_error`` (error rates, %), ``boundary_share`` (share of
    labelled pixels near a boundary, %) and ``errors_at_boundary`` (share of all errors that lie
    there, %). Errors concentrate at boundaries when ``errors_at_boundary`` exceeds
    ``boundary_share`` -- the premise of region-impurity selection (RIPU).
    """
    was_training = model.training
    model.eval()
    counts = torch.zeros(4, dtype=torch.float64)   # boundary px, boundary errors, interior px, interior errors
    for x, y in _loader(dataset, max_items, batch_size):
        wrong = predict(model, x, size=y.shape[-2:], amp=amp, **kw).argmax(1).cpu() != y
        edge, valid = boundary_mask(y, width, ignore_index), y != ignore_index
        inner = valid & ~edge
        counts += torch.tensor([edge.sum(), (wrong & edge).sum(), inner.sum(), (wrong & inner).sum()], dtype=torch.float64)
    model.train(was_training)
    b, be, i, ie = counts.tolist()
    return {"boundary_error": 100 * be / max(b, 1), "interior_error": 100 * ie / max(i, 1),
            "boundary_share": 100 * b / max(b + i, 1), "errors_at_boundary": 100 * be / max(be + ie, 1)}


# ----------------------------------------------------------------------------------
# What a model predicts, without labels: the collapse check of unsupervised adaptation
# ----------------------------------------------------------------------------------
#: images :func:`class_mix` looks at (the first ones of the split, in order)
MIX_ITEMS = 64
#: a class the starting model predicts on at least this share of the pixels ...
COLLAPSE_MIN_SHARE = 0.01
#: ... has vanished when the adapted model predicts it on fewer than this share of the pixels (an
#: absolute floor: a class the source model over-predicted may rightly shrink a lot, not disappear)
COLLAPSE_VANISHED = 0.001
#: the two class mixes are far apart from this total-variation distance on (half the L1 distance:
#: the share of the pixels that would have to change class)
COLLAPSE_TV = 0.5
#: the mean entropy has collapsed when it falls below this fraction of the starting model's
COLLAPSE_ENTROPY_KEPT = 0.05


class CollapseWarning(UserWarning):
    """An adapted model predicts a very different class mix than the model it started from (or
    has become certain of everything): unsupervised adaptation may have collapsed."""


def class_mix(model: nn.Module, dataset: Dataset, items: int = MIX_ITEMS, batch_size: int = 16,
              amp: str = "auto") -> dict:
    """What ``model`` predicts on the first ``items`` images of ``dataset`` (their labels are not
    used): ``{"share": [share of the pixels predicted as each class], "entropy": mean normalized
    entropy in [0, 1]}``. The model's train/eval mode is restored afterwards."""
    was = model.training
    model.eval()
    counts, h_sum, n = None, 0.0, 0
    try:
        with torch.no_grad():
            for batch in _loader(dataset, items, batch_size):
                prob = predict(model, batch[0], amp=amp)
                c = prob.shape[1]
                cnt = torch.bincount(prob.argmax(1).flatten().cpu(), minlength=c).double()
                counts = cnt if counts is None else counts + cnt
                h = -(prob * prob.clamp_min(1e-12).log()).sum(1) / math.log(c)
                h_sum, n = h_sum + float(h.sum()), n + h.numel()
    finally:
        model.train(was)
    if counts is None:
        raise ValueError("class_mix needs at least one image")
    return {"share": (counts / counts.sum()).tolist(), "entropy": h_sum / n}


def collapse_report(start: Mapping, end: Mapping, classes: Sequence[str] | None = None) -> str | None:
    """A label-free warning about an adapted model (``end``, a :func:`class_mix`) against the model
    it started from (``start``), or None. It warns when a class the start predicts on at least
    :data:`COLLAPSE_MIN_SHARE` of the pixels is predicted on fewer than :data:`COLLAPSE_VANISHED`
    of them, when the two mixes are :data:`COLLAPSE_TV` or more apart (total variation), or when
    the mean entropy falls below :data:`COLLAPSE_ENTROPY_KEPT` of the start's.

    >>> collapse_report({"share": [0.5, 0.5], "entropy": 0.4}, {"share": [0.55, 0.45], "entropy": 0.2}) is None
    True
    >>> collapse_report({"share": [0.5, 0.5], "entropy": 0.4}, {"share": [0.9, 0.1], "entropy": 0.3}) is None
    True
    >>> r = collapse_report({"share": [0.5, 0.5], "entropy": 0.4}, {"share": [0.9995, 0.0005], "entropy": 0.3},
    ...                     ["road", "car"])
    >>> "total variation 0.50" in r and "car 50.00% -> 0.05% of the pixels (vanished)" in r
    True
    """
    a, b = list(start["share"]), list(end["share"])
    if len(a) != len(b):
        raise ValueError(f"class mixes of {len(a)} and {len(b)} classes cannot be compared")
    names = list(classes) if classes is not None and len(classes) == len(a) else [str(i) for i in range(len(a))]
    vanished = [i for i in range(len(a)) if a[i] >= COLLAPSE_MIN_SHARE and b[i] < COLLAPSE_VANISHED]
    tv = 0.5 * sum(abs(x - y) for x, y in zip(a, b))
    h0, h1 = float(start["entropy"]), float(end["entropy"])
    entropy_gone = h0 > 0 and h1 < COLLAPSE_ENTROPY_KEPT * h0
    if not (vanished or tv >= COLLAPSE_TV or entropy_gone):
        return None
    moved = sorted(range(len(a)), key=lambda i: -abs(a[i] - b[i]))[:3]
    shown = sorted(set(vanished) | set(moved), key=lambda i: -abs(a[i] - b[i]))
    parts = [f"{names[i]} {100 * a[i]:.2f}% -> {100 * b[i]:.2f}% of the pixels" + (" (vanished)" if i in vanished else "")
             for i in shown]
    return (f"the predicted class mix moved far from the starting model's (total variation {tv:.2f}): "
            + ", ".join(parts) + f"; mean entropy {h0:.3f} -> {h1:.3f}")

