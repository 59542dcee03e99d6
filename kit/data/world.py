"""The toy world: procedural street scenes with per-pixel labels, rendered on the fly.

Every image is a pure function of ``(domain, split, index)`` and the output size:
all randomness comes from a counter-based integer hash (:func:`hash_uniform`), so an
image does not depend on which other images are rendered with it, on the batch size,
or on the device. Rendering is vectorized over a batch of images in torch and runs on
CPU or GPU.

Scenes share one geometry -- sky, a street that runs to a vanishing point, sidewalks,
optional terrain strips, building facades on both sides, and objects standing on the
ground (cars on the road; people, poles with signs, trees and bicycles on the
sidewalk), drawn far-to-near -- while each domain has its own *appearance* (palette,
texture, blur, sensor noise, lighting) and *layout statistics* (horizon height, road
width, object counts and sizes). That is the situation the domain-adaptation papers
address: the same kind of scene, seen through another renderer or camera.

Label space: ``WORLD_CLASSES`` is a named subset of the Cityscapes 19 classes. Each
domain maps it onto its own label space (``DomainSpec.classes``): the SYNTHIA-like
domain has no terrain; the "cities" used for cross-dataset learning differ in
appearance and one of them merges classes, as CamVid does with respect to Cityscapes.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .labels import CITYSCAPES_CLASSES, IGNORE_INDEX

__all__ = [
    "WORLD_CLASSES", "LARGE_CLASSES", "SMALL_CLASSES", "DomainSpec", "DOMAINS",
    "get_domain", "class_index", "hash_uniform", "render", "render_uint8", "ToyWorld", "world_pair",
]

# ----------------------------------------------------------------------------------
# Label space
# ----------------------------------------------------------------------------------
WORLD_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "pole", "traffic sign", "vegetation",
    "terrain", "sky", "person", "car", "bicycle",
)
#: the Cityscapes train id of each world class (to compare with real-data tables)
WORLD_TO_CITYSCAPES: tuple[int, ...] = tuple(CITYSCAPES_CLASSES.index(c) for c in WORLD_CLASSES)
LARGE_CLASSES = ("road", "sidewalk", "building", "vegetation", "sky")
SMALL_CLASSES = ("pole", "traffic sign", "person", "bicycle")

ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEG, TERRAIN, SKY, PERSON, CAR, BICYCLE = range(11)


def class_index(name: str, classes: Sequence[str] = WORLD_CLASSES) -> int:
    """Index of a class name in a label space; a clear error for unknown names."""
    try:
        return list(classes).index(name)
    except ValueError:
        raise ValueError(f"unknown class {name!r}; expected one of {list(classes)}") from None


# ----------------------------------------------------------------------------------
# Counter-based randomness
# ----------------------------------------------------------------------------------
_M32 = 0xFFFFFFFF


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer avalanche hash (lowbias32), on int64 tensors holding uint32 values.

    Products may wrap around int64, but only their low 32 bits are kept, which are exact.
    """
    x = x & _M32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    x = x ^ (x >> 16)
    return x


def hash_uniform(*keys: torch.Tensor | int) -> torch.Tensor:
    """Uniform numbers in [0, 1) that are a deterministic function of integer keys.

    Keys broadcast against each other; the result has their broadcast shape, float32.
    ``hash_uniform(seed, index, slot)`` is the same number on every device and in every
    batch composition, which is what makes the world reproducible.
    """
    h = None
    for k in keys:
        k = torch.as_tensor(k, dtype=torch.int64)
        if h is None:
            h = _mix(k + 0x9E3779B9)
        else:
            h = _mix(h ^ ((k.to(h.device) * 0x85EBCA6B + 0x68E31DA4) & _M32))
    assert h is not None
    # 24 random bits -> exactly representable in float32
    return (h >> 8).to(torch.float32) / float(1 << 24)


# ----------------------------------------------------------------------------------
# Domains
# ----------------------------------------------------------------------------------
def _rgb(*hexes: str) -> tuple[tuple[float, float, float], ...]:
    return tuple(tuple(int(h[i:i + 2], 16) / 255.0 for i in (1, 3, 5)) for h in hexes)  # type: ignore[misc]


@dataclass(frozen=True)
class DomainSpec:
    """Everything that distinguishes one domain of the toy world from another.

    Appearance: ``palette`` (one RGB colour per world class), ``color_jitter`` (per
    image and per instance), ``texture`` (amplitude of value-noise texture),
    ``blur`` (Gaussian sigma in pixels at 256 px image height), ``noise`` (sensor
    noise std), ``light`` (range of global brightness), ``saturation``.
    Layout: ``horizon`` (range of the horizon's height, fraction of image height),
    ``road_width`` (half-width of the road at the bottom row, fraction of width),
    ``counts`` (expected number of objects of each kind), ``object_scale``,
    ``terrain_prob``.
    Labels: ``classes`` is this domain's label space, ``label_of`` maps each world
    class to a name in it (``None`` = not labelled, 255).
    """

    name: str
    seed: int
    palette: tuple[tuple[float, float, float], ...]
    color_jitter: float = 0.06
    texture: float = 0.0
    blur: float = 0.0
    noise: float = 0.01
    light: tuple[float, float] = (0.95, 1.05)
    saturation: float = 1.0
    horizon: tuple[float, float] = (0.38, 0.48)
    road_width: tuple[float, float] = (0.28, 0.40)
    counts: dict[str, float] = field(default_factory=dict)
    object_scale: float = 1.0
    terrain_prob: float = 0.4
    shadows: float = 0.0
    label_of: dict[str, str | None] = field(default_factory=dict)
    train_size: int = 2000
    val_size: int = 500
    description: str = ""

    @property
    def classes(self) -> tuple[str, ...]:
        """The domain's label space, in world-class order (merged classes once)."""
        out: list[str] = []
        for c in WORLD_CLASSES:
            t = self.label_of.get(c, c)
            if t is not None and t not in out:
                out.append(t)
        return tuple(out)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def label_lut(self) -> torch.Tensor:
        """int64 lookup table: world class id -> this domain's label id (255 = ignore)."""
        classes = self.classes
        lut = []
        for c in WORLD_CLASSES:
            t = self.label_of.get(c, c)
            lut.append(IGNORE_INDEX if t is None else classes.index(t))
        return torch.tensor(lut, dtype=torch.int64)


_DEFAULT_COUNTS = {"car": 3.0, "person": 1.5, "pole": 2.5, "sign": 0.5, "tree": 2.0, "bicycle": 0.5}

# The GTA-like source: clean, flat, saturated; many cars, few people.
_SYNTHETIC = DomainSpec(
    name="synthetic", seed=11,
    palette=_rgb("#5a4a6e", "#d24ce0", "#a0644a", "#f0f040", "#ff2020", "#20c020",
                 "#b0e060", "#40a0ff", "#ff6040", "#1030e0", "#ff20a0"),
    color_jitter=0.05, texture=0.04, blur=0.0, noise=0.006, light=(0.95, 1.05),
    saturation=1.15, horizon=(0.40, 0.50), road_width=(0.30, 0.42),
    counts={"car": 4.0, "person": 1.0, "pole": 2.5, "sign": 0.6, "tree": 1.5, "bicycle": 0.3},
    object_scale=1.1, terrain_prob=0.3, shadows=0.0,
    description="GTA-like source: flat saturated colours, sharp, many cars, few people",
)

# The Cityscapes-like target: textured, noisy, blurred, varied light, muted palette,
# lower horizon band, narrower streets, more people, bicycles and vegetation.
_REAL = DomainSpec(
    name="real", seed=23,
    palette=_rgb("#6a6470", "#a880a8", "#8a6e60", "#b0b070", "#d84848", "#4a8a40",
                 "#98b060", "#a8c8e8", "#b06050", "#344a90", "#b04880"),
    color_jitter=0.10, texture=0.30, blur=1.2, noise=0.05, light=(0.65, 1.25),
    saturation=0.75, horizon=(0.32, 0.44), road_width=(0.24, 0.34),
    counts={"car": 2.5, "person": 2.5, "pole": 3.0, "sign": 0.8, "tree": 3.0, "bicycle": 1.2},
    object_scale=0.85, terrain_prob=0.5, shadows=0.35,
    description="Cityscapes-like target: muted palette, texture, blur, noise, varied light, more people",
)

# The SYNTHIA-like source: a higher camera (horizon near the top, objects seen from
# above and smaller), its own palette, and no terrain in the label space.
_SYNTHIA = DomainSpec(
    name="synthia", seed=37,
    palette=_rgb("#80708a", "#c070b0", "#b08050", "#e0e070", "#ff5050", "#50b050",
                 "#b0e060", "#70b0ff", "#ff8060", "#3050d0", "#e050b0"),
    color_jitter=0.08, texture=0.10, blur=0.4, noise=0.015, light=(0.85, 1.15),
    saturation=1.0, horizon=(0.18, 0.30), road_width=(0.36, 0.50),
    counts={"car": 3.0, "person": 2.0, "pole": 2.0, "sign": 0.5, "tree": 1.5, "bicycle": 0.6},
    object_scale=0.8, terrain_prob=0.0, shadows=0.1,
    label_of={"terrain": None},
    description="SYNTHIA-like source: high viewpoint, smaller objects, no terrain class",
)

# "Cities" for cross-dataset learning: labelled datasets with their own appearance
# (so their BN statistics differ) and label spaces.
_CITY_A = replace(
    _REAL, name="city_a", seed=101, light=(0.8, 1.1), noise=0.03, blur=0.8,
    description="city A (Cityscapes-like): full label space",
)
_CITY_B = replace(
    _REAL, name="city_b", seed=202,
    palette=_rgb("#505058", "#8a8690", "#6a625c", "#8c8c78", "#c09838", "#3c5a36",
                 "#7a8a52", "#9aa8b8", "#6a443c", "#2e3846", "#6a4058"),
    light=(0.45, 0.85), noise=0.07, blur=1.4, texture=0.35, horizon=(0.36, 0.48),
    counts={"car": 3.5, "person": 1.5, "pole": 2.0, "sign": 0.6, "tree": 2.0, "bicycle": 0.8},
    description="city B (BDD-like): darker, noisier, more cars, full label space",
)
_CITY_C = replace(
    _REAL, name="city_c", seed=303,
    palette=_rgb("#7a7068", "#b0a090", "#9a8468", "#a09a78", "#e0b848", "#5a7a3a",
                 "#90a058", "#e0dcd0", "#845446", "#4a4c50", "#84526a"),
    light=(0.9, 1.35), noise=0.04, blur=1.0, saturation=0.9, horizon=(0.30, 0.40),
    label_of={"terrain": "vegetation", "traffic sign": "pole", "bicycle": "person"},
    description="city C (CamVid-like): bright, warm; merges terrain->vegetation, sign->pole, bicycle->person",
)

DOMAINS: dict[str, DomainSpec] = {d.name: d for d in (_SYNTHETIC, _REAL, _SYNTHIA, _CITY_A, _CITY_B, _CITY_C)}
SPLITS = {"train": 0, "val": 1, "test": 2}
#: bump when the rendering code changes what an index renders to (invalidates cached models)
RENDER_VERSION = 7


def get_domain(domain: str | DomainSpec) -> DomainSpec:
    if isinstance(domain, DomainSpec):
        return domain
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {sorted(DOMAINS)}")
    return DOMAINS[domain]


# ----------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------
_MAX = {"car": 8, "person": 6, "pole": 6, "sign": 6, "tree": 6, "bicycle": 4}
_SHAPE_RECT, _SHAPE_ELLIPSE, _SHAPE_RING = 0, 1, 2

# A scene is first drawn as a map of *slots*: what each pixel shows, before the camera.
# Slots 0-4 are sky, terrain, sidewalk, road and the road's dashed centre line (the
# ground bands are nested, so a ground pixel's slot is the number of bands it lies in);
# then two slots (wall, window) for each of the facades, which sit side by side
# (_FACADES per side of the street); then one slot per object shape, in depth order, so
# that the nearest shape covering a pixel is simply the largest slot there. Each image
# has a small table of colours, classes and texture amplitudes per slot; pixels gather
# from it.
_FACADES = 13
_SLOT_DASH, _SLOT_FACADE = 4, 5
_N_BG = _SLOT_FACADE + 2 * 2 * _FACADES
_BG_CLASSES = (SKY, TERRAIN, SIDEWALK, ROAD, ROAD) + (BUILDING,) * (_N_BG - _SLOT_FACADE)
#: texture amplitude of each world class, relative to the domain's ``texture``
_TEXTURE_GAIN = tuple({SKY: 0.3, VEG: 1.6, ROAD: 0.8}.get(c, 1.0) for c in range(len(WORLD_CLASSES)))


class _Rand:
    """Per-image uniform numbers, addressed by consecutive slots (hashed in blocks)."""

    def __init__(self, seed: int, split: int, index: torch.Tensor, block: int = 256):
        """``block``: slots hashed at a time (the numbers do not depend on it; a block about
        the size of what the caller draws saves hashing slots that are never read)."""
        self.seed, self.split, self.index, self.block = seed, split, index, block
        self._next = 0
        self._u = torch.empty(index.shape[0], 0, device=index.device)

    def __call__(self, n: int | None = None) -> torch.Tensor:
        """[B] (n is None) or [B, n] uniforms; each call gets fresh slots."""
        lo, hi = self._next, self._next + (1 if n is None else n)
        have = self._u.shape[1]
        if hi > have:
            slots = torch.arange(have, max(hi, have + self.block), device=self.index.device)
            more = hash_uniform(self.seed, self.split, self.index[:, None], slots[None, :])
            self._u = torch.cat([self._u, more], dim=1)
        self._next = hi
        return self._u[:, lo] if n is None else self._u[:, lo:hi]


def _lerp(lo: float, hi: float, u: torch.Tensor) -> torch.Tensor:
    return lo + (hi - lo) * u


#: texture and noise crops come in blocks of consecutive image indices: inside a block, the
#: crop of image i lies at a fixed step from that of image i - 1, so that a run of
#: consecutive indices (what the datasets render) reads its crops as one strided view
#: instead of one small operation per image. Blocks hold up to 64 images, fewer at sizes
#: where an image is large enough that one operation per image costs nothing extra.
_CROP_PIXELS = 1 << 21


def _crop_block(H: int, W: int) -> int:
    return max(1, min(64, _CROP_PIXELS // (H * W)))


def _crop_runs(idx: torch.Tensor, K: int) -> tuple[list[int], list[int], list[int], torch.Tensor]:
    """Split a batch into runs of consecutive indices inside one block of ``K`` images.

    Returns the runs' first and end positions in the batch, the position of the run's
    first image inside its block (``i mod K``) and the block numbers (``i // K``) as a
    tensor, from which the callers hash each block's own offset."""
    B = idx.shape[0]
    q = torch.div(idx, K, rounding_mode="floor")
    cut = torch.ones(B, dtype=torch.bool, device=idx.device)
    cut[1:] = (idx[1:] != idx[:-1] + 1) | (q[1:] != q[:-1])
    first = cut.nonzero().view(-1)
    starts = first.tolist()
    return starts, starts[1:] + [B], (idx[first] - q[first] * K).tolist(), q[first]


_TEXTURES: dict[tuple, tuple[torch.Tensor, int]] = {}


def _texture_strip(seed: int, device: torch.device, H: int, W: int) -> tuple[torch.Tensor, int]:
    """Smooth value noise in [-1, 1] on a strip [(K + 1) Dy + H, 2W], Dy = ceil(H / 3): the
    mean of a coarse grid (cells of at most H/6 x W/12 pixels) and a fine one (H/24 x W/48),
    hashed from ``seed`` and upsampled bilinearly. In a block of K = :func:`_crop_block`
    images, image i reads the H x W crop ``(i mod K) Dy`` rows below the block's own hashed
    offset. Returns the strip and Dy."""
    key = (seed, str(device), H, W)
    if key not in _TEXTURES:
        K, Dy = _crop_block(H, W), -(-H // 3)
        rows = (K + 1) * Dy + H
        gh = -(-rows * 6 // H)

        def grid(salt, gh, gw):
            yy = torch.arange(gh + 1, device=device)[:, None]
            xx = torch.arange(gw + 1, device=device)[None, :]
            return (hash_uniform(seed, salt, yy * 4099 + xx) * 2 - 1)[None, None]

        fine = grid(2, 4 * gh, 96)
        coarse = F.interpolate(grid(1, gh, 24), size=fine.shape[-2:], mode="bilinear", align_corners=True)
        tile = F.interpolate((coarse + fine) * 0.5, size=(rows, 2 * W), mode="bilinear", align_corners=True)
        if len(_TEXTURES) >= 8:     # one per domain at one size; about 28 MB each at 1024x2048
            _TEXTURES.pop(next(iter(_TEXTURES)))
        _TEXTURES[key] = (tile[0, 0].contiguous(), Dy)
    return _TEXTURES[key]


_TILES: dict[tuple, tuple[torch.Tensor, int, int]] = {}
_SCALED_TILES: dict[tuple, tuple[torch.Tensor, int, int]] = {}


def _noise_strip(device: torch.device, H: int, W: int, amplitude: float) -> tuple[torch.Tensor, int, int]:
    """Noise of standard deviation ``amplitude`` plus 0.5 (the rounding offset of
    :func:`_render`), independent per element (triangular distribution), on a flat strip.

    A noise plane is an H x W window with row stride ``Ws = W + 13``; the planes of a block
    of K = :func:`_crop_block` images (3 per image, one per channel) follow each other at a
    step ``Q = 37 Ws + 211`` elements (about 37 rows: planes overlap only shifted, never
    pixel on pixel), after the block's own hashed offset below ``3 Q``. Returns the strip,
    Ws and Q."""
    key = (str(device), H, W)
    skey = key + (amplitude,)
    if skey in _SCALED_TILES:
        return _SCALED_TILES[skey]
    if key not in _TILES:
        K, Ws = _crop_block(H, W), W + 13
        Q = 37 * Ws + 211
        k = torch.arange(3 * Q + 3 * K * Q + H * Ws, device=device)
        u = hash_uniform(7919, k) + hash_uniform(104729, k) - 1.0
        if len(_TILES) >= 4:
            _TILES.pop(next(iter(_TILES)))
        _TILES[key] = (u.mul_(math.sqrt(6.0)), Ws, Q)                 # var(u1 + u2 - 1) = 1/6
    unit, Ws, Q = _TILES[key]
    if len(_SCALED_TILES) >= 8:     # one per domain at one size: about 5 MB each
        _SCALED_TILES.pop(next(iter(_SCALED_TILES)))
    _SCALED_TILES[skey] = (unit * amplitude + 0.5, Ws, Q)
    return _SCALED_TILES[skey]


def _gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of images [B,C,H,W] along H and W.

    Kernels that keep more than 99% of each pixel (sigma below about 0.33 px) are skipped.

    Zero-padded and renormalised by the weight that fell inside the image, so borders keep
    their brightness (a normalised convolution). Written as shifted in-place adds, which on
    CPU is many times faster than a depthwise convolution with these small kernels.
    """
    if sigma <= 0:
        return img
    r = max(1, int(math.ceil(2.5 * sigma)))
    k = [math.exp(-0.5 * (d / sigma) ** 2) for d in range(-r, r + 1)]
    s = sum(k)
    k = [v / s for v in k]
    if k[r] > 0.99:     # keeps over 99% of every pixel: below what the eye or uint8 storage sees
        return img
    for dim in (2, 3):
        n = img.shape[dim]
        out = img * k[r]
        for j in range(1, min(r, n - 1) + 1):
            out.narrow(dim, j, n - j).add_(img.narrow(dim, 0, n - j), alpha=k[r - j])
            out.narrow(dim, 0, n - j).add_(img.narrow(dim, j, n - j), alpha=k[r + j])
        def renorm(positions):
            """1 / (kernel weight that falls inside the image) at these positions, shaped along dim."""
            w = [1 / sum(k[r + d] for d in range(-r, r + 1) if 0 <= i + d < n) for i in positions]
            shape = [1, 1, 1, 1]
            shape[dim] = len(w)
            return torch.tensor(w, dtype=img.dtype, device=img.device).view(shape)

        if n > 2 * r:   # only the first and last r positions lost weight
            out.narrow(dim, 0, r).mul_(renorm(range(r)))
            out.narrow(dim, n - r, r).mul_(renorm(range(n - r, n)))
        else:
            out.mul_(renorm(range(n)))
        img = out
    return img


def _check_render_args(domain, index, size, split, device):
    spec = get_domain(domain)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    try:
        H, W = (int(size[0]), int(size[1]))
    except (TypeError, IndexError, ValueError):
        raise ValueError(f"size must be (H, W) integers, got {size!r}") from None
    if H < 16 or W < 16:
        raise ValueError(f"size must be at least 16x16, got {H}x{W}")
    if isinstance(index, torch.Tensor):
        dev = torch.device(device) if device is not None else index.device
        idx = index.to(dev, torch.int64).reshape(-1)
    else:
        dev = torch.device(device) if device is not None else torch.device("cpu")
        idx = torch.as_tensor([index] if isinstance(index, int) else list(index), dtype=torch.int64, device=dev)
    if idx.numel() and int(idx.min()) < 0:
        raise ValueError("image indices must be >= 0")
    return spec, SPLITS[split], idx, H, W


@torch.no_grad()
def render(domain: str | DomainSpec, index: torch.Tensor | Sequence[int] | int, size: tuple[int, int] = (64, 128),
           split: str = "train", device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Render images and labels of a domain.

    Args:
        domain: a name in :data:`DOMAINS` or a :class:`DomainSpec`.
        index: image indices (int, sequence or 1-D int tensor), any values >= 0.
        size: output ``(H, W)``; any size >= 16x16. Scenes are defined in normalized
            coordinates, so the same index gives the same scene at every resolution.
        split: "train", "val" or "test" (each split is its own stream of scenes).
        device: where to render (default: the index tensor's device, else CPU).

    Returns:
        ``images`` float32 [B,3,H,W] in [0,1] and ``labels`` int64 [B,H,W] in the
        domain's label space (255 = ignore).
    """
    spec, split_id, idx, H, W = _check_render_args(domain, index, size, split, device)
    return _render_chunked(spec, split_id, idx, H, W, quantize=False)


@torch.no_grad()
def render_uint8(domain: str | DomainSpec, index: torch.Tensor | Sequence[int] | int,
                 size: tuple[int, int] = (64, 128), split: str = "train",
                 device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`render` quantized for storage: ``images`` uint8 [B,3,H,W] (``round(255 x)``) and
    ``labels`` uint8 [B,H,W]. What :class:`ToyWorld` keeps in memory."""
    spec, split_id, idx, H, W = _check_render_args(domain, index, size, split, device)
    return _render_chunked(spec, split_id, idx, H, W, quantize=True)


_WORK = threading.local()


def _workspace(name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A scratch tensor kept between calls (per thread). Large tensors allocated afresh on
    every call cost the CPU a page fault per 4 kB the first time they are written, which
    was a third of the renderer's time; the caller copies out of it before returning."""
    bufs = getattr(_WORK, "bufs", None)
    if bufs is None:
        bufs = _WORK.bufs = {}
    key = (name, str(device), dtype)
    buf = bufs.get(key)
    n = math.prod(shape)
    if buf is None or buf.numel() < n:
        buf = bufs[key] = torch.empty(n, dtype=dtype, device=device)
    return buf[:n].view(shape)


#: images per internal batch on CPU: about 2^21 pixels, so that the working set stays in cache
_CHUNK_PIXELS = 1 << 21


def _render_chunked(spec: DomainSpec, split: int, idx: torch.Tensor, H: int, W: int, quantize: bool):
    B = idx.shape[0]
    dev = idx.device
    images = torch.empty(B, 3, H, W, dtype=torch.uint8 if quantize else torch.float32, device=dev)
    labels = torch.empty(B, H, W, dtype=torch.uint8 if quantize else torch.int64, device=dev)
    step = max(B, 1) if dev.type != "cpu" else max(1, _CHUNK_PIXELS // (H * W))
    for lo in range(0, B, step):
        img = _render(spec, split, idx[lo:lo + step], H, W, labels[lo:lo + step])
        if quantize:    # img holds 255 x + 0.5, which the cast truncates: round(255 x)
            img.clamp_(0, 255.5)
        else:
            img.sub_(0.5).clamp_(0, 255).mul_(1 / 255)
        images[lo:lo + step] = img.permute(1, 0, 2, 3)
    return images, labels


def _render(spec: DomainSpec, split: int, idx: torch.Tensor, H: int, W: int, labels: torch.Tensor) -> torch.Tensor:
    """Images as float [3,B,H,W] (channel-major, a scratch buffer: copy it before the next
    call) holding ``255 x + 0.5`` of the image x in [0, 1], not yet clipped; the labels are
    written into ``labels`` [B,H,W] (contiguous)."""
    B = idx.shape[0]
    slot, colors, classes = _scene(spec, split, idx, H, W)
    cam = _camera(spec, split, idx)
    S = colors.shape[1]
    # one flat index into the per-image slot tables serves colours, texture and labels
    dev = idx.device
    flat = _workspace("flat", (B, H, W), torch.int32, dev)
    flat.copy_(slot).add_((torch.arange(B, dtype=torch.int32, device=dev) * S).view(B, 1, 1))
    flat = flat.view(-1)
    colors = torch.bmm(colors, cam["color"])                   # gain, colour cast and saturation
    planes = colors.permute(2, 0, 1).reshape(3, -1)             # [3, B * S]
    rgb = _workspace("rgb", (3, B, H, W), torch.float32, dev)   # channel-major while it is worked on
    for c in range(3):
        torch.index_select(planes[c], 0, flat, out=rgb[c].view(-1))
    gain = torch.tensor(_TEXTURE_GAIN, device=idx.device)[classes] * spec.texture          # [B,S]
    amp = _workspace("amp", (B, H, W), torch.float32, dev)
    torch.index_select(gain.reshape(-1), 0, flat, out=amp.view(-1))
    image = _appearance(spec, split, idx, cam, rgb, amp, H, W)
    lut = spec.label_lut().to(idx.device, labels.dtype)[classes]                              # [B,S]
    torch.index_select(lut.reshape(-1), 0, flat, out=labels.view(-1))
    return image


def _scene(spec: DomainSpec, split: int, idx: torch.Tensor, H: int, W: int):
    """Scene geometry: the slot map [B,H,W] (uint8) and per-image slot tables of base colour
    [B,S,3] and world class [B,S]."""
    dev = idx.device
    B = idx.shape[0]
    R = _Rand(spec.seed, split, idx, block=320)      # a scene draws 301 numbers
    aspect = W / H
    ys = ((torch.arange(H, device=dev, dtype=torch.float32) + 0.5) / H).view(1, H, 1)
    xs = ((torch.arange(W, device=dev, dtype=torch.float32) + 0.5) / W).view(1, 1, W)
    col = lambda t: t.view(B, 1, 1)  # noqa: E731

    # --- global layout -------------------------------------------------------------
    yh = _lerp(*spec.horizon, R())
    xv = _lerp(0.38, 0.62, R())
    road_w = _lerp(*spec.road_width, R())
    side_w = _lerp(0.25, 0.5, R())
    terr_w = _lerp(0.25, 0.6, R())
    terr_l = R() < spec.terrain_prob
    terr_r = R() < spec.terrain_prob
    curve = _lerp(-0.12, 0.12, R())
    gap = _lerp(0.02, 0.08, R())
    seg_w = _lerp(0.05, 0.12, R())

    # per row: ground depth t in (0, 1], the street centre and the band half-widths; rows
    # above the horizon get negative widths, so no pixel there falls inside a band
    t = ((ys - col(yh)) / (1 - col(yh))).clamp(min=0)                  # [B,H,1]
    center = col(xv) + col(curve) * (1 - t) ** 2
    below = ys > col(yh)
    rw = torch.where(below, col(road_w) * t, -1.0)                     # road half width
    walk = torch.where(below, rw * (1 + col(side_w)), -1.0)
    terr = rw * (1 + col(side_w) + col(terr_w))
    terr_left = torch.where(below, torch.where(col(terr_l), terr, walk), -1.0)
    terr_right = torch.where(below, torch.where(col(terr_r), terr, walk), -1.0)
    dashed = below & (torch.sin(2 * math.pi * 2.0 / (t + 0.05)) > 0)
    dash = torch.where(dashed, 0.012 * t, -1.0)
    # per column: facades with piecewise-constant heights, taller towards the image edges
    ax_v = (xs - col(xv)).abs()                                         # [B,1,W]
    seg = torch.floor(ax_v / col(seg_w)).to(torch.int64).clamp(max=_FACADES - 1)
    facade = seg * 2 + (xs > col(xv)).to(torch.int64)                  # which facade, [B,1,W]
    hseg = hash_uniform(spec.seed, split, col(idx), facade)
    y_top = col(yh) - (0.12 + 1.5 * ax_v) * (0.25 + 0.75 * hseg)
    y_top = torch.where(ax_v < col(gap), col(yh), y_top)

    # ground bands as runs of columns per row: pixel x lies in a band of half-width w
    # around c when |(x + 0.5) / W - c| < w. Runs are added up with events and a
    # cumulative sum: +-16 for the terrain band, +-1 for sidewalk, road and dash.
    u8 = torch.uint8
    left = torch.cat([terr_left, walk, rw, dash], dim=2)               # [B,H,4]
    right = torch.cat([terr_right, walk, rw, dash], dim=2)
    first = (torch.floor((center - left) * W - 0.5) + 1).clamp(0, W).long()
    stop = torch.maximum(torch.ceil((center + right) * W - 0.5).clamp(0, W).long(), first)
    weight = torch.tensor([16, 1, 1, 1], dtype=u8, device=dev).expand(B, H, 4)
    events = torch.zeros(B, H, W + 1, dtype=u8, device=dev)
    events.scatter_add_(2, first, weight).scatter_add_(2, stop, weight.neg())    # uint8 wraps: -w = 256 - w
    bands = events.cumsum(2, dtype=u8)[..., :W]
    ground = bands >> 4                                                  # 1 inside the terrain band
    # facade slots: wall or window, below the facade top
    win_x = (torch.sin(2 * math.pi * (xs - col(xv)) / col(seg_w) * 3) > 0.2).to(u8)
    floors = 15 + 25 * hash_uniform(spec.seed, split + 11, col(idx))            # window rows per image height
    win_y = (torch.sin((2 * math.pi) * ys * floors) > 0.1).to(u8)
    wall = (_SLOT_FACADE + 2 * facade).to(u8)
    # built below the facade top: row y > floor(y_top H - 0.5), i.e. (y + 0.5) / H > y_top; as
    # integer arithmetic (comparisons producing bool are many times slower on CPU)
    rows = torch.arange(H, device=dev, dtype=torch.int16).view(1, H, 1)
    top = torch.floor(y_top * H - 0.5).clamp_(-1, H).to(torch.int16)
    built = (rows - top).clamp_(0, 1).to(u8)
    slot = (1 - ground) * built * (wall + win_y * win_x) + ground * (1 + (bands & 15))

    # --- objects, painted over the background in depth order ---------------------------
    pal = torch.tensor(spec.palette, dtype=torch.float32, device=dev)          # [11,3]
    img_jit = (R(3) - 0.5) * 2 * spec.color_jitter                              # [B,3]
    groups = _objects(spec, R, B, yh, xv, curve, road_w, side_w, aspect, dev)
    shapes = _shapes(groups)
    _paint(slot, shapes, H, W)

    # --- slot tables -------------------------------------------------------------------
    cls, ocol, order = shapes[0], shapes[6], shapes[8]
    bg = pal[list(_BG_CLASSES)].unsqueeze(0) + img_jit.unsqueeze(1)            # [B,S_bg,3]
    bg[:, _SLOT_DASH] = 0.92
    # each facade its own shade; windows darker
    k = torch.arange(2 * _FACADES, device=dev)
    shade = 1 + (hash_uniform(spec.seed, split + 7, idx[:, None], k) - 0.5) * 0.35          # [B,2F]
    shade = torch.stack([shade, shade * 0.6], dim=2).view(B, -1, 1)
    bg[:, _SLOT_FACADE:] *= shade
    colors = torch.cat([bg, torch.gather(ocol, 1, order.unsqueeze(-1).expand(-1, -1, 3))], dim=1)
    classes = torch.cat([torch.tensor(_BG_CLASSES, device=dev).expand(B, -1), torch.gather(cls, 1, order)], dim=1)
    return slot, colors, classes


def _shapes(groups):
    """Concatenate shape groups; rank shapes by depth per image (1 = farthest, 0 = absent)."""
    cls, depth, cx, cy, hw, hh, kind, ocol = (torch.cat([g[i] for g in groups], dim=1) for i in range(8))
    present = cx > -5
    B, N = cls.shape
    order = torch.argsort(depth.masked_fill(~present, -1e9), dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(1, N + 1, device=cls.device).expand(B, N))
    rank = torch.where(present, rank, 0)
    return cls, cx, cy, hw, hh, kind, ocol, present, order, rank


def _shape_params(cx, cy, hw, hh, kind, H, W):
    """Per shape, what :func:`_row_runs` needs, stacked on a new first dim: ``1 / (H hh)``,
    ``(0.5 / H - cy) / hh`` (so that ``ry a + b = ((ry + 0.5) / H - cy) / hh`` on pixel row
    ``ry``), ``hw W``, ``cx W - 0.5`` (the centre in pixel units), is-ring, is-rectangle."""
    return torch.stack([1 / (H * hh), (0.5 / H - cy) / hh, hw * W, cx * W - 0.5,
                        (kind == _SHAPE_RING).to(cx.dtype), (kind == _SHAPE_RECT).to(cx.dtype)])


def _row_runs(ry, a, b, hw, c, ring, rect):
    """Per shape and pixel row ``ry`` (float): the columns the shape covers, as ``[lo, hi)``
    less a hole ``[hole_lo, hole_hi)`` (empty except for rings), four float tensors.

    With ``e = ((y - cy) / hh)^2`` on the row, a pixel x is covered when
    ``hin <= |(x + 0.5) / W - cx| < hout``: rectangles have ``hout = hw`` on rows with
    e < 1, ellipses ``hw sqrt(1 - e)``, rings are ellipses less an inner ellipse
    ``hin = hw sqrt(0.2 - e)``. In pixel units, with ``c = cx W - 0.5``, that is
    ``c - hout W < x < c + hout W`` outside ``|x - c| < hin W``. The arguments are the
    rows of :func:`_shape_params`.
    """
    e = torch.addcmul(b, ry, a).square_()
    t = (1 - e).clamp_(min=0)
    hout = t.sqrt()
    hout = torch.lerp(hout, hout.ceil(), rect).mul_(hw)                 # rectangles: 1 where e < 1
    hin = (t - 0.8).clamp_(min=0).sqrt_().mul_(ring).mul_(hw)         # sqrt(0.2 - e), rings only
    return (c - hout).floor_().add_(1), (c + hout).ceil_(), (c - hin).floor_().add_(1), (c + hin).ceil_()


def _paint_dense(slot, shapes, H, W):
    """Reference painter: every shape tested at every pixel (O(B*N*H*W)); used by the tests."""
    cls, cx, cy, hw, hh, kind, ocol, present, order, rank = shapes
    dev = slot.device
    ry = torch.arange(H, device=dev, dtype=torch.float32)
    params = _shape_params(cx, cy, hw, hh, kind, H, W)[..., None]                      # [6,B,N,1]
    lo, hi, hole_lo, hole_hi = (t[..., None] for t in _row_runs(ry, *params))          # [B,N,H,1]
    x = torch.arange(W, device=dev)
    inside = (x >= lo) & (x < hi) & ~((x >= hole_lo) & (x < hole_hi))     # [B,N,H,W]
    inside &= present[..., None, None]
    top = (inside.to(torch.uint8) * (rank + _N_BG - 1).to(torch.uint8)[..., None, None]).amax(dim=1)
    return torch.maximum(slot, top)


def _paint(slot, shapes, H, W):
    """Painter's algorithm, vectorized: the nearest covering shape wins each pixel (in place).

    Only the rows of each present shape's bounding box are rasterized, each on a run of
    pixels as wide as the box (rounded up to a power of two, so that runs of similar width
    share one tensor). A row's covered columns are written as events (+slot where its run
    starts, -slot where it ends, the other way round for a ring's hole) and summed along
    the run; the slots are merged into the map with a scatter-max. Equals
    :func:`_paint_dense` at a small fraction of the cost.
    """
    _, cx, cy, hw, hh, kind, _, present, _, rank = shapes
    bi, ni = present.nonzero(as_tuple=True)
    if bi.numel() == 0:
        return slot
    dev = slot.device
    f = torch.stack([cx, cy, hw, hh], dim=-1)[bi, ni]                            # [M,4]
    kind, val = kind[bi, ni], (rank[bi, ni] + _N_BG - 1).to(torch.uint8)
    # pixels p whose centre (p + 0.5) / size can lie inside the box, one to spare, in the image
    size = f.new_tensor([W, H])
    lo = (torch.floor((f[:, :2] - f[:, 2:]) * size - 0.5) - 1).clamp(min=0)
    hi = torch.minimum((torch.ceil((f[:, :2] + f[:, 2:]) * size - 0.5) + 1).clamp(min=0), size - 1)
    lo = torch.minimum(lo, hi)
    lw = torch.ceil(torch.log2(hi[:, 0] - lo[:, 0] + 1)).long()
    lw, by_width = torch.sort(lw, stable=True)
    run_w = (1 << lw).clamp(max=W)
    bi, f, kind, val, lo, hi = (t[by_width] for t in (bi, f, kind, val, lo, hi))
    # runs start where a window of the shape's run width fits inside the image
    xw = torch.minimum(lo[:, 0], W - run_w)
    kh = (hi[:, 1] - lo[:, 1]).long() + 1
    # per shape: the row parameters, the run's window, and where its first row's run starts
    params = torch.cat([_shape_params(*f.unbind(1), kind, H, W), xw[None], run_w[None].to(xw.dtype)])   # [8,M]
    first = torch.cumsum(kh, 0) - kh
    ints = torch.stack([lo[:, 1].long() - first, bi * (H * W) + xw.long()])             # [2,M]
    # one entry per (shape, row of its box), grouped by run width
    shape = torch.repeat_interleave(kh)
    P, I = params.index_select(1, shape), ints.index_select(1, shape)
    ry = torch.arange(shape.numel(), device=dev).add_(I[0])
    bounds = torch.stack(_row_runs(ry.to(P.dtype), *P[:6])).sub_(P[6]).clamp_(min=0)  # [4,R], relative to the run
    bounds = torch.minimum(bounds, P[7])
    bounds[1::2] = torch.maximum(bounds[1::2], bounds[0::2])           # empty runs: hi = lo
    bounds = bounds.t().long()
    v = val.index_select(0, shape)
    nv = v.neg()
    events = torch.stack([v, nv, nv, v], dim=1)                        # uint8: -v wraps to 256 - v
    row_base = ry.mul_(W).add_(I[1])
    widths, n_shapes = torch.unique_consecutive(lw, return_counts=True)
    n_rows = torch.zeros_like(widths).index_add_(0, torch.repeat_interleave(
        torch.arange(widths.numel(), device=dev), n_shapes), kh)
    canvas = slot.view(-1)
    start = 0
    for l, n in zip(widths.tolist(), n_rows.tolist()):
        r = slice(start, start + n)
        start += n
        run = min(1 << l, W)
        acc = torch.zeros(n, run + 1, dtype=torch.uint8, device=dev)
        acc.scatter_add_(1, bounds[r], events[r])
        values = acc[:, :run].cumsum(1, dtype=torch.uint8)                       # the slot where covered, else 0
        flat = row_base[r, None] + torch.arange(run, device=dev)
        canvas.scatter_reduce_(0, flat.view(-1), values.reshape(-1), reduce="amax")
    return slot


def _objects(spec, R, B, yh, xv, curve, road_w, side_w, aspect, dev):
    """Groups of object parts; each group holds class, depth key, centre, half sizes, kind and
    colour of ``n`` shapes per image, as [B,n] tensors (absent shapes sit at x = -10)."""
    pal = torch.tensor(spec.palette, dtype=torch.float32, device=dev)
    parts: list[tuple] = []
    s = spec.object_scale

    def ground(n, lo=0.08, hi=1.0):
        tt = _lerp(lo, hi, R(n))
        return tt, yh[:, None] + tt * (1 - yh[:, None])

    def street_x(tt):
        return xv[:, None] + curve[:, None] * (1 - tt) ** 2

    def present(kind):
        n = _MAX[kind]
        return R(n) < min(spec.counts.get(kind, _DEFAULT_COUNTS[kind]) / n, 1.0)

    def colour(c, n, jitter):
        return (pal[c].view(1, 1, 3) + (R(n * 3).view(B, n, 3) - 0.5) * 2 * jitter).clamp(0, 1)

    def add(c, depth, cx, cy, hw, hh, kind, col, on):
        n = depth.shape[1]
        far = torch.full_like(cx, -10.0)
        parts.append((torch.full((B, n), c, dtype=torch.int64, device=dev), depth,
                      torch.where(on, cx, far), cy, hw.clamp(min=1e-4), hh.clamp(min=1e-4),
                      torch.as_tensor(kind, dtype=torch.int64, device=dev).expand(B, n), col))

    # cars on the road: body + cabin
    n = _MAX["car"]
    on = present("car")
    tt, yb = ground(n, 0.1, 1.0)
    lane = _lerp(-0.75, 0.75, R(n))
    w = 0.55 * road_w[:, None] * tt * s * _lerp(0.8, 1.2, R(n))
    hgt = w * aspect * _lerp(0.45, 0.6, R(n))
    x = street_x(tt) + lane * road_w[:, None] * tt
    car_col = torch.where(R(n)[..., None] < 0.5, colour(CAR, n, 0.08), R(n * 3).view(B, n, 3) * 0.8 + 0.1)
    add(CAR, yb, x, yb - hgt / 2, w / 2, hgt / 2, _SHAPE_RECT, car_col, on)
    add(CAR, yb + 1e-4, x, yb - hgt * 1.25, w * 0.33, hgt * 0.3, _SHAPE_RECT, car_col * 0.8, on)

    # people on the sidewalks: body + head
    n = _MAX["person"]
    on = present("person")
    tt, yb = ground(n, 0.25, 1.0)
    sd = torch.where(R(n) < 0.5, -1.0, 1.0)
    x = street_x(tt) + sd * road_w[:, None] * tt * (1 + side_w[:, None] * _lerp(0.2, 0.8, R(n)))
    hgt = 0.45 * tt * s * _lerp(0.85, 1.15, R(n))
    pc = colour(PERSON, n, 0.15)
    add(PERSON, yb, x, yb - hgt * 0.42, hgt * 0.14 / aspect, hgt * 0.42, _SHAPE_ELLIPSE, pc, on)
    add(PERSON, yb + 1e-4, x, yb - hgt * 0.9, hgt * 0.09 / aspect, hgt * 0.09, _SHAPE_ELLIPSE, pc * 0.8, on)

    # bicycles on the sidewalk edge: two wheels (rings) and a frame
    n = _MAX["bicycle"]
    on = present("bicycle")
    tt, yb = ground(n, 0.3, 1.0)
    sd = torch.where(R(n) < 0.5, -1.0, 1.0)
    x = street_x(tt) + sd * road_w[:, None] * tt * (1 + side_w[:, None] * 0.15)
    r = 0.095 * tt * s
    bc = colour(BICYCLE, n, 0.1)
    for off in (-1.1, 1.1):
        add(BICYCLE, yb, x + off * r / aspect, yb - r, r / aspect, r, _SHAPE_RING, bc, on)
    add(BICYCLE, yb + 1e-4, x, yb - r * 1.6, 1.2 * r / aspect, r * 0.18, _SHAPE_RECT, bc, on)

    # poles at the outer sidewalk edge, some with a sign
    n = _MAX["pole"]
    on = present("pole")
    tt, yb = ground(n, 0.25, 1.0)
    sd = torch.where(R(n) < 0.5, -1.0, 1.0)
    x = street_x(tt) + sd * road_w[:, None] * tt * (1 + side_w[:, None] * 0.9)
    hgt = 0.9 * tt * s
    pw = (0.008 + 0.010 * tt) * s
    add(POLE, yb, x, yb - hgt / 2, pw, hgt / 2, _SHAPE_RECT, colour(POLE, n, 0.08), on)
    sign_on = on & (R(n) < min(spec.counts.get("sign", 0.5) / max(spec.counts.get("pole", 2.5), 1e-6), 1.0) * 2)
    sz = 0.08 * tt * s
    add(SIGN, yb + 1e-4, x + sd * sz * 0.3 / aspect, yb - hgt + sz, sz / aspect, sz,
        torch.where(R(n) < 0.5, _SHAPE_RECT, _SHAPE_ELLIPSE),
        colour(SIGN, n, 0.08), sign_on)

    # trees: trunk + canopy, beyond the sidewalk
    n = _MAX["tree"]
    on = present("tree")
    tt, yb = ground(n, 0.05, 0.9)
    sd = torch.where(R(n) < 0.5, -1.0, 1.0)
    x = street_x(tt) + sd * road_w[:, None] * tt * (1 + side_w[:, None] * _lerp(1.0, 1.6, R(n)))
    hgt = 0.7 * tt * s * _lerp(0.8, 1.3, R(n))
    vc = colour(VEG, n, 0.1)
    add(VEG, yb, x, yb - hgt * 0.3, 0.01 * tt / aspect + 1e-3, hgt * 0.3, _SHAPE_RECT, vc * 0.6, on)
    cr = hgt * _lerp(0.3, 0.45, R(n))
    add(VEG, yb + 1e-4, x, yb - hgt * 0.6 - cr * 0.5, cr / aspect * 1.3, cr, _SHAPE_ELLIPSE, vc, on)

    return parts


def _camera(spec: DomainSpec, split: int, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image camera parameters: light, colour cast, saturation, light gradient, shadow.

    Gain, cast and saturation are linear maps of the colour that commute with the
    per-pixel scalar factors (texture, shading, gradient, shadow) and with the blur, so
    they are applied once to each image's slot colours (``color``, [B,3,3]: a row vector
    of RGB times this matrix, which also scales [0, 1] to [0, 255]) instead of to every pixel.
    """
    B = idx.shape[0]
    dev = idx.device
    R = _Rand(spec.seed + 1000, split, idx, block=8)
    gain = _lerp(*spec.light, R())
    cam = {"grad": _lerp(-0.15, 0.15, R())}
    cast = 1 + (R(3) - 0.5) * 0.12 * (1 + spec.texture)
    s = spec.saturation
    mix = torch.full((3, 3), (1 - s) / 3, device=dev) + s * torch.eye(3, device=dev)   # x -> grey + s (x - grey)
    cam["color"] = (gain.view(B, 1, 1) * cast.view(B, 3, 1)) * mix * 255    # images are worked on in 0..255
    if spec.shadows > 0:
        cam["shadow_angle"] = _lerp(-1.0, 1.0, R())
        cam["shadow_offset"] = _lerp(0.2, 0.8, R())
        cam["shadow_depth"] = 0.4 * (R() < spec.shadows).to(torch.float32)
    return cam


def _appearance(spec: DomainSpec, split: int, idx: torch.Tensor, cam: dict[str, torch.Tensor], rgb: torch.Tensor,
                amp: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Camera colours [3,B,H,W] (0..255) -> a camera image: texture, light gradient, shadow,
    blur, noise, plus 0.5 (see :func:`_render`).

    ``amp``: texture amplitude per pixel. The per-pixel factors are multiplied into one
    scalar map, applied once to the colours.
    """
    B = idx.shape[0]
    dev = idx.device
    starts, ends, first, block = _crop_runs(idx, _crop_block(H, W))      # texture and noise crops, per run
    if spec.texture > 0:
        tile, Dy = _texture_strip(spec.seed, dev, H, W)
        Ws = tile.shape[1]
        jy = (hash_uniform(spec.seed, split + 20, block) * Dy).long().tolist()
        jx = (hash_uniform(spec.seed, split + 30, block) * (W + 1)).long().tolist()
        for s, e, r, y, x in zip(starts, ends, first, jy, jx):
            amp[s:e].mul_(tile.as_strided((e - s, H, W), (Dy * Ws, Ws, 1), (r * Dy + y) * Ws + x))
    scale = amp.add_(1)                             # amp is 0 without texture
    ys = torch.linspace(0, 1, H, device=dev).view(1, H, 1)
    scale.mul_(1 + cam["grad"].view(B, 1, 1) * (ys - 0.5))             # vertical light gradient
    if spec.shadows > 0:
        # a soft shadow cast across the scene by a half-plane
        xs = torch.linspace(0, 1, W, device=dev).view(1, 1, W)
        ang, off = cam["shadow_angle"].view(B, 1, 1), cam["shadow_offset"].view(B, 1, 1)
        sh = torch.add((xs - off) * 40, (ang * 40) * (ys - 0.5), out=_workspace("shadow", (B, H, W), torch.float32, dev))
        sh.sigmoid_().mul_(cam["shadow_depth"].view(B, 1, 1))
        scale.addcmul_(scale, sh, value=-1.0)
    img = _gaussian_blur(rgb.mul_(scale), spec.blur * H / 256.0)
    if spec.noise > 0 and B:
        # sensor noise: windows of a fixed strip of hashed noise (see _noise_strip), which
        # also adds the 0.5
        strip, Ws, Q = _noise_strip(dev, H, W, 255 * spec.noise)
        j = (hash_uniform(spec.seed + 1000, split, block) * (3 * Q)).long().tolist()
        for s, e, r, o in zip(starts, ends, first, j):
            img[:, s:e].add_(strip.as_strided((3, e - s, H, W), (Q, 3 * Q, Ws, 1), o + 3 * r * Q))
    else:
        img.add_(0.5)
    return img


# ----------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------
class ToyWorld(Dataset):
    """A split of one domain of the toy world as an ordinary map-style dataset.

    ``ToyWorld("real", "val", size=(64, 128), length=200)[i]`` returns
    ``(image float32 [3,H,W] in [0,1], label int64 [H,W])`` with 255 = ignore.
    Images are rendered in chunks on first access and kept (uint8) in memory, so
    epochs after the first cost nothing; ``cache=False`` renders every access.

    Splits never overlap: each split is its own hashed stream of scenes.

    ``device="cuda"`` renders (and keeps) the images on the GPU, so a GPU run never
    waits for CPU-side data loading; ``"auto"`` picks CUDA when available.
    """

    CHUNK = 256

    def __init__(self, domain: str | DomainSpec = "synthetic", split: str = "train", size: tuple[int, int] = (64, 128),
                 length: int | None = None, transform: Callable | None = None, cache: bool = True,
                 offset: int = 0, device: str | torch.device = "cpu"):
        self.spec = get_domain(domain)
        if str(device) == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
        self.split = split
        self.size = (int(size[0]), int(size[1]))
        if self.size[0] < 16 or self.size[1] < 16:
            raise ValueError(f"size must be at least 16x16, got {self.size}")
        default = self.spec.train_size if split == "train" else self.spec.val_size
        self.length = int(default if length is None else length)
        if self.length <= 0:
            raise ValueError(f"length must be positive, got {self.length}")
        self.offset = int(offset)
        self.transform = transform
        self.cache = cache
        self._chunks: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def domain(self) -> str:
        return self.spec.name

    @property
    def fingerprint(self) -> str:
        """Changes whenever the rendered content could change (domain spec, renderer, split, size)."""
        from ..cache import config_hash

        spec = {k: v for k, v in self.spec.__dict__.items() if k != "description"}
        return config_hash({"spec": spec, "renderer": RENDER_VERSION, "split": self.split, "size": self.size,
                            "length": self.length, "offset": self.offset})

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return f"ToyWorld({self.spec.name!r}, {self.split!r}, size={self.size}, length={self.length})"

    def _chunk(self, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        if c not in self._chunks:
            lo = c * self.CHUNK
            hi = min(lo + self.CHUNK, self.length)
            pair = render_uint8(self.spec, torch.arange(lo, hi, device=self.device) + self.offset, self.size,
                                self.split)
            if not self.cache:
                return pair
            self._chunks[c] = pair
        return self._chunks[c]

    def __getitem__(self, i: int):
        if not -self.length <= i < self.length:
            raise IndexError(f"index {i} out of range for {self!r}")
        i = i % self.length
        img, lab = self._chunk(i // self.CHUNK)
        j = i % self.CHUNK
        image = img[j].to(torch.float32) / 255.0
        label = lab[j].to(torch.int64)
        if self.transform is not None:
            image, label = self.transform(image, label)
        return image, label

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split as (uint8 images [N,3,H,W], int64 labels [N,H,W])."""
        n = (self.length + self.CHUNK - 1) // self.CHUNK
        parts = [self._chunk(c) for c in range(n)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]).to(torch.int64)


def world_pair(source: str = "synthetic", target: str = "real", size: tuple[int, int] = (64, 128),
               n_train: int | None = None, n_val: int | None = None) -> dict[str, ToyWorld]:
    """The four datasets of a domain-adaptation experiment: source/target x train/val."""
    return {
        "source_train": ToyWorld(source, "train", size, n_train),
        "source_val": ToyWorld(source, "val", size, n_val),
        "target_train": ToyWorld(target, "train", size, n_train),
        "target_val": ToyWorld(target, "val", size, n_val),
    }
