"""DeP / DDeP losses (denoising pretraining)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

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
__all__ = ["to_signed", "from_signed", "noisy_image", "sample_sigma", "denoising_loss", "denoised_estimate",
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
    """The DDeP corruption [DDeP: noisy input x~]: ``x~ = sqrt(1 - sigma^2) x + sigma eps`` (``scaled=False``: ``x + sigma eps``).

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
    """L2 denoising loss [DDeP: denoising objective], mean over all elements.

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
