"""RIPU losses (local consistency, negative learning)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.labels import IGNORE_INDEX
from .common import check_labels, upsample

# ==================================================================================
# RIPU -- Xie et al., "Towards Fewer Annotations: Active Learning via Region Impurity and
# Prediction Uncertainty for Domain Adaptive Semantic Segmentation", CVPR 2022
# (arXiv 2111.12940). Two regularisers next to the CE on source and on the actively
# labelled target pixels: local consistency on the source (weight 0.1) and negative
# learning on the target (weight 1.0).
# ==================================================================================
__all__ = ["ripu_boundary_mask", "local_consistency_loss", "negative_learning_loss"]


def ripu_boundary_mask(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """bool [B,H,W]: pixels whose in-image 3x3 label neighbourhood is *not uniform* (holds two or
    more classes) and holds no ignore label -- where the local consistency loss applies.

    >>> ripu_boundary_mask(torch.tensor([[[0, 0, 0, 1]]]))
    tensor([[[False, False,  True,  True]]])
    """
    if labels.dim() != 3 or labels.dtype != torch.int64:
        raise ValueError(f"labels must be int64 [B,H,W], got {labels.dtype} {tuple(labels.shape)}")
    lab = labels.unsqueeze(1).float()
    pad = F.pad(lab, (1, 1, 1, 1), mode="replicate")   # replicate: the border adds no new class
    hi = F.max_pool2d(pad, 3, stride=1)
    lo = -F.max_pool2d(-pad, 3, stride=1)
    has_ignore = F.max_pool2d(F.pad((lab == ignore_index).float(), (1, 1, 1, 1), mode="replicate"), 3, stride=1) > 0
    return ((hi != lo) & ~has_ignore)[:, 0]


def local_consistency_loss(logits: torch.Tensor, labels: torch.Tensor,
                           ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """L_cr: L1 distance between each pixel's softmax prediction and the mean prediction of its
    in-image 3x3 neighbourhood (centre included), summed over classes, averaged over the pixels
    where :func:`ripu_boundary_mask` is true. Logits are upsampled to the label size. 0 if no
    such pixel.

    >>> lg = torch.zeros(1, 2, 1, 2); lg[0, 0, 0, 0] = 20.0           # p = (1, 0) and (.5, .5)
    >>> round(float(local_consistency_loss(lg, torch.tensor([[[0, 1]]]))), 4)  # mean (.75,.25)
    0.5
    """
    if logits.dim() != 4:
        raise ValueError(f"logits must be [B,C,h,w], got {tuple(logits.shape)}")
    check_labels(labels, logits.shape[1], ignore_index)
    p = F.softmax(upsample(logits, labels.shape[-2:]).float(), dim=1)
    mean = F.avg_pool2d(p, 3, stride=1, padding=1, count_include_pad=False)
    mask = ripu_boundary_mask(labels, ignore_index)
    if not bool(mask.any()):
        return p.sum() * 0.0
    dist = (p - mean).abs().sum(1)
    return dist[mask].mean()


def negative_learning_loss(logits: torch.Tensor, tau: float = 0.05, eps: float = 1e-6) -> torch.Tensor:
    """L_nl on (unlabelled) target predictions: for every (pixel, class) with p < tau,
    ``-log(1 - p)``, averaged over those entries (0 if there are none). Pushes classes the
    model already rules out further down. Works at the logits' resolution.

    >>> lg = torch.log(torch.tensor([0.9, 0.08, 0.02])).view(1, 3, 1, 1)
    >>> round(float(negative_learning_loss(lg)), 5)    # only p = 0.02 < 0.05: -log(0.98)
    0.0202
    """
    if logits.dim() != 4:
        raise ValueError(f"logits must be [B,C,h,w], got {tuple(logits.shape)}")
    if not 0 < tau < 1:
        raise ValueError(f"tau must be in (0, 1), got {tau}")
    p = F.softmax(logits.float(), dim=1)
    neg = p < tau
    if not bool(neg.any()):
        return p.sum() * 0.0
    return -torch.log((1 - p[neg]).clamp_min(eps)).mean()
