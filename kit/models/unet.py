"""U-Net-shaped segmenter on the kit's ResNet, for DeP / DDeP (Brempong et al., 2022).

The DDeP papers use TransUNet (Chen et al., 2021): a ResNet encoder, a Transformer
on the stride-32 tokens, and a U-Net decoder with skip connections back to full
resolution. Denoising pretraining trains the whole net (DeP) or only the decoder with
a frozen supervised encoder (DDeP) to predict the noise, then the output projection
``head`` is swapped (:meth:`UNet.replace_head`) for a segmentation classifier.

Split used here: ``encoder`` = the ResNet only (what supervised ImageNet pretraining
provides); ``decoder`` = the optional Transformer bottleneck + the upsampling blocks
(what DDeP pretrains by denoising); ``head`` = the final 1x1 conv.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .resnet import resnet
from .utils import InputNorm, check_image, param_groups_from

__all__ = ["UNet", "UNetDecoder", "TransformerBottleneck", "DecoderBlock"]


class DecoderBlock(nn.Module):
    """Upsample to the skip's size, concat the skip, two 3x3 conv-BN-ReLU.

    [B,cin,h,w] (+ skip [B,cskip,H,W]) -> [B,cout,H,W]. Without a skip, ``size`` gives (H, W).
    """

    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin + cskip, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, size=None) -> torch.Tensor:
        size = tuple(skip.shape[-2:]) if skip is not None else tuple(size)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        x = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(x)))


class TransformerBottleneck(nn.Module):
    """TransUNet-style Transformer over the stride-32 feature map: [B,C,h,w] -> [B,C,h,w].

    Tokens are the h*w pixels (dimension C). A learned positional embedding is stored
    for a ``pos_grid`` of tokens and bilinearly interpolated to (h, w) at every forward
    (as ViTs do for new resolutions), so any input size works and the parameter exists
    before the first forward (optimizers and checkpoints see it). Pre-norm layers.
    """

    def __init__(self, dim: int, layers: int, heads: int = 4, pos_grid: Sequence[int] = (16, 16),
                 dropout: float = 0.1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"transformer_heads={heads} must divide the token dimension {dim}")
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, int(pos_grid[0]), int(pos_grid[1])))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=dropout,
                                       activation="gelu", batch_first=True, norm_first=True)
            for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        pos = self.pos_embed
        if pos.shape[-2:] != (h, w):
            pos = F.interpolate(pos, size=(h, w), mode="bilinear", align_corners=False)
        tokens = (x + pos).flatten(2).transpose(1, 2)  # [B, h*w, C]
        for layer in self.layers:
            tokens = layer(tokens)
        tokens = self.norm(tokens)
        return tokens.transpose(1, 2).reshape(b, c, h, w)


class UNetDecoder(nn.Module):
    """Bottleneck + four skip blocks (layer3, layer2, layer1, stem) + a full-resolution block.

    Channels of the blocks: ``(8d, 4d, 2d, d, d)`` with d = ``decoder_width``.
    """

    def __init__(self, enc_channels: dict, decoder_width: int, transformer_layers: int = 0,
                 transformer_heads: int = 4, pos_grid: Sequence[int] = (16, 16)):
        super().__init__()
        d = decoder_width
        c4 = enc_channels["layer4"]
        self.bottleneck = (TransformerBottleneck(c4, transformer_layers, transformer_heads, pos_grid)
                           if transformer_layers > 0 else nn.Identity())
        outs = (8 * d, 4 * d, 2 * d, d, d)
        self.block4 = DecoderBlock(c4, enc_channels["layer3"], outs[0])       # -> stride 16
        self.block3 = DecoderBlock(outs[0], enc_channels["layer2"], outs[1])  # -> stride 8
        self.block2 = DecoderBlock(outs[1], enc_channels["layer1"], outs[2])  # -> stride 4
        self.block1 = DecoderBlock(outs[2], enc_channels["stem"], outs[3])    # -> stride 2
        self.block0 = DecoderBlock(outs[3], 0, outs[4])                       # -> stride 1
        self.out_channels = outs[4]

    def forward(self, feats: dict, size) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (full-resolution features [B,d,H,W], bottleneck features [B,C4,H/32,W/32])."""
        z = self.bottleneck(feats["layer4"])
        x = self.block4(z, feats["layer3"])
        x = self.block3(x, feats["layer2"])
        x = self.block2(x, feats["layer1"])
        x = self.block1(x, feats["stem"])
        return self.block0(x, size=size), z


class UNet(nn.Module):
    """U-Net / TransUNet-shaped dense predictor for DeP and DDeP (DDeP Fig. 1).

    Input [B,3,H,W] in [0,1] RGB (normalized inside; H, W >= 32). Output dict:
    ``"out"`` [B,out_channels,H,W] at full input resolution (noise prediction during
    denoising pretraining, class logits after :meth:`replace_head`), ``"feat"`` the
    bottleneck features [B,C4,ceil(H/32),ceil(W/32)] (after the Transformer if any).

    ``decoder_width`` defaults to ``width // 2`` (at least 8). ``transformer_layers > 0``
    adds a TransUNet Transformer (``transformer_heads`` heads) on the stride-32 tokens.
    """

    def __init__(self, out_channels: int, depth: int = 18, width: int = 64, decoder_width: int | None = None,
                 transformer_layers: int = 0, transformer_heads: int = 4, pos_grid: Sequence[int] = (16, 16),
                 input_norm: str | None = "imagenet", pretrained=None, head_lr_mult: float = 10.0):
        super().__init__()
        if not isinstance(out_channels, int) or out_channels < 1:
            raise ValueError(f"out_channels must be a positive int, got {out_channels!r}")
        if decoder_width is None:
            decoder_width = max(8, width // 2)
        if not isinstance(decoder_width, int) or decoder_width < 1:
            raise ValueError(f"decoder_width must be a positive int, got {decoder_width!r}")
        if not isinstance(transformer_layers, int) or transformer_layers < 0:
            raise ValueError(f"transformer_layers must be an int >= 0, got {transformer_layers!r}")
        self.head_lr_mult = head_lr_mult
        self.norm = InputNorm(input_norm)
        self.encoder = resnet(depth, width, output_stride=32, pretrained=pretrained)
        self.decoder = UNetDecoder(self.encoder.channels, decoder_width, transformer_layers,
                                   transformer_heads, pos_grid)
        self.head = nn.Conv2d(self.decoder.out_channels, out_channels, 1)

    min_input_size = 32

    def replace_head(self, out_channels: int) -> nn.Conv2d:
        """Swaps the output projection for a fresh 1x1 conv with ``out_channels`` outputs.

        Encoder and decoder are kept as they are (DeP/DDeP: pretrain to predict noise,
        then fine-tune with a new classifier). Returns the new head; rebuild the optimizer.
        """
        if not isinstance(out_channels, int) or out_channels < 1:
            raise ValueError(f"out_channels must be a positive int, got {out_channels!r}")
        old = self.head
        self.head = nn.Conv2d(old.in_channels, out_channels, 1,
                              device=old.weight.device, dtype=old.weight.dtype)
        return self.head

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_image(x, 3, self.min_input_size, who="UNet")
        x_in = self.norm(x)
        enc = self.encoder
        stem = enc.forward_stem(x_in)
        feats = {"stem": stem}
        h = enc.maxpool(stem)
        for name in ("layer1", "layer2", "layer3", "layer4"):
            h = getattr(enc, name)(h)
            feats[name] = h
        y, z = self.decoder(feats, size=x.shape[-2:])
        return {"out": self.head(y), "feat": z}

    def param_groups(self) -> list[dict]:
        """Encoder at lr x1; decoder and head at lr x ``head_lr_mult`` (frozen params left out)."""
        return param_groups_from([("backbone", [self.encoder], 1.0),
                                  ("head", [self.decoder, self.head], self.head_lr_mult)])
