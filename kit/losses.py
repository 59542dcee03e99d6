"""Every loss of the five papers, as small documented functions.

Shape contract: ``logits`` are [B,C,h,w] (any resolution; they are upsampled to the
label size where a label is involved), ``labels`` are int64 [B,H,W] with 255 = ignore,
probabilities are softmax outputs [B,C,H,W]. All losses run on CPU and GPU and
return a scalar (mean over the valid entries) unless said otherwise.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .data.labels import IGNORE_INDEX

__all__ = ["upsample", "check_labels", "seg_loss"]


def upsample(logits: torch.Tensor, size) -> torch.Tensor:
    """Bilinear upsampling of logits to ``size`` (H, W) (no-op if already that size)."""
    size = tuple(size)
    if tuple(logits.shape[-2:]) == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def check_labels(labels: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
    """Raise a clear error if a label id is outside ``0..num_classes-1`` (other than ignore)."""
    if labels.dtype != torch.int64:
        raise TypeError(f"labels must be int64 class maps, got {labels.dtype}")
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        v = int(labels[bad][0])
        raise ValueError(f"label id {v} outside the label space 0..{num_classes - 1} (and {ignore_index} = ignore)")


def seg_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX,
             weight: torch.Tensor | None = None) -> torch.Tensor:
    """Pixel-wise cross-entropy, ignoring ``ignore_index``, mean over valid pixels.

    Logits are upsampled to the label size first (as AdaptSegNet and its successors do).
    If no pixel is valid the loss is 0 (with a gradient path), not NaN.

    >>> logits = torch.zeros(1, 3, 2, 2); labels = torch.tensor([[[0, 1], [2, 255]]])
    >>> round(float(seg_loss(logits, labels)), 4)  # log(3)
    1.0986
    """
    check_labels(labels, logits.shape[1], ignore_index)
    logits = upsample(logits, labels.shape[-2:]).float()
    if not bool((labels != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, weight=weight, ignore_index=ignore_index)


# ==================================================================================
# AdaptSegNet -- Tsai et al., "Learning to Adapt Structured Output Space for Semantic
# Segmentation", CVPR 2018 (arXiv 1802.10349). Adversarial losses in the output space.
#
# Label convention (the paper's, Eq. 2): z = 1 for a source output, z = 0 for a target
# output; the discriminator's logit is the score of "this came from the source", so
# sigmoid(logit) = D(P)^(h,w,1). The generator's adversarial loss (Eq. 4) asks D to call
# target outputs *source*. The official code uses the opposite labels (source 0,
# target 1); the two are equivalent up to the sign of D's logit.
# ==================================================================================
__all__ += ["SOURCE_LABEL", "TARGET_LABEL", "GAN_MODES", "gan_loss", "adv_loss_g", "adv_loss_d",
            "output_space_input"]

SOURCE_LABEL = 1.0  #: z for source outputs (paper, Eq. 2)
TARGET_LABEL = 0.0  #: z for target outputs
GAN_MODES = ("vanilla", "lsgan")


def gan_loss(d_logits: torch.Tensor, label: float, mode: str = "vanilla") -> torch.Tensor:
    """GAN loss of a discriminator's output map against a constant domain label.

    ``d_logits``: [B,1,h,w] discriminator logits (any shape works). ``mode="vanilla"``:
    binary cross-entropy with logits (the paper); ``mode="lsgan"``: squared error of the raw
    output (least-squares GAN, Mao et al. 2017; AdaptSegNet's LS-GAN variant). Mean over
    every location of the map and the batch. Computed in float32 (safe under autocast).

    >>> round(float(gan_loss(torch.zeros(1, 1, 2, 4), 1.0)), 4)  # an undecided D: log 2
    0.6931
    >>> float(gan_loss(torch.full((1, 1, 2, 4), 0.5), 1.0, mode="lsgan"))
    0.25
    """
    if mode not in GAN_MODES:
        raise ValueError(f"unknown GAN mode {mode!r}; expected one of {GAN_MODES}")
    if not isinstance(d_logits, torch.Tensor) or not d_logits.is_floating_point():
        raise TypeError(f"d_logits must be a float tensor of discriminator outputs, got {type(d_logits).__name__}")
    d_logits = d_logits.float()
    target = torch.full_like(d_logits, float(label))
    if mode == "vanilla":
        return F.binary_cross_entropy_with_logits(d_logits, target)
    return F.mse_loss(d_logits, target)


def adv_loss_g(d_target_logits: torch.Tensor, mode: str = "vanilla",
               source_label: float = SOURCE_LABEL) -> torch.Tensor:
    """The generator's adversarial loss L_adv (paper Eq. 4): D should score target outputs as *source*.

    ``d_target_logits``: D's output [B,1,h,w] on the target softmax P_t (D frozen, gradients
    flow into the segmentation network only). Minimal (0) when D is perfectly fooled, i.e.
    its logit is +inf (vanilla) or exactly ``source_label`` (LS-GAN).

    >>> fooled = torch.full((2, 1, 2, 4), 30.0)  # D is sure the target outputs are source
    >>> float(adv_loss_g(fooled)) < 1e-6, float(adv_loss_g(torch.ones(1, 1, 2, 4), mode="lsgan"))
    (True, 0.0)
    """
    return gan_loss(d_target_logits, source_label, mode)


def adv_loss_d(d_source_logits: torch.Tensor, d_target_logits: torch.Tensor, mode: str = "vanilla",
               source_label: float = SOURCE_LABEL, target_label: float = TARGET_LABEL) -> torch.Tensor:
    """The discriminator's loss L_d (paper Eq. 2), each domain's term halved.

    ``d_source_logits`` / ``d_target_logits``: D's outputs on the *detached* source and target
    softmax outputs (no gradient reaches the segmentation network). Returns
    ``0.5 * gan(D(P_s), source) + 0.5 * gan(D(P_t), target)``; a perfect D gives 0, an
    undecided one (logit 0) gives log 2 in vanilla mode.

    >>> s, t = torch.full((1, 1, 2, 4), 30.0), torch.full((1, 1, 2, 4), -30.0)
    >>> float(adv_loss_d(s, t)) < 1e-6, round(float(adv_loss_d(t, s)), 1)  # perfect D; reversed D
    (True, 30.0)
    """
    return 0.5 * gan_loss(d_source_logits, source_label, mode) + 0.5 * gan_loss(d_target_logits, target_label, mode)


def output_space_input(logits: torch.Tensor, size) -> torch.Tensor:
    """What the output-space discriminator sees: softmax of the logits upsampled to ``size`` (H, W).

    [B,C,h,w] logits -> [B,C,H,W] class probabilities (float32). Upsampling happens on the
    logits, then the softmax (as in the paper's Fig. 2 and official code).

    >>> p = output_space_input(torch.randn(2, 5, 8, 16), (64, 128))
    >>> tuple(p.shape), bool(torch.allclose(p.sum(1), torch.ones(2, 64, 128)))
    ((2, 5, 64, 128), True)
    """
    if logits.dim() != 4:
        raise ValueError(f"logits must be [B,C,h,w], got shape {tuple(logits.shape)}")
    return F.softmax(upsample(logits.float(), size), dim=1)


# ==================================================================================
# DAS3 -- Wang, Liang, Zhang, "Give Me Your Trained Model: Domain Adaptive Semantic
# Segmentation without Source Data", arXiv 2106.11653 (2021). Source-free: every loss
# below sees only target predictions.
#
# Entropies are *normalized*: H = -sum_c p_c log p_c / log C, in [0, 1], so gamma and
# alpha mean the same thing for any number of classes. Entropy terms work at the
# resolution of the logits they are given (no labels are involved).
# ==================================================================================
import math  # noqa: E402  (used by the DAS3 section)

__all__ += ["normalized_entropy", "entropy_loss", "focal_entropic_loss", "weighted_diversity_loss",
            "negative_labels", "negative_pseudo_label_loss", "classwise_thresholds", "global_threshold",
            "positive_pseudo_labels"]


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
    """Plain entropy minimization (ADVENT-style), the baseline of DAS3's focal entropic loss:
    the mean normalized entropy of the softmax of ``logits`` [B,C,h,w]. Equals
    :func:`focal_entropic_loss` with ``gamma=0``.

    >>> round(float(entropy_loss(torch.zeros(1, 4, 2, 2))), 4)  # uniform prediction
    1.0
    """
    _check_logits(logits, "entropy_loss")
    return normalized_entropy(F.softmax(logits.float(), 1)).mean()


def focal_entropic_loss(logits: torch.Tensor, gamma: float = 5.0) -> torch.Tensor:
    """DAS3's focal entropic loss: mean over pixels of ``(1 - H)^gamma * H``.

    ``H`` is the normalized entropy of each pixel's softmax. The factor ``(1 - H)^gamma``
    down-weights uncertain pixels, so confident pixels lead the alignment (like the focal
    loss down-weights easy examples, but in the opposite direction). The term is 0 at
    H = 0 and at H = 1 and peaks at H = 1 / (1 + gamma); ``gamma = 0`` is plain entropy
    minimization. ``logits`` [B,C,h,w] -> scalar.

    >>> round(float(focal_entropic_loss(torch.zeros(1, 4, 2, 2), gamma=5.0)), 6)  # H = 1
    0.0
    >>> l = torch.tensor([2.0, 0.0]).view(1, 2, 1, 1)   # p = (0.881, 0.119), H = 0.527
    >>> round(float(focal_entropic_loss(l, gamma=1.0)), 4)
    0.2493
    """
    _check_logits(logits, "focal_entropic_loss")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    h = normalized_entropy(F.softmax(logits.float(), 1)).clamp(0.0, 1.0)
    return ((1.0 - h).pow(gamma) * h).mean()


def weighted_diversity_loss(logits: torch.Tensor, alpha: float = 3.0, eps: float = 1e-12) -> torch.Tensor:
    """DAS3's weighted diversity loss: minus the entropy (nats) of the confidence-weighted
    batch-mean prediction.

    ``p_bar_c = sum_i w_i p_ic / sum_i w_i`` over every pixel ``i`` of the batch, with
    weights ``w_i = exp(-alpha * H_i)`` computed from the normalized entropy and *detached*
    (they select pixels, they are not optimized). The loss is ``sum_c p_bar_c log p_bar_c``
    (in [-log C, 0]); minimizing it spreads the predicted class distribution and keeps the
    entropy term from collapsing every pixel onto a few easy classes. ``alpha = 0`` is the
    unweighted diversity term of SHOT. ``logits`` [B,C,h,w] -> scalar.

    >>> l = torch.tensor([[2.0, 0.0], [0.0, 2.0]]).T.reshape(1, 2, 1, 2)  # two mirrored pixels
    >>> round(float(weighted_diversity_loss(l, alpha=3.0)), 4)  # p_bar = (0.5, 0.5): -log 2
    -0.6931
    """
    _check_logits(logits, "weighted_diversity_loss")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    prob = F.softmax(logits.float(), 1)
    w = torch.exp(-alpha * normalized_entropy(prob)).detach()           # [B,h,w]
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
    """DAS3's negative learning term: ``-log(1 - p_c)`` averaged over the (pixel, class)
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
    """Class-wise confidence thresholds for positive pseudo-labels (CBST-style top-K).

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


# ==================================================================================
# DeP / DDeP -- Brempong et al., "Denoising Pretraining for Semantic Segmentation"
# (CVPR-W 2022) and "Decoder Denoising Pretraining for Semantic Segmentation" (TMLR
# 2022, arXiv 2205.11423). The denoising objective (their Eq. 1-2):
#
#     x~ = sqrt(gamma) x + sqrt(1 - gamma) eps,   eps ~ N(0, I),   sigma = sqrt(1 - gamma)
#     L  = E || f(x~) - eps ||^2                  (predict the noise; the paper's choice)
#
# Images live on the paper's scale: RGB in [-1, 1] (``to_signed``), so sigma = 0.2 is a
# fifth of the half-range of the pixel values. ``scaled=False`` gives the plain additive
# variant x~ = x + sigma eps (no sqrt(gamma) shrinking of the clean image).
# ==================================================================================
__all__ += ["to_signed", "from_signed", "noisy_image", "sample_sigma", "denoising_loss", "denoised_estimate",
            "DENOISING_TARGETS"]

DENOISING_TARGETS = ("noise", "image")


def to_signed(image: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> the paper's scale [-1, 1] (``2 x - 1``).

    >>> to_signed(torch.tensor([0.0, 0.5, 1.0])).tolist()
    [-1.0, 0.0, 1.0]
    """
    return image * 2.0 - 1.0


def from_signed(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`to_signed` (no clipping: noisy images may leave [0, 1])."""
    return (x + 1.0) * 0.5


def _sigma_tensor(sigma, x: torch.Tensor, scaled: bool) -> torch.Tensor:
    s = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
    if s.dim() == 0:
        s = s.expand(x.shape[0])
    if s.dim() != 1 or s.shape[0] != x.shape[0]:
        raise ValueError(f"sigma must be a number or a tensor [B] with B={x.shape[0]}, got shape {tuple(s.shape)}")
    if bool((s < 0).any()) or (scaled and bool((s > 1).any())):
        hi = "1 (sigma = sqrt(1 - gamma))" if scaled else "infinity"
        raise ValueError(f"sigma must lie in [0, {hi}], got min {float(s.min()):.3g}, max {float(s.max()):.3g}")
    return s.view(-1, 1, 1, 1)


def noisy_image(x: torch.Tensor, sigma, eps: torch.Tensor | None = None, scaled: bool = True,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The DDeP corruption: ``x~ = sqrt(1 - sigma^2) x + sigma eps`` (``scaled=False``: ``x + sigma eps``).

    ``x``: clean images [B,C,H,W] on the paper's scale ([-1, 1], see :func:`to_signed`);
    ``sigma``: one number (fixed sigma) or a tensor [B] (a sigma per example);
    ``eps``: the noise (default: fresh N(0, I) from ``generator``). Returns ``(x~, eps)``.
    With ``sigma = sqrt(1 - gamma)`` the scaled form is the paper's ``sqrt(gamma) x + sqrt(1-gamma) eps``;
    the added noise has variance exactly ``sigma^2``.

    >>> x = torch.zeros(1, 3, 2, 2); e = torch.ones(1, 3, 2, 2)
    >>> round(noisy_image(x + 1, 0.6, e)[0][0, 0, 0, 0].item(), 4)  # sqrt(1 - 0.36) * 1 + 0.6 * 1
    1.4
    >>> round(noisy_image(x + 1, 0.6, e, scaled=False)[0][0, 0, 0, 0].item(), 4)
    1.6
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"noisy_image expects images [B,C,H,W], got {type(x).__name__}{tuple(getattr(x, 'shape', ()))}")
    s = _sigma_tensor(sigma, x, scaled)
    if eps is None:
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    elif eps.shape != x.shape:
        raise ValueError(f"eps must have the shape of x {tuple(x.shape)}, got {tuple(eps.shape)}")
    keep = torch.sqrt(1.0 - s * s) if scaled else torch.ones_like(s)
    return keep * x + s * eps, eps


def sample_sigma(n: int, low: float, high: float, generator: torch.Generator | None = None,
                 device: str | torch.device = "cpu") -> torch.Tensor:
    """A sigma per example, uniform in ``[low, high]`` -> float32 [n] (the "sampled sigma" variant,
    as in diffusion training; the paper finds a fixed sigma as good or better).

    >>> s = sample_sigma(1000, 0.1, 0.3, torch.Generator().manual_seed(0))
    >>> bool((s >= 0.1).all() and (s <= 0.3).all())
    True
    """
    if not 0 <= low <= high:
        raise ValueError(f"sample_sigma needs 0 <= low <= high, got low={low}, high={high}")
    u = torch.rand(n, generator=generator).to(device)
    return low + (high - low) * u


def denoising_loss(pred: torch.Tensor, x: torch.Tensor, eps: torch.Tensor, target: str = "noise") -> torch.Tensor:
    """L2 denoising loss, mean over all elements.

    ``pred`` [B,C,H,W] is the network's output; ``target="noise"`` compares it with
    ``eps`` (the paper's objective), ``target="image"`` with the clean image ``x``.

    >>> e = torch.ones(1, 3, 2, 2)
    >>> denoising_loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2), e).item()
    1.0
    >>> denoising_loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2), e, "image").item()
    0.0
    """
    if target not in DENOISING_TARGETS:
        raise ValueError(f"target must be one of {DENOISING_TARGETS}, got {target!r}")
    ref = eps if target == "noise" else x
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and {target} {tuple(ref.shape)} must have the same shape")
    return F.mse_loss(pred.float(), ref.float())


def denoised_estimate(x_noisy: torch.Tensor, pred: torch.Tensor, sigma, target: str = "noise",
                      scaled: bool = True) -> torch.Tensor:
    """The clean image implied by a prediction: ``(x~ - sigma eps^) / sqrt(1 - sigma^2)`` for a noise
    prediction (``/ 1`` when ``scaled=False``); the prediction itself for ``target="image"``.

    >>> x = torch.rand(2, 3, 4, 4); xn, e = noisy_image(x, 0.3)
    >>> torch.allclose(denoised_estimate(xn, e, 0.3), x, atol=1e-5)
    True
    """
    if target not in DENOISING_TARGETS:
        raise ValueError(f"target must be one of {DENOISING_TARGETS}, got {target!r}")
    if target == "image":
        return pred
    s = _sigma_tensor(sigma, x_noisy, scaled)
    keep = torch.sqrt(1.0 - s * s) if scaled else torch.ones_like(s)
    return (x_noisy - s * pred) / keep.clamp_min(1e-6)


# ==================================================================================
# RIPU -- Xie et al., "Towards Fewer Annotations: Active Learning via Region Impurity and
# Prediction Uncertainty for Domain Adaptive Semantic Segmentation", CVPR 2022
# (arXiv 2111.12940). Two regularisers next to the CE on source and on the actively
# labelled target pixels: local consistency on the source (weight 0.1) and negative
# learning on the target (weight 1.0).
# ==================================================================================
__all__ += ["ripu_boundary_mask", "local_consistency_loss", "negative_learning_loss"]


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
