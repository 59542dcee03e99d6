"""DAS3 losses (source-free: entropy, diversity, pseudo-labels)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..data.labels import IGNORE_INDEX
from .common import check_labels, upsample

# ==================================================================================
# DAS3 -- Wang, Liang, Zhang, "Give Me Your Trained Model: Domain Adaptive Semantic
# Segmentation without Source Data", arXiv 2106.11653 (2021). Source-free: every loss
# below sees only target predictions.
#
# Entropies are *normalized*: H = -sum_c p_c log p_c / log C, in [0, 1], so gamma and
# alpha mean the same thing for any number of classes. Entropy terms work at the
# resolution of the logits they are given (no labels are involved).
# ==================================================================================
__all__ = ["normalized_entropy", "entropy_loss", "focal_entropic_loss", "FOCAL_GRAD_MODES",
           "weighted_diversity_loss", "DIVERSITY_NORMS", "negative_labels", "negative_pseudo_label_loss", "classwise_thresholds",
           "global_threshold", "positive_pseudo_labels", "confident_pixel_share", "pixel_weighted_seg_loss"]


def _check_logits(logits: torch.Tensor, who: str) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 4:
        raise ValueError(f"{who} expects logits [B,C,h,w], got "
                         f"{type(logits).__name__}{tuple(getattr(logits, 'shape', ()))}")
    if logits.shape[1] < 2:
        raise ValueError(f"{who} needs at least 2 classes, got C={logits.shape[1]}")


def normalized_entropy(prob: torch.Tensor, dim: int = 1, eps: float = 1e-12) -> torch.Tensor:
    """Normalized Shannon entropy of probabilities along ``dim``: [B,C,H,W] -> [B,H,W] in [0, 1].

    0 for a one-hot prediction, 1 for the uniform one (divided by log C).

    >>> p = torch.tensor([[1.0, 0.0], [0.5, 0.5]]).T.reshape(1, 2, 1, 2)
    >>> normalized_entropy(p).flatten().tolist()
    [0.0, 1.0]
    """
    c = prob.shape[dim]
    if c < 2:
        raise ValueError(f"entropy needs at least 2 classes along dim {dim}, got {c}")
    prob = prob.float()
    return -(prob * torch.log(prob.clamp_min(eps))).sum(dim) / math.log(c) + 0.0  # + 0.0: no "-0.0"


def entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """Plain entropy minimization (ADVENT-style), the baseline of DAS3's focal entropic loss
    [DAS3: entropy minimization baseline]:
    the mean normalized entropy of the softmax of ``logits`` [B,C,h,w]. Equals
    :func:`focal_entropic_loss` with ``gamma=0``.

    >>> round(float(entropy_loss(torch.zeros(1, 4, 2, 2))), 4)  # uniform prediction
    1.0
    """
    _check_logits(logits, "entropy_loss")
    return normalized_entropy(F.softmax(logits.float(), 1)).mean()


#: the two readings of the focal factor in :func:`focal_entropic_loss`
FOCAL_GRAD_MODES = ("detached", "through")


def focal_entropic_loss(logits: torch.Tensor, gamma: float = 5.0, focal_grad: str = "through") -> torch.Tensor:
    """DAS3's focal entropic loss: mean over pixels of ``(1 - H)^gamma * H`` [DAS3: focal entropic loss, stage 1].

    ``H`` is the normalized entropy of each pixel's softmax; ``logits`` [B,C,h,w] -> scalar.
    ``gamma = 0`` is plain entropy minimization. The *value* is the same in both modes;
    they differ in what the gradient does with the focal factor ``(1 - H)^gamma``:

    * ``focal_grad="through"`` (default): the factor is part of the objective, as in the
      authors' code (yxiwang/ATP, ``mmseg/models/losses/cross_entropy_loss.py``, ``EntropyLoss``:
      ``0.001 * (1 - H)^5 * H`` averaged over pixels, no stop-gradient). ``(1 - H)^gamma H``
      is not monotone in ``H``: it peaks at ``H = 1 / (1 + gamma)`` (1/6 at gamma = 5), and
      ``d/dH = (1 - H)^(gamma - 1) (1 - (1 + gamma) H)`` is *negative* above the peak, so
      minimizing sharpens the confident pixels (``H < 1/(1 + gamma)``) and pushes the
      uncertain ones towards *higher* entropy (towards the uniform prediction, where the term
      is 0 again): a pixel the source model is unsure of is not forced into a class.
    * ``focal_grad="detached"``: the factor is a per-pixel **weight** (stop-gradient), so
      ``d loss / d H_i = (1 - H_i)^gamma / N >= 0``: minimizing lowers the entropy of *every*
      pixel, confident pixels fastest, uncertain ones slowly -- a reading of the paper's
      motivation ("down-weights" uncertain pixels) in the sense of a focal loss in Lin et al.
      It commits the uncertain pixels too, to whatever class they lean to; kept as an ablation.

    >>> round(float(focal_entropic_loss(torch.zeros(1, 4, 2, 2), gamma=5.0)), 6)  # H = 1
    0.0
    >>> l = torch.tensor([2.0, 0.0]).view(1, 2, 1, 1)   # p = (0.881, 0.119), H = 0.527
    >>> round(float(focal_entropic_loss(l, gamma=1.0)), 4)
    0.2493
    """
    _check_logits(logits, "focal_entropic_loss")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if focal_grad not in FOCAL_GRAD_MODES:
        raise ValueError(f"focal_grad must be one of {FOCAL_GRAD_MODES}, got {focal_grad!r}")
    h = normalized_entropy(F.softmax(logits.float(), 1)).clamp(0.0, 1.0)
    factor = (1.0 - h).pow(gamma)
    if focal_grad == "detached":
        factor = factor.detach()                 # a weight: confident pixels lead
    return (factor * h).mean()


DIVERSITY_NORMS = ("weights", "pixels")


def weighted_diversity_loss(logits: torch.Tensor, alpha: float = 3.0, eps: float = 1e-12,
                            norm: str = "weights") -> torch.Tensor:
    """DAS3's weighted diversity loss [DAS3: weighted diversity loss, stage 1]: minus the entropy (nats) of the confidence-weighted
    batch-mean prediction.

    ``p_bar_c = sum_i w_i p_ic / sum_i w_i`` over every pixel ``i`` of the batch, with
    weights ``w_i = exp(-alpha * H_i)`` computed from the normalized entropy and *detached*
    (they select pixels, they are not optimized). The loss is ``sum_c p_bar_c log p_bar_c``
    (in [-log C, 0]); minimizing it spreads the predicted class distribution and keeps the
    entropy term from collapsing every pixel onto a few easy classes. ``alpha = 0`` is the
    unweighted diversity term of SHOT. ``logits`` [B,C,h,w] -> scalar.

    ``norm="pixels"`` is the authors' code (yxiwang/ATP, ``EntropyLoss``, its ``gent`` term):
    ``m_c = sum_i w_i p_ic / N`` over the N pixels (not a distribution: it sums to the mean
    weight), and the loss ``sum_c m_c log m_c / log C``. With the weights detached that is the
    default's loss times ``mean(w) / log C`` plus a constant, so its pull is weaker where the
    predictions are uncertain; the default (``"weights"``) is the kit's reading, a named deviation.

    >>> l = torch.tensor([[2.0, 0.0], [0.0, 2.0]]).T.reshape(1, 2, 1, 2)  # two mirrored pixels
    >>> round(float(weighted_diversity_loss(l, alpha=3.0)), 4)  # p_bar = (0.5, 0.5): -log 2
    -0.6931
    """
    _check_logits(logits, "weighted_diversity_loss")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if norm not in DIVERSITY_NORMS:
        raise ValueError(f"diversity norm must be one of {DIVERSITY_NORMS}, got {norm!r}")
    prob = F.softmax(logits.float(), 1)
    w = torch.exp(-alpha * normalized_entropy(prob)).detach()           # [B,h,w]
    if norm == "pixels":                                                 # the authors' code
        m = (prob * w[:, None]).sum((0, 2, 3)) / w.numel()
        return (m * torch.log(m.clamp_min(eps))).sum() / math.log(prob.shape[1])
    p_bar = (prob * w[:, None]).sum((0, 2, 3)) / w.sum().clamp_min(eps)  # [C]
    return (p_bar * torch.log(p_bar.clamp_min(eps))).sum()


def negative_labels(prob: torch.Tensor, threshold: float = 0.05) -> torch.Tensor:
    """Negative pseudo-labels: the bool mask [B,C,H,W] of the classes whose probability is
    below ``threshold`` ("this pixel is *not* class c"); the complement of a positive label.

    >>> negative_labels(torch.tensor([0.9, 0.08, 0.02]).view(1, 3, 1, 1), 0.05).flatten().tolist()
    [False, False, True]
    """
    if prob.dim() != 4:
        raise ValueError(f"negative_labels expects probabilities [B,C,H,W], got shape {tuple(prob.shape)}")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"the negative threshold must be in (0, 1), got {threshold}")
    return prob < threshold


def negative_pseudo_label_loss(logits: torch.Tensor, neg_mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """DAS3's negative learning term [DAS3: negative pseudo-label loss, stage 2]: ``-log(1 - p_c)`` averaged over the (pixel, class)
    entries marked negative in ``neg_mask`` (bool [B,C,H,W], e.g. from
    :func:`negative_labels`). Each class is a separate binary decision (multi-label style),
    so the loss pushes the listed classes down without saying which class is right.
    ``logits`` [B,C,h,w] are upsampled to the mask size. No negative entry -> 0 (with a
    gradient path).

    >>> l = torch.log(torch.tensor([0.5, 0.25, 0.25])).view(1, 3, 1, 1)
    >>> m = torch.tensor([False, True, True]).view(1, 3, 1, 1)
    >>> round(float(negative_pseudo_label_loss(l, m)), 4)   # -log(0.75)
    0.2877
    """
    _check_logits(logits, "negative_pseudo_label_loss")
    if neg_mask.dtype != torch.bool or neg_mask.dim() != 4 or neg_mask.shape[:2] != logits.shape[:2]:
        raise ValueError(f"neg_mask must be bool [B,C,H,W] with B,C = {tuple(logits.shape[:2])}, got "
                         f"{neg_mask.dtype} {tuple(neg_mask.shape)}")
    prob = F.softmax(upsample(logits.float(), neg_mask.shape[-2:]), 1)
    n = neg_mask.sum()
    if not bool(n > 0):
        return prob.sum() * 0.0
    # a dense masked sum: several times faster than gathering prob[neg_mask] (and its backward)
    return -(torch.log((1.0 - prob).clamp_min(eps)) * neg_mask).sum() / n


def classwise_thresholds(confidence: torch.Tensor, pred: torch.Tensor, num_classes: int,
                         top_k: float = 0.5) -> torch.Tensor:
    """Class-wise confidence thresholds for positive pseudo-labels (CBST-style top-K)
    [DAS3: class-wise thresholds, stage 2].

    For each class ``c``, take the confidences (max softmax probability) of the pixels
    *predicted* as ``c`` and set ``thr_c`` to the ``ceil(top_k * n_c)``-th largest: the
    ``top_k`` most confident share of each class passes, so a rare, hard class gets labels
    even if all its confidences are lower than those of an easy class. At least one pixel
    per predicted class passes (its most confident one). Classes never predicted get
    ``inf`` (no labels). ``confidence`` float and ``pred`` int64 of the same shape (any);
    returns float [num_classes].

    >>> conf = torch.tensor([0.99, 0.98, 0.97, 0.96, 0.40, 0.30])
    >>> pred = torch.tensor([0, 0, 0, 0, 1, 1])
    >>> classwise_thresholds(conf, pred, 3, top_k=0.5).tolist()
    [0.9800000190734863, 0.4000000059604645, inf]
    """
    if confidence.shape != pred.shape:
        raise ValueError(f"confidence and pred must have the same shape, got {tuple(confidence.shape)} "
                         f"and {tuple(pred.shape)}")
    if not 0.0 < top_k <= 1.0:
        raise ValueError(f"top_k must be a proportion in (0, 1], got {top_k}")
    conf, pred = confidence.flatten().float(), pred.flatten()
    thr = torch.full((num_classes,), float("inf"))
    for c in range(num_classes):
        v = conf[pred == c]
        if v.numel():
            k = max(1, math.ceil(top_k * v.numel()))
            thr[c] = torch.topk(v, k).values[-1]
    return thr


def global_threshold(confidence: torch.Tensor, top_k: float = 0.5) -> float:
    """One confidence threshold for all classes: the ``ceil(top_k * n)``-th largest
    confidence over all pixels (the ablation of :func:`classwise_thresholds`; the same
    share of pixels passes, but dominated by the easy, confident classes).

    >>> global_threshold(torch.tensor([0.99, 0.98, 0.97, 0.96, 0.40, 0.30]), top_k=0.5)
    0.9700000286102295
    """
    if not 0.0 < top_k <= 1.0:
        raise ValueError(f"top_k must be a proportion in (0, 1], got {top_k}")
    v = confidence.flatten().float()
    if v.numel() == 0:
        raise ValueError("global_threshold needs at least one confidence value")
    return float(torch.topk(v, max(1, math.ceil(top_k * v.numel()))).values[-1])


def positive_pseudo_labels(prob: torch.Tensor, thresholds: torch.Tensor | float,
                           ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Positive pseudo-labels from probabilities [B,C,H,W]: the argmax class where its
    probability reaches the threshold of that class (a tensor [C] from
    :func:`classwise_thresholds`, or one float), ``ignore_index`` elsewhere -> int64 [B,H,W].

    >>> p = torch.tensor([[0.9, 0.1], [0.6, 0.4]]).T.reshape(1, 2, 1, 2)
    >>> positive_pseudo_labels(p, torch.tensor([0.95, 0.5])).tolist()  # 0.9 < 0.95, 0.6 < 0.95
    [[[255, 255]]]
    >>> positive_pseudo_labels(p, 0.8).tolist()
    [[[0, 255]]]
    """
    if prob.dim() != 4:
        raise ValueError(f"positive_pseudo_labels expects probabilities [B,C,H,W], got shape {tuple(prob.shape)}")
    conf, pred = prob.max(1)
    if isinstance(thresholds, torch.Tensor):
        if thresholds.numel() != prob.shape[1]:
            raise ValueError(f"need one threshold per class ({prob.shape[1]}), got {thresholds.numel()}")
        thr = thresholds.to(prob.device, torch.float32)[pred]
    else:
        thr = torch.full_like(conf, float(thresholds), dtype=torch.float32)
    return torch.where(conf.float() >= thr, pred, torch.full_like(pred, ignore_index))


# ----------------------------------------------------------------------------------
# Stage 3 as in the authors' later code (ATP, DACS-style self-training)
# ----------------------------------------------------------------------------------
def confident_pixel_share(prob: torch.Tensor, threshold: float = 0.968) -> torch.Tensor:
    """DACS-style pseudo-label weight: the share of *all* pixels of the batch whose
    confidence ``max_c p_c`` reaches ``threshold`` -> a 0-dim float tensor in [0, 1].

    One number per batch, not per pixel: the loss on the pseudo-labelled pixels is scaled
    by how much of the batch the teacher is sure about. ``prob`` [B,C,H,W].

    >>> p = torch.tensor([[0.99, 0.01], [0.6, 0.4], [0.97, 0.03], [0.5, 0.5]]).T.reshape(1, 2, 2, 2)
    >>> float(confident_pixel_share(p, 0.968))   # 0.99 and 0.97 pass
    0.5
    """
    if prob.dim() != 4:
        raise ValueError(f"confident_pixel_share expects probabilities [B,C,H,W], got shape {tuple(prob.shape)}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"the confidence threshold must be in (0, 1], got {threshold}")
    return (prob.max(1).values >= threshold).float().mean()


def pixel_weighted_seg_loss(logits: torch.Tensor, labels: torch.Tensor, pixel_weight: torch.Tensor,
                            ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Cross-entropy weighted per pixel [DAS3: weighted pseudo-label loss, ATP stage 3]:
    ``sum_i w_i CE_i / #valid`` over the pixels whose
    label is not ``ignore_index`` (the DACS / DAFormer weighted pseudo-label loss; with all
    weights 1 it is :func:`kit.losses.seg_loss`). ``logits`` [B,C,h,w] are upsampled to the
    label size; ``labels`` int64 [B,H,W]; ``pixel_weight`` float [B,H,W] (not differentiated).

    >>> l = torch.zeros(1, 2, 1, 2); y = torch.tensor([[[0, 1]]])
    >>> round(float(pixel_weighted_seg_loss(l, y, torch.tensor([[[1.0, 0.0]]]))), 4)  # log(2) / 2
    0.3466
    """
    check_labels(labels, logits.shape[1], ignore_index)
    if pixel_weight.shape != labels.shape:
        raise ValueError(f"pixel_weight must have the labels' shape {tuple(labels.shape)}, got {tuple(pixel_weight.shape)}")
    logits = upsample(logits, labels.shape[-2:]).float()
    valid = labels != ignore_index
    if not bool(valid.any()):
        return logits.sum() * 0.0
    ce = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")   # 0 where ignored
    return (ce * pixel_weight.detach().float()).sum() / valid.sum()
