"""PSPNet (Zhao et al., CVPR 2017), the segmenter of CDCL (Wang et al., 2021).

CDCL trains one PSPNet-ResNet18 on several datasets with different label spaces:
the convolutions are shared, each dataset gets its own BatchNorms (see
:mod:`kit.models.dsbn`) and its own classifier head (``num_classes`` as a sequence).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .resnet import resnet
from .utils import InputNorm, check_image, param_groups_from

__all__ = ["PyramidPooling", "PSPNet"]


def _conv_bn_relu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PyramidPooling(nn.Module):
    """Pyramid pooling module (PSPNet Fig. 3): [B,C,h,w] -> [B,2C,h,w].

    For each bin size b: adaptive average pooling to b x b, 1x1 conv-BN-ReLU down to
    C/len(bins) channels, bilinear upsampling back to h x w; the results are
    concatenated with the input.
    """

    def __init__(self, in_channels: int, bins: Sequence[int] = (1, 2, 3, 6)):
        super().__init__()
        bins = tuple(int(b) for b in bins)
        if not bins or min(bins) < 1:
            raise ValueError(f"bins must be a non-empty list of positive ints, got {bins}")
        reduced = max(1, in_channels // len(bins))
        self.bins = bins
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(in_channels, reduced, 1, bias=False),
                          nn.BatchNorm2d(reduced), nn.ReLU(inplace=True)) for b in bins)
        self.out_channels = in_channels + reduced * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(stage(x), size=size, mode="bilinear", align_corners=False)
                  for stage in self.stages]
        return torch.cat([x] + pooled, dim=1)


class PSPNet(nn.Module):
    """PSPNet segmenter (CDCL's model; PSPNet Fig. 3).

    Input: images [B,3,H,W] in [0,1] RGB (ImageNet-normalized inside).
    Output dict: ``"out"`` logits [B,K,H/s,W/s] (s = output_stride, K = classes of the
    chosen head), ``"feat"`` layer4 features, and with ``aux=True`` ``"aux"`` logits of an
    FCN head on layer3 (the PSPNet deep-supervision loss).

    ``num_classes``: an int, or a sequence of ints for one classifier per dataset
    (``nn.ModuleList``); ``forward(x, head=i)`` picks dataset i's classifier (default 0).
    In train mode the batch must hold at least 2 images (the BatchNorm after the 1x1
    pooling bin sees a single value per channel and image).
    """

    def __init__(self, num_classes, depth: int = 18, width: int = 64, output_stride: int = 8,
                 bins: Sequence[int] = (1, 2, 3, 6), pretrained=None, aux: bool = False,
                 input_norm: str | None = "imagenet", dropout: float = 0.1):
        super().__init__()
        multi = not isinstance(num_classes, int)
        classes = tuple(num_classes) if multi else (num_classes,)
        if not classes or not all(isinstance(k, int) and k >= 1 for k in classes):
            raise ValueError(f"num_classes must be a positive int or a non-empty sequence of them, "
                             f"got {num_classes!r}")
        self.num_classes = list(classes) if multi else num_classes
        self.num_heads = len(classes)
        self.norm = InputNorm(input_norm)
        self.backbone = resnet(depth, width, output_stride, pretrained=pretrained)
        c3, c4 = self.backbone.channels["layer3"], self.backbone.channels["layer4"]
        mid = max(8, 512 * width // 64)  # 512 channels at width 64, as in PSPNet
        self.ppm = PyramidPooling(c4, bins)
        self.bottleneck = nn.Sequential(_conv_bn_relu(self.ppm.out_channels, mid, 3), nn.Dropout2d(dropout))
        convs = [nn.Conv2d(mid, k, 1) for k in classes]
        self.classifier = nn.ModuleList(convs) if multi else convs[0]
        if aux:
            aux_mid = max(8, 256 * width // 64)
            self.aux_body = nn.Sequential(_conv_bn_relu(c3, aux_mid, 3), nn.Dropout2d(dropout))
            aux_convs = [nn.Conv2d(aux_mid, k, 1) for k in classes]
            self.aux_classifier = nn.ModuleList(aux_convs) if multi else aux_convs[0]
        else:
            self.aux_body = self.aux_classifier = None

    @property
    def min_input_size(self) -> int:
        return self.backbone.min_input_size

    def _pick(self, heads, head: int) -> nn.Module:
        if isinstance(heads, nn.ModuleList):
            return heads[head]
        return heads

    def forward(self, x: torch.Tensor, head: int = 0) -> dict[str, torch.Tensor]:
        check_image(x, 3, self.min_input_size, who="PSPNet")
        if not isinstance(head, int) or not 0 <= head < self.num_heads:
            raise ValueError(f"head must be an int in [0, {self.num_heads - 1}] "
                             f"(one per entry of num_classes={self.num_classes}), got {head!r}")
        if self.training and x.shape[0] < 2:
            raise ValueError("PSPNet in train mode needs a batch of at least 2 images (BatchNorm "
                             "after the 1x1 pyramid bin); got batch size 1. Use eval mode for batch 1.")
        feats = self.backbone.forward_features(self.norm(x))
        out = self._pick(self.classifier, head)(self.bottleneck(self.ppm(feats["layer4"])))
        result = {"out": out, "feat": feats["layer4"]}
        if self.aux_body is not None:
            result["aux"] = self._pick(self.aux_classifier, head)(self.aux_body(feats["layer3"]))
        return result

    def param_groups(self) -> list[dict]:
        """Backbone at lr x1; pyramid pooling, bottleneck and classifiers at lr x10."""
        heads = [self.ppm, self.bottleneck, self.classifier]
        if self.aux_body is not None:
            heads += [self.aux_body, self.aux_classifier]
        return param_groups_from([("backbone", [self.backbone], 1.0), ("head", heads, 10.0)])
