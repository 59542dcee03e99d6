"""Models of the kit: ResNet backbones, DeepLab-v2, PSPNet, U-Net, the AdaptSegNet
discriminator and dataset-specific BatchNorm.

Segmentation models take images [B,3,H,W] in [0,1] RGB, normalize them inside and
return ``{"out": logits at feature resolution, "feat": last backbone features}`` (plus
``"aux"`` when there is an auxiliary head); callers upsample with :func:`upsample_like`.
Each has ``param_groups()`` (backbone lr x1, head lr x10).
"""
from __future__ import annotations

from .deeplab import ASPPClassifier, DeepLabV2
from .discriminator import FCDiscriminator
from .dsbn import DSBatchNorm2d, convert_to_dsbn, dsbn_modules, get_domain, set_domain, use_domain
from .pspnet import PSPNet, PyramidPooling
from .resnet import BasicBlock, Bottleneck, ResNet, load_pretrained, resnet
from .unet import UNet
from .unet_fullres import UNetFullRes  # noqa: F401  (DDeP: U-Net with a full-resolution input skip)
from .utils import (InputNorm, count_flops, count_parameters, freeze, param_groups_from, set_requires_grad,
                    unfreeze, upsample_like)

__all__ = [
    "ResNet", "BasicBlock", "Bottleneck", "resnet", "load_pretrained",
    "ASPPClassifier", "DeepLabV2", "FCDiscriminator", "PSPNet", "PyramidPooling", "UNet",
    "DSBatchNorm2d", "convert_to_dsbn", "use_domain", "set_domain", "get_domain", "dsbn_modules",
    "InputNorm", "upsample_like", "count_parameters", "count_flops", "freeze", "unfreeze",
    "set_requires_grad", "param_groups_from", "SEGMENTERS", "build_segmenter",
]

SEGMENTERS = {"deeplabv2": DeepLabV2, "pspnet": PSPNet, "unet": UNet}


def build_segmenter(name: str, num_classes, **kw):
    """Builds a segmentation model by name: "deeplabv2", "pspnet" or "unet".

    ``num_classes`` is the number of output channels (a sequence of them for a
    multi-head PSPNet); other keyword arguments go to the model's constructor.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in SEGMENTERS:
        raise ValueError(f"unknown segmenter {name!r}; valid names: {sorted(SEGMENTERS)}")
    return SEGMENTERS[key](num_classes, **kw)
