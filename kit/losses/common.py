"""Losses shared by every method: upsampling logits, label checks, the segmentation CE.

Shape contract: ``logits`` are [B,C,h,w] (any resolution; they are upsampled to the
label size where a label is involved), ``labels`` are int64 [B,H,W] with 255 = ignore,
probabilities are softmax outputs [B,C,H,W]. All losses run on CPU and GPU and
return a scalar (mean over the valid entries) unless said otherwise.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.labels import IGNORE_INDEX

__all__ = ["upsample", "check_labels", "seg_loss"]


def upsample(logits: torch.Tensor, size, align_corners: bool = False) -> torch.Tensor:
    """Bilinear upsampling of logits to ``size`` (H, W) (no-op if already that size).

    ``align_corners=True`` is what the official AdaptSegNet (PyTorch >= 0.4) and RIPU code use
    before their losses; the kit's default is False (PyTorch's default)."""
    size = tuple(size)
    if tuple(logits.shape[-2:]) == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=align_corners)


def check_labels(labels: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
    """Raise a clear error if a label id is outside ``0..num_classes-1`` (other than ignore)."""
    if labels.dtype != torch.int64:
        raise TypeError(f"labels must be int64 class maps, got {labels.dtype}")
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        v = int(labels[bad][0])
        raise ValueError(f"label id {v} outside the label space 0..{num_classes - 1} (and {ignore_index} = ignore)")


def seg_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX,
             weight: torch.Tensor | None = None, align_corners: bool = False) -> torch.Tensor:
    """Pixel-wise cross-entropy, ignoring ``ignore_index``, mean over valid pixels: L_seg
    [AdaptSegNet Eq. 3], the supervised term of every method of the kit.

    Logits are upsampled to the label size first (as AdaptSegNet and its successors do;
    ``align_corners`` as in :func:`upsample`).
    If no pixel is valid the loss is 0 (with a gradient path), not NaN.

    >>> logits = torch.zeros(1, 3, 2, 2); labels = torch.tensor([[[0, 1], [2, 255]]])
    >>> round(float(seg_loss(logits, labels)), 4)  # log(3)
    1.0986
    """
    check_labels(labels, logits.shape[1], ignore_index)
    logits = upsample(logits, labels.shape[-2:], align_corners).float()
    if not bool((labels != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, weight=weight, ignore_index=ignore_index)
