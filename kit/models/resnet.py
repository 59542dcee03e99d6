"""ResNet backbones (He et al., CVPR 2016) with torchvision-compatible parameter names.

Serves every paper of the kit: DeepLab-v2 ResNet-101 (AdaptSegNet, DAS3, RIPU),
PSPNet ResNet-18 (CDCL) and the U-Net encoder (DeP/DDeP).

* ``depth`` 10 (tiny, BasicBlock [1,1,1,1]), 18, 34 (BasicBlock), 50, 101, 152 (Bottleneck).
* ``width``: channels of the stem and of layer1's blocks (64 = torchvision); stage
  widths are width x (1, 2, 4, 8), times 4 at the output of a Bottleneck.
* ``output_stride`` 8/16/32: the stride of layer3/layer4 is replaced by dilation
  (DeepLab-v2: OS 8 -> layer3 dilation 2, layer4 dilation 4). Every block of a dilated
  layer uses the layer's dilation, as DeepLab-v2 does.
* Bottlenecks put the stride on the 3x3 conv (torchvision's "v1.5"), so torchvision
  ImageNet ``state_dict`` files load with :func:`load_pretrained`.
* ``frozen_bn`` -- three BatchNorm regimes (:data:`BN_MODES`):

  - ``False``: BatchNorm trains as usual;
  - ``True``: BatchNorm always in eval mode (running statistics fixed) and its affine
    parameters not trained -- the "frozen BN" of DeepLab-v2 fine-tuning (RIPU's configs);
  - ``"affine"``: only the affine parameters are frozen; the layers stay in train mode, so
    they normalize with the statistics of the current batch and keep updating the running
    statistics that evaluation then uses. This is what AdaptSegNet's official code does
    (``requires_grad = False`` on BN parameters, network in train mode).

The ResNet does not normalize its input: the segmentation models do that (see
:class:`kit.models.utils.InputNorm`).
"""
from __future__ import annotations

import os
import pickle

import torch
import torch.nn as nn

from .utils import check_image

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet", "load_pretrained", "DEPTHS", "BN_MODES", "check_bn_mode"]

#: the values of ``frozen_bn`` (see the module docstring)
BN_MODES = (False, True, "affine")


def check_bn_mode(frozen_bn) -> bool | str:
    """``frozen_bn`` validated: False, True or "affine"."""
    if frozen_bn is False or frozen_bn is True or frozen_bn == "affine":
        return frozen_bn
    raise ValueError(f"frozen_bn must be False (BN trains), True (eval mode, not trained) or 'affine' "
                     f"(affine frozen, batch statistics: AdaptSegNet's official code), got {frozen_bn!r}")


def conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs + identity shortcut (ResNet-10/18/34). [B,cin,H,W] -> [B,planes,H/s,W/s]."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride, dilation), 1x1 expand x4 (ResNet-50/101/152).

    [B,cin,H,W] -> [B,4*planes,H/s,W/s].
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


# depth -> (block, blocks per stage)
DEPTHS = {
    10: (BasicBlock, (1, 1, 1, 1)),
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}

# output_stride -> (dilation of layer3, dilation of layer4); a dilated layer has stride 1.
_DILATIONS = {32: (1, 1), 16: (1, 2), 8: (2, 4)}


class ResNet(nn.Module):
    """ResNet backbone/classifier with torchvision parameter names.

    Shapes (input [B,in_channels,H,W], s = output_stride, ``ceil`` divisions):
    stem [B,w,H/2,W/2]; layer1 [B,w*e,H/4]; layer2 [B,2w*e,H/8];
    layer3 [B,4w*e,H/min(16,s)]; layer4 [B,8w*e,H/s]  (e = 1 BasicBlock, 4 Bottleneck).
    ``channels`` maps "layer1".."layer4" (and "stem") to channel counts.
    ``forward(x)`` returns class logits [B,num_classes] when ``num_classes`` is set,
    else the :meth:`forward_features` dict.
    """

    def __init__(self, depth: int = 50, width: int = 64, output_stride: int = 32,
                 frozen_bn: bool | str = False, num_classes: int | None = None, in_channels: int = 3):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"unknown ResNet depth {depth!r}; expected one of {sorted(DEPTHS)}")
        if output_stride not in _DILATIONS:
            raise ValueError(f"output_stride must be one of 8, 16, 32, got {output_stride!r}")
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive int (64 = torchvision), got {width!r}")
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}")
        block, layers = DEPTHS[depth]
        self.depth, self.width, self.output_stride = depth, width, output_stride
        self.in_channels, self.frozen_bn = in_channels, check_bn_mode(frozen_bn)
        d3, d4 = _DILATIONS[output_stride]

        self.inplanes = width
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0], stride=1, dilation=1)
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2, dilation=1)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2 if d3 == 1 else 1, dilation=d3)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2 if d4 == 1 else 1, dilation=d4)
        e = block.expansion
        self.channels = {"stem": width, "layer1": width * e, "layer2": width * 2 * e,
                         "layer3": width * 4 * e, "layer4": width * 8 * e}
        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(self.channels["layer4"], num_classes)
        else:
            self.avgpool = self.fc = None

        for m in self.modules():  # torchvision's initialization
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if frozen_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.requires_grad_(False)
            self.train(self.training)

    def _make_layer(self, block, planes: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, dilation, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    @property
    def min_input_size(self) -> int:
        """Smallest H and W accepted: the deepest feature map must keep at least one pixel."""
        return self.output_stride

    def train(self, mode: bool = True):
        """As ``nn.Module.train``, but with ``frozen_bn=True`` every BatchNorm stays in eval mode
        (``"affine"`` leaves the modes alone: batch statistics in training)."""
        super().train(mode)
        if self.frozen_bn is True:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """conv1-bn1-relu: [B,in_channels,H,W] -> [B,width,H/2,W/2] (before the max-pool)."""
        return self.relu(self.bn1(self.conv1(x)))

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """[B,in_channels,H,W] -> {"layer1": ..., "layer2": ..., "layer3": ..., "layer4": ...}."""
        check_image(x, self.in_channels, self.min_input_size, who=f"ResNet-{self.depth}")
        x = self.maxpool(self.forward_stem(x))
        feats = {}
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
            feats[name] = x
        return feats

    def forward(self, x: torch.Tensor):
        feats = self.forward_features(x)
        if self.fc is None:
            return feats
        return self.fc(torch.flatten(self.avgpool(feats["layer4"]), 1))

    def extra_repr(self) -> str:
        return (f"depth={self.depth}, width={self.width}, output_stride={self.output_stride}, "
                f"frozen_bn={self.frozen_bn}")


def _read_state_dict(path) -> dict[str, torch.Tensor]:
    """Reads a torchvision-style ``state_dict`` file safely (``weights_only=True``)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights file not found: {path!r} "
                                "(expected a torchvision-format ResNet state_dict saved with torch.save)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, OSError) as e:
        raise ValueError(f"could not read {path!r} as a torch state_dict (truncated or not a "
                         f"torch.save file?): {type(e).__name__}: {str(e).splitlines()[0][:200]}") from e
    # Accept the usual wrappers: {"state_dict": sd}, {"model": sd}, and DataParallel "module." prefixes.
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise ValueError(f"{path!r} does not hold a state_dict (a dict of name -> tensor), "
                         f"got {type(obj).__name__}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def load_pretrained(model: ResNet, path) -> ResNet:
    """Loads a torchvision ImageNet ResNet ``state_dict`` file into ``model`` (in place).

    ``fc.*`` entries are ignored on both sides (the classifier is task-specific). Any
    missing key, unexpected key or shape mismatch raises ``ValueError`` naming a few of
    them, e.g. a width-64 file into a ``width=16`` model. Returns ``model``.
    """
    sd = {k: v for k, v in _read_state_dict(path).items() if not k.startswith("fc.")}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in own.items() if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or mismatched:
        def few(items):
            return ", ".join(items[:5]) + (f", ... ({len(items)} in all)" if len(items) > 5 else "")
        parts = []
        if mismatched:
            parts.append(f"shape mismatches: {few(mismatched)}")
        if missing:
            parts.append(f"missing keys: {few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {few(unexpected)}")
        desc = (f"ResNet-{model.depth} width={model.width}" if isinstance(model, ResNet)
                else type(model).__name__)
        raise ValueError(f"{os.fspath(path)!r} does not match {desc}: " + "; ".join(parts))
    model.load_state_dict(sd, strict=False)  # only fc.* may be left out, checked above
    return model


def resnet(depth: int, width: int = 64, output_stride: int = 32, pretrained=None,
           frozen_bn: bool | str = False, num_classes: int | None = None, in_channels: int = 3) -> ResNet:
    """Builds a :class:`ResNet`; ``pretrained`` is a path to a torchvision state_dict file or None."""
    model = ResNet(depth, width, output_stride, frozen_bn, num_classes, in_channels)
    if pretrained is not None:
        load_pretrained(model, pretrained)
    return model
