"""Looking at DeP / DDeP models (:mod:`kit.methods.ddep`) after training.

* :func:`denoise_images` - what a denoising-pretrained network does with noisy images
  (the noisy input, the clean image its prediction implies, both errors): the notebook's
  denoising figures.
* :func:`encoder_digest` - a hash of the encoder's weights and BatchNorm buffers, to check
  DDeP's "frozen encoder stays bit-identical".
"""
from __future__ import annotations

import hashlib

import torch

from .. import losses
from ..models import UNet

__all__ = ["denoise_images", "encoder_digest"]


@torch.no_grad()
def denoise_images(model: UNet, images: torch.Tensor, sigma: float, target: str = "noise", scaled: bool = True,
                   seed: int = 0) -> dict[str, torch.Tensor]:
    """Run a denoising-pretrained model on ``images`` [B,3,H,W] in [0, 1] at noise ``sigma``.

    Returns [0, 1]-scale tensors ``noisy``, ``denoised`` (the clean image implied by the
    prediction) and the raw ``pred`` and true ``eps`` (noise scale), plus the mse of both.
    """
    model.eval()
    dev = next(model.parameters()).device
    x = losses.to_signed(images.to(dev).float())
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(x.shape, generator=g).to(dev)
    x_noisy, _ = losses.noisy_image(x, sigma, eps, scaled=scaled)
    pred = model(losses.from_signed(x_noisy))["out"].float()
    x_hat = losses.denoised_estimate(x_noisy, pred, sigma, target, scaled)
    return {"noisy": losses.from_signed(x_noisy).clamp(0, 1), "denoised": losses.from_signed(x_hat).clamp(0, 1),
            "pred": pred, "eps": eps, "mse_noisy": float(((x_noisy - x) ** 2).mean()),
            "mse_denoised": float(((x_hat - x) ** 2).mean())}


def encoder_digest(model: UNet) -> str:
    """A hash of every encoder tensor (weights *and* BatchNorm buffers), to check "bit-identical"."""
    h = hashlib.sha256()
    for k, v in sorted(model.encoder.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
