"""A U-Net whose last decoder block also sees the input image: a stride-1 skip (DeP / DDeP).

:class:`kit.models.UNet` follows TransUNet: its finest skip is the stride-2 stem, and the
last block upsamples to full resolution without one. For denoising pretraining that makes
the target ill-posed: i.i.d. per-pixel noise at full resolution cannot be recovered from
stride-2 features of a *frozen* supervised stem (DDeP), so the decoder learns next to
nothing (the L2 loss stays near its trivial value 1). The original U-Net (Ronneberger et
al., 2015) has a full-resolution level; :class:`UNetFullRes` restores it by concatenating
the (normalized) input image to the last decoder block. The extra 3 input channels belong
to the decoder, so DDeP trains them and the encoder stays exactly the kit's ResNet.
"""
from __future__ import annotations

import torch

from .unet import DecoderBlock, UNet
from .utils import check_image

__all__ = ["UNetFullRes"]


class UNetFullRes(UNet):
    """:class:`UNet` (same arguments, same ``encoder``/``decoder``/``head`` split and outputs)
    with the input image as a full-resolution skip of ``decoder.block0``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        dec = self.decoder
        dec.block0 = DecoderBlock(dec.block1.conv2.out_channels, 3, dec.out_channels)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_image(x, 3, self.min_input_size, who="UNetFullRes")
        x_in = self.norm(x)
        enc, dec = self.encoder, self.decoder
        stem = enc.forward_stem(x_in)
        h = enc.maxpool(stem)
        feats = {}
        for name in ("layer1", "layer2", "layer3", "layer4"):
            h = getattr(enc, name)(h)
            feats[name] = h
        z = dec.bottleneck(feats["layer4"])
        y = dec.block4(z, feats["layer3"])
        y = dec.block3(y, feats["layer2"])
        y = dec.block2(y, feats["layer1"])
        y = dec.block1(y, stem)
        y = dec.block0(y, x_in)
        return {"out": self.head(y), "feat": z}
