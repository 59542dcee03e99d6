"""RIPU losses (local consistency, negative learning)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..data.labels import IGNORE_INDEX
from .common import check_labels, upsample

# ==================================================================================
# RIPU -- Xie et al., "Towards Fewer Annotations: Active Learning via Region Impurity and
# Prediction Uncertainty for Domain Adaptive Semantic Segmentation", CVPR 2022
# (arXiv 2111.12940). Two regularisers next to the CE on source and on the actively
# labelled target pixels: local consistency on the source (weight 0.1) and negative
# learning on the target (weight 1.0). Both follow the official code by default.
# ==================================================================================
__all__ = ["CR_VARIANTS", "ripu_boundary_mask", "local_consistency_loss", "negative_learning_loss"]

#: forms of the local consistency loss: "official" (Laplacian boundary with zero padding, replicate
#: mean) and "in_image" (non-uniform in-image 3x3 neighbourhood, mean over in-image pixels)
CR_VARIANTS = ("official", "in_image")

_LAPLACIAN = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 8.0, -1.0], [-1.0, -1.0, -1.0]]).view(1, 1, 3, 3)


def _check_variant(variant: str) -> None:
    if variant not in CR_VARIANTS:
        raise ValueError(f"unknown local consistency variant {variant!r}; expected one of {CR_VARIANTS}")


def ripu_boundary_mask(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                       variant: str = "official") -> torch.Tensor:
    """bool [B,H,W]: the pixels where the local consistency loss applies.

    ``variant="official"`` (the official code): a zero-padded 3x3 convolution of the raw label
    ids (as float) with weights -1 on the 8 neighbours and +8 at the centre; nonzero = boundary,
    and the pixel's own label is not ``ignore_index``. Consequences: every image-border pixel
    whose id is not 0 counts as a boundary (the zero padding reads as class 0); a neighbour with
    the ignore id 255 makes a boundary; a mixed neighbourhood whose ids happen to sum to 8x the
    centre does not.

    ``variant="in_image"``: pixels whose in-image 3x3 label neighbourhood holds two or more
    classes and no ignore label.

    >>> ripu_boundary_mask(torch.tensor([[[0, 0, 0, 1]]]))
    tensor([[[False, False,  True,  True]]])
    >>> ripu_boundary_mask(torch.tensor([[[2, 2, 2]]])), ripu_boundary_mask(torch.tensor([[[2, 2, 2]]]), variant="in_image")
    (tensor([[[True, True, True]]]), tensor([[[False, False, False]]]))
    """
    if labels.dim() != 3 or labels.dtype != torch.int64:
        raise ValueError(f"labels must be int64 [B,H,W], got {labels.dtype} {tuple(labels.shape)}")
    _check_variant(variant)
    lab = labels.unsqueeze(1).float()
    if variant == "official":
        lap = F.conv2d(lab, _LAPLACIAN.to(lab.device), padding=1)[:, 0]
        return (lap != 0) & (labels != ignore_index)
    pad = F.pad(lab, (1, 1, 1, 1), mode="replicate")   # replicate: the border adds no new class
    hi = F.max_pool2d(pad, 3, stride=1)
    lo = -F.max_pool2d(-pad, 3, stride=1)
    has_ignore = F.max_pool2d(F.pad((lab == ignore_index).float(), (1, 1, 1, 1), mode="replicate"), 3, stride=1) > 0
    return ((hi != lo) & ~has_ignore)[:, 0]


def local_consistency_loss(logits: torch.Tensor, labels: torch.Tensor,
                           ignore_index: int = IGNORE_INDEX, variant: str = "official") -> torch.Tensor:
    """L_cr [RIPU: local consistency loss L_cr]: L1 distance between each pixel's softmax prediction and the mean
    prediction of its 3x3 neighbourhood (centre included), summed over classes, averaged over
    the pixels where :func:`ripu_boundary_mask` is true. 0 if there is no such pixel (the
    official code would return NaN).

    ``variant="official"`` (default): logits upsampled to the label size (bilinear,
    ``align_corners=True``); the 3x3 mean is a depthwise 3x3 convolution with weights 1/9 and
    REPLICATE padding (border pixels count themselves several times); the official boundary mask.
    ``variant="in_image"``: logits upsampled with ``align_corners=False``, the mean over the
    in-image pixels of the 3x3 window, the non-uniform-neighbourhood mask.

    >>> lg = torch.zeros(1, 2, 1, 2); lg[0, 0, 0, 0] = 20.0           # p = (1, 0) and (.5, .5)
    >>> round(float(local_consistency_loss(lg, torch.tensor([[[0, 1]]]))), 4)   # means (5/6,1/6), (2/3,1/3)
    0.3333
    >>> round(float(local_consistency_loss(lg, torch.tensor([[[0, 1]]]), variant="in_image")), 4)  # mean (.75,.25)
    0.5
    """
    if logits.dim() != 4:
        raise ValueError(f"logits must be [B,C,h,w], got {tuple(logits.shape)}")
    _check_variant(variant)
    check_labels(labels, logits.shape[1], ignore_index)
    size = tuple(labels.shape[-2:])
    if variant == "official":
        if tuple(logits.shape[-2:]) != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=True)
        p = F.softmax(logits.float(), dim=1)
        mean = F.avg_pool2d(F.pad(p, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    else:
        p = F.softmax(upsample(logits, size).float(), dim=1)
        mean = F.avg_pool2d(p, 3, stride=1, padding=1, count_include_pad=False)
    mask = ripu_boundary_mask(labels, ignore_index, variant)
    if not bool(mask.any()):
        return p.sum() * 0.0
    dist = (p - mean).abs().sum(1)
    return dist[mask].mean()


def negative_learning_loss(logits: torch.Tensor, tau: float = 0.05, eps: float = 1e-6,
                           size: Sequence[int] | None = None) -> torch.Tensor:
    """L_nl [RIPU: negative learning loss L_nl] on (unlabelled) target predictions: for every (pixel, class) with
    p < tau, ``-log(1 - p)``, averaged over those entries (0 if there are none). Pushes classes
    the model already rules out further down.

    ``size`` (H, W): the logits are first upsampled there (bilinear, ``align_corners=True``), as
    the official code does with the training-size image (640x1280) -- pass the input's size.
    ``None`` works at the logits' own resolution.

    >>> lg = torch.log(torch.tensor([0.9, 0.08, 0.02])).view(1, 3, 1, 1)
    >>> round(float(negative_learning_loss(lg)), 5)    # only p = 0.02 < 0.05: -log(0.98)
    0.0202
    """
    if logits.dim() != 4:
        raise ValueError(f"logits must be [B,C,h,w], got {tuple(logits.shape)}")
    if not 0 < tau < 1:
        raise ValueError(f"tau must be in (0, 1), got {tau}")
    if size is not None and tuple(size) != tuple(logits.shape[-2:]):
        logits = F.interpolate(logits, size=tuple(int(s) for s in size), mode="bilinear", align_corners=True)
    p = F.softmax(logits.float(), dim=1)
    neg = p < tau
    if not bool(neg.any()):
        return p.sum() * 0.0
    return -torch.log((1 - p[neg]).clamp_min(eps)).mean()
