"""What a trained AdaptSegNet discriminator sees (the notebook's figures).

* :func:`discriminator_map`: D's per-location probability that an image's outputs are
  *source*-like, from G's outputs through :func:`kit.methods.adaptseg.d_input`.

Re-exported by :mod:`kit.methods.adaptseg`, its old home.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .adaptseg import d_input

__all__ = ["discriminator_map"]


@torch.no_grad()
def discriminator_map(model: nn.Module, disc: nn.Module, images: torch.Tensor, key: str = "out",
                      feature_upsample: int = 1, upsample: bool = True) -> torch.Tensor:
    """D's per-location belief that ``images`` produced *source*-like outputs: sigmoid(D(.)) in [0, 1].

    Returns [B,h,w] at D's resolution (1/32 of the input), or at the image size with
    ``upsample=True`` (nearest, to show D's patches as blocks).
    """
    model.eval()
    disc.eval()
    dev = next(model.parameters()).device
    x = images.to(dev)
    out = model(x)
    logits = disc(d_input(out, key, x.shape[-2:], feature_upsample)).float()
    prob = torch.sigmoid(logits)
    if upsample:
        prob = nn.functional.interpolate(prob, size=x.shape[-2:], mode="nearest")
    return prob[:, 0].cpu()
