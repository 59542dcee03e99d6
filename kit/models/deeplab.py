"""DeepLab-v2 (Chen et al., TPAMI 2017) as used by AdaptSegNet (Tsai et al., CVPR 2018, Fig. 2).

Also the segmentation network of DAS3 and RIPU. A dilated ResNet (output stride 8)
followed by an ASPP classifier: four parallel 3x3 convs with dilations 6, 12, 18, 24
whose class scores are summed. The multi-level variant of AdaptSegNet adds a second
ASPP classifier on layer3 (the auxiliary output, adapted by its own discriminator).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from .resnet import resnet
from .utils import InputNorm, check_image, param_groups_from

__all__ = ["ASPPClassifier", "DeepLabV2"]


class ASPPClassifier(nn.Module):
    """DeepLab-v2 ASPP classifier: [B,in_channels,h,w] -> logits [B,num_classes,h,w].

    One 3x3 conv (with bias) per dilation rate; the branch outputs are **summed**.
    Weights are drawn from N(0, 0.01) as in DeepLab-v2; biases start at 0.

    ``official=True`` reproduces a bug of the official AdaptSegNet code: its forward
    loop ``return``\\ s inside the loop right after adding the second branch, so only the
    dilation-6 and dilation-12 branches are summed; the dilation-18 and -24 convs exist
    (and are in the released checkpoints) but are never used. Use it only to load and
    evaluate the released weights or to reproduce the official numbers exactly.
    """

    def __init__(self, in_channels: int, num_classes: int,
                 dilations: Sequence[int] = (6, 12, 18, 24), official: bool = False):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        dilations = tuple(int(d) for d in dilations)
        if not dilations or min(dilations) < 1:
            raise ValueError(f"dilations must be a non-empty list of positive ints, got {dilations}")
        if official and len(dilations) < 2:
            raise ValueError("official=True needs at least two dilations (it sums the first two)")
        self.dilations, self.official = dilations, official
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=d, dilation=d, bias=True) for d in dilations)
        for conv in self.convs:
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        used = self.convs[:2] if self.official else self.convs
        out = used[0](x)
        for conv in used[1:]:
            out = out + conv(x)
        return out

    def extra_repr(self) -> str:
        return f"dilations={self.dilations}, official={self.official}"


class DeepLabV2(nn.Module):
    """DeepLab-v2 segmenter (AdaptSegNet Fig. 2, DAS3, RIPU).

    Input: images [B,3,H,W] in [0,1] RGB (normalized inside, see ``input_norm``).
    Output dict: ``"out"`` main logits [B,num_classes,H/s,W/s] from the ASPP head on
    layer4 (s = output_stride, sizes rounded up), ``"feat"`` layer4 features, and with
    ``multi_level=True`` ``"aux"`` logits of the ASPP head on layer3 (same size at OS 8/16).
    Upsample with :func:`kit.models.utils.upsample_like`.

    ``dilations`` are the ASPP rates; the paper's (6, 12, 18, 24) suit feature maps of
    64x128 (a 512x1024 input at OS 8). On a toy 8x16 feature map a rate of 24 samples
    only padding, so CPU-sized profiles scale the rates down with the input.
    """

    def __init__(self, num_classes: int, depth: int = 101, width: int = 64, output_stride: int = 8,
                 multi_level: bool = False, official_aspp: bool = False, pretrained=None,
                 frozen_bn: bool | str = False, input_norm: str | None = "imagenet",
                 dilations: Sequence[int] = (6, 12, 18, 24)):
        super().__init__()
        self.num_classes, self.multi_level = num_classes, multi_level
        self.norm = InputNorm(input_norm)
        self.backbone = resnet(depth, width, output_stride, pretrained=pretrained, frozen_bn=frozen_bn)
        ch = self.backbone.channels
        self.head = ASPPClassifier(ch["layer4"], num_classes, dilations, official=official_aspp)
        self.aux_head = (ASPPClassifier(ch["layer3"], num_classes, dilations, official=official_aspp)
                         if multi_level else None)

    @property
    def min_input_size(self) -> int:
        return self.backbone.min_input_size

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_image(x, 3, self.min_input_size, who="DeepLabV2")
        feats = self.backbone.forward_features(self.norm(x))
        result = {"out": self.head(feats["layer4"]), "feat": feats["layer4"]}
        if self.aux_head is not None:
            result["aux"] = self.aux_head(feats["layer3"])
        return result

    def param_groups(self) -> list[dict]:
        """Backbone at lr x1, ASPP heads at lr x10 (DeepLab-v2 / AdaptSegNet)."""
        heads = [self.head] + ([self.aux_head] if self.aux_head is not None else [])
        return param_groups_from([("backbone", [self.backbone], 1.0), ("head", heads, 10.0)])
