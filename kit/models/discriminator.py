"""Fully-convolutional output-space discriminator of AdaptSegNet (Tsai et al., CVPR 2018, Sec. 3.1)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .utils import check_image

__all__ = ["FCDiscriminator"]


class FCDiscriminator(nn.Module):
    """AdaptSegNet discriminator D: [B,in_channels,H,W] -> domain logits [B,1,H/32,W/32].

    Five convs (kernel 4, stride 2, padding 1) with channels
    in_channels -> w -> 2w -> 4w -> 8w -> 1 (w = 64 in the paper), LeakyReLU(0.2)
    after the first four, no normalization layer, no sigmoid: the output is a map of
    logits (use ``BCEWithLogitsLoss``, or MSE for the LS-GAN variant).
    The input is the softmax of the segmentation output (``in_channels`` = number of
    classes), upsampled to image size. Each conv floors the size by 2, so inputs must
    be at least 32x32; the output is ``floor(H/32) x floor(W/32)``.
    """

    min_input_size = 32

    def __init__(self, in_channels: int, width: int = 64):
        super().__init__()
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive int (64 in the paper), got {width!r}")
        self.in_channels, self.width = in_channels, width
        w = width
        self.conv1 = nn.Conv2d(in_channels, w, 4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(w, 2 * w, 4, stride=2, padding=1)
        self.conv3 = nn.Conv2d(2 * w, 4 * w, 4, stride=2, padding=1)
        self.conv4 = nn.Conv2d(4 * w, 8 * w, 4, stride=2, padding=1)
        self.classifier = nn.Conv2d(8 * w, 1, 4, stride=2, padding=1)
        self.leaky_relu = nn.LeakyReLU(negative_slope=0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, self.in_channels, self.min_input_size, who="FCDiscriminator")
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = self.leaky_relu(conv(x))
        return self.classifier(x)
