"""Joint transforms on ``(image, label)`` pairs of tensors.

Every transform is a callable ``t(image, label) -> (image, label)`` with

* ``image``: float tensor ``[3, H, W]`` (RGB in [0, 1]),
* ``label``: int64 tensor ``[H, W]`` (train ids, 255 = ignore),

and raises ``ValueError`` when the two do not have the same ``H, W``. Geometric
transforms move image and label together (the image is interpolated bilinearly with
antialiasing, the label with nearest neighbour, so no new class ids appear).
Normalization is not done here: the models normalize their input.

Randomness: a random transform takes an optional ``torch.Generator`` at construction
and draws from it, else from torch's global RNG. Note that a generator is copied into
every DataLoader worker with the same state, so workers would repeat the same draws;
with ``num_workers > 0`` leave ``generator=None`` and seed through the DataLoader.

>>> t = Compose([RandomScale(0.5, 1.0), RandomCrop((8, 8)), RandomHorizontalFlip()])
>>> img, lbl = t(torch.rand(3, 16, 32), torch.zeros(16, 32, dtype=torch.long))
>>> tuple(img.shape), tuple(lbl.shape)
((3, 8, 8), (8, 8))
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .labels import IGNORE_INDEX

__all__ = [
    "Compose", "Resize", "RandomScale", "RandomCrop", "RandomHorizontalFlip",
    "ColorJitter", "check_pair", "image_to_tensor", "label_to_tensor", "to_tensor_pair",
    "resize_pair", "strong_augment", "RESIZE_PRESETS",
]


# --------------------------------------------------------------------------- checks


def check_pair(image: torch.Tensor, label: torch.Tensor, where: str = "transform") -> None:
    """Raise ``ValueError`` unless image is ``[C,H,W]`` float and label ``[H,W]``."""
    if not isinstance(image, torch.Tensor) or not isinstance(label, torch.Tensor):
        raise ValueError(f"{where}: expected tensors, got {type(image).__name__} and "
                         f"{type(label).__name__} (use to_tensor_pair for PIL images)")
    if image.dim() != 3 or not image.is_floating_point():
        raise ValueError(f"{where}: image must be a float tensor [C,H,W], got "
                         f"{image.dtype} {tuple(image.shape)}")
    if label.dim() != 2:
        raise ValueError(f"{where}: label must be a tensor [H,W], got {tuple(label.shape)}")
    if tuple(image.shape[-2:]) != tuple(label.shape):
        raise ValueError(f"{where}: image size {tuple(image.shape[-2:])} and label size "
                         f"{tuple(label.shape)} differ")


def _size2(size, name: str) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"{name}: size must be a positive int or (H, W), got {size}")
    return size


def _uniform(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in ``0..high`` (inclusive)."""
    return int(torch.randint(0, high + 1, (), generator=generator))


# --------------------------------------------------------------------------- conversion


def image_to_tensor(image) -> torch.Tensor:
    """PIL image or uint8 array ``[H,W,3]`` -> float32 tensor ``[3,H,W]`` in [0, 1]."""
    if not isinstance(image, np.ndarray):
        if getattr(image, "mode", "RGB") != "RGB":
            image = image.convert("RGB")
        image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H,W,3], got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB image, got dtype {image.dtype}")
    if not image.flags.writeable:  # arrays viewing PIL buffers are read-only
        image = image.copy()
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


def label_to_tensor(label) -> torch.Tensor:
    """Single-channel PIL label (modes L, P, I;16, I) or integer array -> int64 ``[H,W]``.

    Values are kept as they are (no id mapping; see ``kit.data.labels``).
    """
    if not isinstance(label, np.ndarray):
        mode = getattr(label, "mode", None)
        if mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
            raise ValueError(f"expected a single-channel label image (mode L, P, I;16 or I), "
                             f"got mode {mode}; a color-coded label needs a color map")
        label = np.asarray(label)
    if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"expected an integer label [H,W], got {label.dtype} {label.shape}")
    return torch.from_numpy(label.astype(np.int64))


def to_tensor_pair(pil_image, pil_label) -> tuple[torch.Tensor, torch.Tensor]:
    """``(PIL RGB image, PIL label)`` -> ``(float [3,H,W] in [0,1], int64 [H,W])``."""
    image, label = image_to_tensor(pil_image), label_to_tensor(pil_label)
    check_pair(image, label, "to_tensor_pair")
    return image, label


# --------------------------------------------------------------------------- transforms


class Compose:
    """Apply joint transforms in order."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, image, label):
        for t in self.transforms:
            image, label = t(image, label)
        return image, label

    def __repr__(self):
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"


def resize_pair(image: torch.Tensor, label: torch.Tensor, size: tuple[int, int]):
    """Resize to ``size = (H, W)``: image bilinear (antialiased when shrinking), label nearest."""
    check_pair(image, label, "resize")
    size = _size2(size, "resize")
    if tuple(image.shape[-2:]) == size:
        return image, label
    img = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False,
                        antialias=True)[0]
    # "nearest-exact" samples pixel centres (like PIL's NEAREST); plain "nearest" is
    # shifted by half a pixel. Labels go through float: exact for ids < 2**24.
    lbl = F.interpolate(label[None, None].float(), size=size, mode="nearest-exact")[0, 0]
    return img, lbl.to(label.dtype)


#: Resolutions used by the papers, as ``(H, W)`` (torch order; PIL sizes are (W, H)).
RESIZE_PRESETS: dict[str, tuple[int, int]] = {
    # AdaptSegNet / DAS3 / RIPU source images: GTA5 (native 1914x1052) resized to 1280x720.
    "gta5_source": (720, 1280),
    # SYNTHIA-RAND-CITYSCAPES (native 1280x760), used at native size by the DA papers.
    "synthia_source": (760, 1280),
    # AdaptSegNet / DAS3 target training: Cityscapes (native 2048x1024) at 1024x512.
    "cityscapes_target": (512, 1024),
    # RIPU target training: Cityscapes at 1280x640.
    "cityscapes_target_ripu": (640, 1280),
    # Evaluation: predictions are compared with the full-resolution 2048x1024 labels.
    "cityscapes_eval": (1024, 2048),
}


class Resize:
    """Resize to a fixed ``(H, W)``, an int (square), or a preset name of
    :data:`RESIZE_PRESETS` (e.g. ``"cityscapes_target"`` = (512, 1024))."""

    def __init__(self, size):
        if isinstance(size, str):
            if size not in RESIZE_PRESETS:
                raise ValueError(f"unknown resize preset {size!r}; known: {sorted(RESIZE_PRESETS)}")
            size = RESIZE_PRESETS[size]
        self.size = _size2(size, "Resize")

    def __call__(self, image, label):
        return resize_pair(image, label, self.size)

    def __repr__(self):
        return f"Resize(size={self.size})"


class RandomScale:
    """Resize by a factor drawn uniformly from ``[min_scale, max_scale]`` (both sides)."""

    def __init__(self, min_scale: float = 0.5, max_scale: float = 2.0,
                 generator: torch.Generator | None = None):
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"RandomScale: need 0 < min_scale <= max_scale, got "
                             f"{min_scale}, {max_scale}")
        self.min_scale, self.max_scale, self.generator = float(min_scale), float(max_scale), generator

    def __call__(self, image, label):
        check_pair(image, label, "RandomScale")
        s = self.min_scale + (self.max_scale - self.min_scale) * _uniform(self.generator)
        h, w = image.shape[-2:]
        return resize_pair(image, label, (max(1, round(h * s)), max(1, round(w * s))))

    def __repr__(self):
        return f"RandomScale({self.min_scale}, {self.max_scale})"


class RandomCrop:
    """Crop a random ``(H, W)`` window. A side smaller than the crop is first padded at
    the bottom/right: image with ``pad_image`` (0), label with ``pad_label`` (255)."""

    def __init__(self, size, pad_label: int = IGNORE_INDEX, pad_image: float = 0.0,
                 generator: torch.Generator | None = None):
        self.size = _size2(size, "RandomCrop")
        self.pad_label, self.pad_image, self.generator = int(pad_label), float(pad_image), generator

    def __call__(self, image, label):
        check_pair(image, label, "RandomCrop")
        ch, cw = self.size
        h, w = image.shape[-2:]
        if h < ch or w < cw:
            ph, pw = max(0, ch - h), max(0, cw - w)
            image = F.pad(image, (0, pw, 0, ph), value=self.pad_image)
            label = F.pad(label, (0, pw, 0, ph), value=self.pad_label)
            h, w = image.shape[-2:]
        top = _randint(h - ch, self.generator)
        left = _randint(w - cw, self.generator)
        return image[:, top:top + ch, left:left + cw], label[top:top + ch, left:left + cw]

    def __repr__(self):
        return f"RandomCrop(size={self.size}, pad_label={self.pad_label})"


class RandomHorizontalFlip:
    """Mirror image and label left-right with probability ``p``."""

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p, self.generator = float(p), generator

    def __call__(self, image, label):
        check_pair(image, label, "RandomHorizontalFlip")
        if _uniform(self.generator) < self.p:
            return image.flip(-1), label.flip(-1)
        return image, label

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class ColorJitter:
    """Photometric jitter of the image only (label untouched), result clamped to [0, 1].

    Factors are drawn uniformly from ``[1 - x, 1 + x]`` for brightness (multiply),
    contrast (blend with the mean gray level) and saturation (blend with the gray
    image), applied in that order.
    """

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0,
                 generator: torch.Generator | None = None):
        for name, v in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"ColorJitter: {name} must be in [0, 1], got {v}")
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation
        self.generator = generator

    def _factor(self, x: float) -> float:
        return 1.0 + x * (2.0 * _uniform(self.generator) - 1.0) if x > 0 else 1.0

    def __call__(self, image, label):
        check_pair(image, label, "ColorJitter")
        out = image * self._factor(self.brightness)
        gray = (0.299 * out[0] + 0.587 * out[1] + 0.114 * out[2])[None]
        c = self._factor(self.contrast)
        out = c * out + (1.0 - c) * gray.mean()
        gray = (0.299 * out[0] + 0.587 * out[1] + 0.114 * out[2])[None]
        s = self._factor(self.saturation)
        out = s * out + (1.0 - s) * gray
        return out.clamp_(0.0, 1.0), label

    def __repr__(self):
        return (f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
                f"saturation={self.saturation})")


def _gaussian_kernel(sigma: float, size: int) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def strong_augment(images: torch.Tensor, generator: torch.Generator | None = None, jitter: float = 0.2,
                   jitter_prob: float = 0.8, blur_prob: float = 0.5) -> torch.Tensor:
    """DACS-style strong photometric augmentation of a batch ``[B,3,H,W]`` in [0, 1] (labels
    untouched: nothing moves).

    One draw per call decides whether the batch is colour-jittered (probability
    ``jitter_prob``) and one whether it is blurred (``blur_prob``), as in the authors'
    code. Jitter factors are drawn per image: brightness, contrast and saturation in
    ``[1 - jitter, 1 + jitter]``, hue rotated by up to ``jitter`` of a turn (a rotation
    about the gray axis in YIQ space). Blur: a Gaussian with ``sigma ~ U(0.15, 1.15)``
    and a kernel about a tenth of each side (odd), reflect-padded.

    >>> x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    >>> y = strong_augment(x, torch.Generator().manual_seed(1), jitter_prob=1.0, blur_prob=1.0)
    >>> tuple(y.shape), bool(y.min() >= 0) and bool(y.max() <= 1), bool((y - x).abs().max() > 0)
    ((2, 3, 16, 16), True, True)
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"strong_augment expects images [B,3,H,W], got shape {tuple(images.shape)}")
    for name, v in (("jitter", jitter), ("jitter_prob", jitter_prob), ("blur_prob", blur_prob)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"strong_augment: {name} must be in [0, 1], got {v}")
    g = generator
    out = images.float()
    b = out.shape[0]
    u = torch.rand(2, generator=g)
    if jitter > 0 and u[0] < jitter_prob:
        f = (1.0 + jitter * (2.0 * torch.rand(b, 3, generator=g) - 1.0)).to(out.device)   # brightness, contrast, sat.
        hue = (2.0 * math.pi * jitter * (2.0 * torch.rand(b, generator=g) - 1.0)).to(out.device)
        lum = torch.tensor([0.299, 0.587, 0.114], device=out.device).view(1, 3, 1, 1)
        out = (out * f[:, 0].view(b, 1, 1, 1)).clamp(0, 1)
        gray_mean = (out * lum).sum(1, keepdim=True).mean((2, 3), keepdim=True)
        out = (f[:, 1].view(b, 1, 1, 1) * out + (1 - f[:, 1].view(b, 1, 1, 1)) * gray_mean).clamp(0, 1)
        gray = (out * lum).sum(1, keepdim=True)
        out = (f[:, 2].view(b, 1, 1, 1) * out + (1 - f[:, 2].view(b, 1, 1, 1)) * gray).clamp(0, 1)
        to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                              device=out.device)
        yiq = torch.einsum("ij,bjhw->bihw", to_yiq, out)
        c, s_ = torch.cos(hue).view(b, 1, 1), torch.sin(hue).view(b, 1, 1)
        i, q = yiq[:, 1], yiq[:, 2]
        yiq = torch.stack([yiq[:, 0], c * i - s_ * q, s_ * i + c * q], 1)
        out = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_yiq), yiq).clamp(0, 1)
    if u[1] < blur_prob:
        sigma = 0.15 + float(torch.rand(1, generator=g))
        h, w = out.shape[-2:]
        kh, kw = (max(3, 2 * (math.ceil(0.1 * n) // 2) + 1) for n in (h, w))
        ky = _gaussian_kernel(sigma, kh).to(out.device).view(1, 1, kh, 1).expand(3, 1, kh, 1)
        kx = _gaussian_kernel(sigma, kw).to(out.device).view(1, 1, 1, kw).expand(3, 1, 1, kw)
        out = F.pad(out, (0, 0, kh // 2, kh // 2), mode="reflect" if h > kh // 2 else "replicate")
        out = F.conv2d(out, ky, groups=3)
        out = F.pad(out, (kw // 2, kw // 2, 0, 0), mode="reflect" if w > kw // 2 else "replicate")
        out = F.conv2d(out, kx, groups=3)
    return out.to(images.dtype)
