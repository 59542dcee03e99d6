"""AdaptSegNet losses (adversarial, output space)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import upsample

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
__all__ = ["SOURCE_LABEL", "TARGET_LABEL", "GAN_MODES", "gan_loss", "adv_loss_g", "adv_loss_d",
            "output_space_input"]

SOURCE_LABEL = 1.0  #: z for source outputs (paper, Eq. 2)
TARGET_LABEL = 0.0  #: z for target outputs
GAN_MODES = ("vanilla", "lsgan")


def gan_loss(d_logits: torch.Tensor, label: float, mode: str = "vanilla") -> torch.Tensor:
    """GAN loss of a discriminator's output map against a constant domain label: the per-term
    building block of L_d and L_adv [AdaptSegNet: binary cross-entropy or LS-GAN term].

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
    """The generator's adversarial loss L_adv [AdaptSegNet Eq. 4]: D should score target outputs as *source*.

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
    """The discriminator's loss L_d [AdaptSegNet Eq. 2], each domain's term halved.

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
