"""Mixing two images and their labels: ClassMix (Olsson et al., WACV 2021).

:func:`class_mix` pastes the pixels of image A selected by a mask onto image B, and the
same for the labels; :func:`class_mix_batch` picks the mask as ClassMix does (half of
the classes present in A's segmentation, at random). DAS3's stage 3 propagates labels
of easy target images into hard ones this way; any self-training method can use them.
"""
from __future__ import annotations

import math

import torch

from .labels import IGNORE_INDEX

__all__ = ["class_mix", "class_mix_batch"]


def class_mix(image_a: torch.Tensor, label_a: torch.Tensor, image_b: torch.Tensor, label_b: torch.Tensor,
              mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste the pixels of image A where ``mask`` is true onto image B, and the same for labels.

    ``image_*`` [...,3,H,W], ``label_*`` [...,H,W], ``mask`` bool [...,H,W]. Returns
    ``(mixed_image, mixed_label)``: every pixel's label comes from the image its colour
    came from, so image and label stay aligned.

    >>> a, b = torch.ones(3, 2, 2), torch.zeros(3, 2, 2)
    >>> m = torch.tensor([[True, False], [False, False]])
    >>> img, lab = class_mix(a, torch.full((2, 2), 7), b, torch.full((2, 2), 1), m)
    >>> img[0].tolist(), lab.tolist()
    ([[1.0, 0.0], [0.0, 0.0]], [[7, 1], [1, 1]])
    """
    if mask.dtype != torch.bool or mask.shape != label_a.shape or label_a.shape != label_b.shape:
        raise ValueError(f"mask must be bool with the labels' shape; got mask {mask.dtype} {tuple(mask.shape)}, "
                         f"labels {tuple(label_a.shape)} and {tuple(label_b.shape)}")
    if image_a.shape != image_b.shape or image_a.shape[-2:] != mask.shape[-2:]:
        raise ValueError(f"images must share a shape [...,3,H,W] matching the mask; got {tuple(image_a.shape)}, "
                         f"{tuple(image_b.shape)}, mask {tuple(mask.shape)}")
    m = mask.unsqueeze(-3)
    return torch.where(m, image_a, image_b), torch.where(mask, label_a, label_b)


def class_mix_batch(images_a: torch.Tensor, seg_a: torch.Tensor, labels_a: torch.Tensor, images_b: torch.Tensor,
                    labels_b: torch.Tensor, generator: torch.Generator | None = None,
                    ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ClassMix over a batch: for each pair, pick half of the classes of ``seg_a[i]`` (the
    source image's predicted segmentation, rounded up) at random and paste their regions of
    image A (with ``labels_a``, its pseudo-labels) onto image B (with ``labels_b``).

    Returns ``(mixed_images [B,3,H,W], mixed_labels [B,H,W], masks [B,H,W])``.
    """
    masks = torch.zeros_like(seg_a, dtype=torch.bool)
    for i in range(seg_a.shape[0]):
        present = torch.unique(seg_a[i])
        present = present[present != ignore_index]
        if present.numel() == 0:
            continue
        k = math.ceil(present.numel() / 2)
        chosen = present[torch.randperm(present.numel(), generator=generator)[:k].to(present.device)]
        masks[i] = torch.isin(seg_a[i], chosen)
    images, labels = class_mix(images_a, labels_a, images_b, labels_b, masks)
    return images, labels, masks
