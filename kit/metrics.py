"""Segmentation metrics from one dataset-level confusion matrix.

mIoU is computed as in the papers (and mmsegmentation, ADVENT): accumulate a single
confusion matrix over the whole evaluation set, then per class
``IoU_c = TP_c / (TP_c + FP_c + FN_c)``; a class absent from both the ground truth and
the prediction has IoU NaN and is left out of the mean (``nanmean``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .data.labels import IGNORE_INDEX

__all__ = ["confusion_matrix", "ConfusionMatrix", "iou_from_confusion", "miou", "iou_table"]


def _check(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"prediction and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.dtype.is_floating_point or target.dtype.is_floating_point:
        raise TypeError("confusion_matrix expects integer class maps (argmax the logits first)")
    valid_t = target != ignore_index
    if valid_t.any():
        t = target[valid_t]
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise ValueError(f"label id {bad} outside the label space 0..{num_classes - 1} "
                             f"(and {ignore_index} = ignore)")
    if pred.numel():
        lo, hi = int(pred.min()), int(pred.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"predicted class {lo if lo < 0 else hi} outside 0..{num_classes - 1}")


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Confusion matrix ``M[true, pred]`` (int64 [C,C]) of integer maps of any equal shape.

    Pixels whose target is ``ignore_index`` are skipped.

    >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 255]), 2).tolist()
    [[1, 0], [0, 1]]
    """
    _check(pred, target, num_classes, ignore_index)
    keep = target != ignore_index
    idx = target[keep].to(torch.int64) * num_classes + pred[keep].to(torch.int64)
    return torch.bincount(idx.cpu(), minlength=num_classes * num_classes).view(num_classes, num_classes)


def iou_from_confusion(cm: torch.Tensor | np.ndarray) -> np.ndarray:
    """Per-class IoU (float64 [C]); NaN where the class is in neither GT nor prediction."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def miou(cm: torch.Tensor | np.ndarray) -> float:
    """Mean IoU over the classes that occur (``nanmean``); NaN if none occurs."""
    iou = iou_from_confusion(cm)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


class ConfusionMatrix:
    """Accumulates one confusion matrix over a whole evaluation set.

    >>> m = ConfusionMatrix(3)
    >>> m.update(torch.tensor([[0, 1], [2, 2]]), torch.tensor([[0, 1], [2, 255]]))
    >>> round(m.miou(), 3)
    1.0
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def iou(self) -> np.ndarray:
        return iou_from_confusion(self.matrix)

    def miou(self) -> float:
        return miou(self.matrix)

    def pixel_accuracy(self) -> float:
        total = int(self.matrix.sum())
        return float(torch.diag(self.matrix).sum()) / total if total else float("nan")

    def table(self, class_names: Sequence[str] | None = None):
        return iou_table(self.matrix, class_names)


def iou_table(cm: torch.Tensor | np.ndarray, class_names: Sequence[str] | None = None):
    """Per-class table as a pandas DataFrame: IoU (%), GT pixel share (%), precision, recall."""
    import pandas as pd

    cm = np.asarray(cm, dtype=np.float64)
    C = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(C)]
    if len(names) != C:
        raise ValueError(f"{len(names)} class names for a {C}-class confusion matrix")
    tp = np.diag(cm)
    gt = cm.sum(1)
    pr = cm.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = pd.DataFrame({
            "class": names,
            "IoU": 100 * iou_from_confusion(cm),
            "gt_share": 100 * gt / max(gt.sum(), 1),
            "precision": 100 * np.where(pr > 0, tp / pr, np.nan),
            "recall": 100 * np.where(gt > 0, tp / gt, np.nan),
        })
    return df
