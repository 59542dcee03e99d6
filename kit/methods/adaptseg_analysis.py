"""What a trained AdaptSegNet discriminator sees (the notebook's figures).

* :func:`discriminator_map`: D's per-location probability that an image's outputs are
  *source*-like, from G's outputs through :func:`kit.methods.adaptseg.d_input`.
* :func:`class_proportions` and :func:`proportion_gap`: the share of pixels of each class in
  a dataset's labels or in a model's predictions, and the total-variation distance between
  two such shares (C3's diagnosis: what output-space alignment does to the target's class mix).

    >>> import torch
    >>> proportion_gap(torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.25, 0.5, 0.25]))
    25.0
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .adaptseg import d_input

__all__ = ["discriminator_map", "class_proportions", "proportion_gap"]


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


@torch.no_grad()
def class_proportions(dataset, num_classes: int, model: nn.Module | None = None, batch_size: int = 32,
                      amp: str = "auto") -> torch.Tensor:
    """The share of each class among the pixels of ``dataset`` [num_classes], summing to 1:
    of its labels (ignored pixels left out) or, with ``model``, of the model's argmax
    predictions on its images (every pixel)."""
    from ..evaluation import _loader, predict

    counts = torch.zeros(num_classes, dtype=torch.float64)
    for x, y in _loader(dataset, None, batch_size):
        if model is None:
            y = y.flatten()
            y = y[(y >= 0) & (y < num_classes)]
        else:
            y = predict(model, x, amp=amp).argmax(1).flatten().cpu()
        counts += torch.bincount(y, minlength=num_classes)[:num_classes].double()
    if counts.sum() == 0:
        raise ValueError(f"no labelled pixel of classes 0..{num_classes - 1} in {dataset!r}")
    return (counts / counts.sum()).float()


def proportion_gap(p: torch.Tensor, q: torch.Tensor) -> float:
    """Total-variation distance between two class shares, in percentage points (0: the same
    mix; 100: disjoint): half the summed absolute difference."""
    if p.shape != q.shape:
        raise ValueError(f"class shares of different lengths: {tuple(p.shape)} vs {tuple(q.shape)}")
    return float(50.0 * (p.double() - q.double()).abs().sum())
