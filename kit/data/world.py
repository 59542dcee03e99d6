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
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .labels import CITYSCAPES_CLASSES, IGNORE_INDEX

__all__ = [
    "WORLD_CLASSES", "LARGE_CLASSES", "SMALL_CLASSES", "DomainSpec", "DOMAINS",
    "get_domain", "class_index", "hash_uniform", "render", "ToyWorld", "world_pair",
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
RENDER_VERSION = 4


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


class _Rand:
    """Per-image uniform numbers, addressed by named slots."""

    def __init__(self, seed: int, split: int, index: torch.Tensor):
        self.seed, self.split, self.index = seed, split, index
        self._next = 0

    def __call__(self, n: int | None = None) -> torch.Tensor:
        """[B] (n is None) or [B, n] uniforms; each call gets fresh slots."""
        k = 1 if n is None else n
        slots = torch.arange(self._next, self._next + k, device=self.index.device)
        self._next += k
        u = hash_uniform(self.seed, self.split, self.index[:, None], slots[None, :])
        return u[:, 0] if n is None else u


def _lerp(lo: float, hi: float, u: torch.Tensor) -> torch.Tensor:
    return lo + (hi - lo) * u


def _value_noise(seed: int, index: torch.Tensor, salt: int, cells: tuple[int, int],
                 size: tuple[int, int]) -> torch.Tensor:
    """Smooth noise in [-1, 1]: a hashed grid of ``cells`` upsampled to ``size``. [B,1,H,W]"""
    gh, gw = cells
    dev = index.device
    yy = torch.arange(gh + 1, device=dev)[:, None]
    xx = torch.arange(gw + 1, device=dev)[None, :]
    g = hash_uniform(seed, salt, index[:, None, None], yy[None] * 4099 + xx[None])
    g = g[:, None] * 2 - 1
    return F.interpolate(g, size=size, mode="bilinear", align_corners=True)


_TILES: dict[str, torch.Tensor] = {}


def _noise_tile(device: torch.device) -> torch.Tensor:
    """A [3,T,T] tile of zero-mean, unit-variance noise (triangular distribution), T = 509."""
    key = str(device)
    if key not in _TILES:
        T = 509
        k = torch.arange(3 * T * T, device=device).view(3, T, T)
        u = hash_uniform(7919, k) + hash_uniform(104729, k) - 1.0
        _TILES[key] = u * math.sqrt(6.0)    # var(u1 + u2 - 1) = 1/6
    return _TILES[key]


def _gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma < 0.3:
        return img
    r = max(1, int(math.ceil(2.5 * sigma)))
    x = torch.arange(-r, r + 1, dtype=img.dtype, device=img.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    B, c, H, W = img.shape
    # separable, zero-padded, then renormalised by the blurred all-ones image, so borders
    # keep their brightness (a normalised convolution; cheaper than replicate padding)
    kx, ky = k.view(1, 1, 1, -1), k.view(1, 1, -1, 1)
    out = F.conv2d(img, kx.expand(c, 1, 1, -1), padding=(0, r), groups=c)
    out = F.conv2d(out, ky.expand(c, 1, -1, 1), padding=(r, 0), groups=c)
    ones = torch.ones(1, 1, H, W, dtype=img.dtype, device=img.device)
    norm = F.conv2d(F.conv2d(ones, kx, padding=(0, r)), ky, padding=(r, 0))
    return out / norm


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
    world_label, colors = _render_world(spec, SPLITS[split], idx, H, W)
    image = _appearance(spec, SPLITS[split], idx, world_label, colors, H, W)
    label = spec.label_lut().to(dev)[world_label]
    return image, label


def _render_world(spec: DomainSpec, split: int, idx: torch.Tensor, H: int, W: int):
    """Scene geometry -> world labels [B,H,W] and per-pixel base colours [B,3,H,W]."""
    dev = idx.device
    B = idx.shape[0]
    R = _Rand(spec.seed, split, idx)
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

    t = ((ys - col(yh)) / (1 - col(yh))).clamp(min=0)                 # ground depth in (0, 1]
    center = col(xv) + col(curve) * (1 - t) ** 2                       # street centre at each row
    dx = xs - center
    adx = dx.abs()
    rw = col(road_w) * t                                               # road half width
    below = ys > col(yh)

    label = torch.full((B, H, W), SKY, dtype=torch.int64, device=dev)
    # facades: piecewise-constant heights along x, taller towards the image edges
    seg = torch.floor((xs - col(xv)).abs() / col(seg_w)).to(torch.int64)
    side = (xs > col(xv)).to(torch.int64)
    hseg = hash_uniform(spec.seed, split, col(idx), seg * 2 + side)    # [B,1,W]
    y_top = col(yh) - (0.12 + 1.5 * (xs - col(xv)).abs()) * (0.25 + 0.75 * hseg)
    y_top = torch.where((xs - col(xv)).abs() < col(gap), col(yh), y_top)
    label = torch.where(ys > y_top, torch.tensor(BUILDING, device=dev), label)
    # ground strips
    walk = below & (adx < rw * (1 + col(side_w)))
    ter_edge = rw * (1 + col(side_w) + col(terr_w))
    terrain = below & ~walk & (adx < ter_edge) & torch.where(dx < 0, col(terr_l), col(terr_r))
    label = torch.where(terrain, torch.tensor(TERRAIN, device=dev), label)
    label = torch.where(walk, torch.tensor(SIDEWALK, device=dev), label)
    label = torch.where(below & (adx < rw), torch.tensor(ROAD, device=dev), label)

    # --- background colours ----------------------------------------------------------
    pal = torch.tensor(spec.palette, dtype=torch.float32, device=dev)          # [11,3]
    img_jit = (R(3) - 0.5) * 2 * spec.color_jitter                              # [B,3]
    base = pal[label].permute(0, 3, 1, 2) + img_jit.view(B, 3, 1, 1)            # [B,3,H,W]
    # each facade its own shade, windows as a darker grid
    shade = (hash_uniform(spec.seed, split + 7, col(idx), seg * 2 + side) - 0.5) * 0.35
    fw = 6 + 10 * hseg
    win = (torch.sin(2 * math.pi * (xs - col(xv)) / col(seg_w) * 3) > 0.2) & \
          (torch.sin(2 * math.pi * ys * fw * 2.5) > 0.1)
    is_b = (label == BUILDING).unsqueeze(1)
    base = torch.where(is_b, base * (1 + shade.unsqueeze(1)) * torch.where(win.unsqueeze(1), 0.6, 1.0), base)
    # dashed centre line on the road
    dash = (dx.abs() < 0.012 * t) & (torch.sin(2 * math.pi * 2.0 / (t + 0.05)) > 0) & (label == ROAD)
    base = torch.where(dash.unsqueeze(1), torch.full_like(base, 0.92), base)

    # --- objects ---------------------------------------------------------------------
    groups = _objects(spec, R, B, yh, xv, curve, road_w, side_w, aspect, dev)
    label, base = _paint(label, base, groups, H, W)
    return label, base


def _ranks(groups):
    """Concatenate shape groups; rank shapes by depth per image (1 = farthest, 0 = absent)."""
    cls, depth, cx, cy, hw, hh, kind, ocol = (torch.cat([g[i] for g in groups], dim=1) for i in range(8))
    present = cx > -5
    B, N = cls.shape
    order = torch.argsort(depth.masked_fill(~present, -1e9), dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(1, N + 1, device=cls.device).expand(B, N))
    rank = torch.where(present, rank, 0)
    return cls, cx, cy, hw, hh, kind, ocol, present, order, rank


def _resolve(label, base, top, cls, ocol, order):
    """Per-pixel top rank -> class and colour of the winning shape."""
    B, H, W = label.shape
    hit = top > 0
    # rank r belongs to the shape at sorted position r-1
    shape_idx = torch.gather(order, 1, (top.to(torch.int64).view(B, -1) - 1).clamp(min=0))   # [B,H*W]
    ocls = torch.gather(cls, 1, shape_idx).view(B, H, W)
    label = torch.where(hit, ocls, label)
    oc = torch.gather(ocol, 1, shape_idx.unsqueeze(-1).expand(-1, -1, 3)).view(B, H, W, 3).permute(0, 3, 1, 2)
    base = torch.where(hit.unsqueeze(1), oc, base)
    return label, base


def _inside(kind, ax, ey2, hw, only: int | None = None):
    """Coverage test of shapes, on broadcastable |x - cx| (ax), ((y - cy)/hh)^2 (ey2) and hw.

    ``only``: all shapes are of this kind (computes just that test).
    """
    def rect():
        return (ax < hw) & (ey2 < 1)

    def ell():
        return ax.square() < hw.square() * (1 - ey2).clamp(min=0)

    def ring():
        return ell() & (ax.square() >= hw.square() * (0.2 - ey2).clamp(min=0))

    tests = {_SHAPE_RECT: rect, _SHAPE_ELLIPSE: ell, _SHAPE_RING: ring}
    if only is not None:
        return tests[only]()
    return torch.where(kind == _SHAPE_RECT, rect(), torch.where(kind == _SHAPE_ELLIPSE, ell(), ring()))


def _paint_dense(label, base, groups, H, W):
    """Reference painter: every shape tested at every pixel (O(B*N*H*W)); used by the tests."""
    cls, cx, cy, hw, hh, kind, ocol, present, order, rank = _ranks(groups)
    dev = label.device
    ys = ((torch.arange(H, device=dev, dtype=torch.float32) + 0.5) / H).view(1, 1, H, 1)
    xs = ((torch.arange(W, device=dev, dtype=torch.float32) + 0.5) / W).view(1, 1, 1, W)
    ax = (xs - cx[..., None, None]).abs()
    ey2 = ((ys - cy[..., None, None]) / hh[..., None, None]).square()
    inside = _inside(kind[..., None, None], ax, ey2, hw[..., None, None]) & present[..., None, None]
    top = (inside.to(torch.int64) * rank[..., None, None]).amax(dim=1)
    return _resolve(label, base, top, cls, ocol, order)


def _paint(label, base, groups, H, W):
    """Painter's algorithm, vectorized: the nearest covering shape wins each pixel.

    Shapes are ranked by depth per image. Each group of shapes (one kind of object
    part) is rasterized only inside a window as large as its largest bounding box,
    and the ranks are merged into the canvas with a scatter-max; the result equals
    :func:`_paint_dense` at a fraction of the cost (poles are tall but thin, signs
    small, ...).
    """
    cls, cx, cy, hw, hh, kind, ocol, present, order, rank = _ranks(groups)
    B = cls.shape[0]
    dev = label.device
    dump = B * H * W
    canvas = torch.zeros(dump, dtype=torch.int64, device=dev)
    bidx = torch.arange(B, device=dev).view(B, 1, 1, 1) * (H * W)
    start = 0
    for g in groups:
        n = g[0].shape[1]
        sl = slice(start, start + n)
        start += n
        gp = present[:, sl]
        if not bool(gp.any()):
            continue
        gcx, gcy, ghw, ghh = cx[:, sl], cy[:, sl], hw[:, sl], hh[:, sl]
        # pixels p whose centre (p + 0.5) / size can lie inside the box
        x0 = torch.floor((gcx - ghw) * W - 0.5).long()
        y0 = torch.floor((gcy - ghh) * H - 0.5).long()
        kw = int(((torch.ceil((gcx + ghw) * W - 0.5).long() - x0)[gp]).max()) + 1
        kh = int(((torch.ceil((gcy + ghh) * H - 0.5).long() - y0)[gp]).max()) + 1
        kw, kh = min(kw, W + 1), min(kh, H + 1)
        px = x0[..., None] + torch.arange(kw, device=dev)                 # [B,n,kw]
        py = y0[..., None] + torch.arange(kh, device=dev)                 # [B,n,kh]
        # out-of-image pixels and absent shapes can never be inside: push them away
        ax = ((px.float() + 0.5) / W - gcx[..., None]).abs()
        ax = ax.masked_fill((px < 0) | (px >= W) | ~gp[..., None], float("inf"))
        ey2 = (((py.float() + 0.5) / H - gcy[..., None]) / ghh[..., None]).square()
        ey2 = ey2.masked_fill((py < 0) | (py >= H), float("inf"))
        gk = kind[:, sl]
        only = int(gk[0, 0]) if bool((gk == gk[0, 0]).all()) else None
        inside = _inside(gk[..., None, None], ax[:, :, None, :], ey2[:, :, :, None], ghw[..., None, None], only)
        # clamped indices are safe: pixels outside a shape carry the value 0
        flat = bidx + py.clamp(0, H - 1)[:, :, :, None] * W + px.clamp(0, W - 1)[:, :, None, :]
        val = inside * rank[:, sl, None, None]
        canvas.scatter_reduce_(0, flat.reshape(-1), val.reshape(-1), reduce="amax")
    top = canvas[:dump].view(B, H, W)
    return _resolve(label, base, top, cls, ocol, order)


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


def _appearance(spec: DomainSpec, split: int, idx: torch.Tensor, label: torch.Tensor,
                base: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Base colours -> a camera image: texture, lighting, shadows, blur, saturation, noise."""
    B = idx.shape[0]
    R = _Rand(spec.seed + 1000, split, idx)
    img = base
    if spec.texture > 0:
        coarse = _value_noise(spec.seed, idx, 1, (6, 12), (H, W))
        fine = _value_noise(spec.seed, idx, 2, (24, 48), (H, W))
        amp = torch.full((len(WORLD_CLASSES),), spec.texture, device=idx.device)
        amp[SKY] *= 0.3
        amp[VEG] *= 1.6
        amp[ROAD] *= 0.8
        a = amp[label].unsqueeze(1)
        img = img * (1 + a * (0.5 * coarse + 0.5 * fine))
    # lighting: global gain, a vertical gradient and a colour cast
    gain = _lerp(*spec.light, R()).view(B, 1, 1, 1)
    ys = torch.linspace(0, 1, H, device=idx.device).view(1, 1, H, 1)
    grad = 1 + _lerp(-0.15, 0.15, R()).view(B, 1, 1, 1) * (ys - 0.5)
    cast = 1 + (R(3) - 0.5).view(B, 3, 1, 1) * 0.12 * (1 + spec.texture)
    img = img * gain * grad * cast
    if spec.shadows > 0:
        # a soft shadow cast across the scene by a half-plane
        xs = torch.linspace(0, 1, W, device=idx.device).view(1, 1, 1, W)
        ang = _lerp(-1.0, 1.0, R()).view(B, 1, 1, 1)
        off = _lerp(0.2, 0.8, R()).view(B, 1, 1, 1)
        on = (R() < spec.shadows).view(B, 1, 1, 1)
        sh = torch.sigmoid(((xs - off) + ang * (ys - 0.5)) * 40)
        img = img * torch.where(on, 1 - 0.4 * sh, torch.ones_like(sh))
    if spec.saturation != 1.0:
        grey = img.mean(dim=1, keepdim=True)
        img = grey + spec.saturation * (img - grey)
    img = _gaussian_blur(img, spec.blur * H / 256.0)
    if spec.noise > 0:
        # sensor noise: a fixed tile of hashed noise, read at a per-image random offset
        tile = _noise_tile(idx.device)
        T = tile.shape[-1]
        oy = (R() * T).long().view(B, 1, 1)
        ox = (R() * T).long().view(B, 1, 1)
        yy = (torch.arange(H, device=idx.device).view(1, H, 1) + oy) % T
        xx = (torch.arange(W, device=idx.device).view(1, 1, W) + ox) % T
        img = img + tile[:, yy, xx].transpose(0, 1) * spec.noise
    return img.clamp_(0, 1)


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

    CHUNK = 64

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
            img, lab = render(self.spec, torch.arange(lo, hi, device=self.device) + self.offset, self.size,
                              self.split)
            pair = ((img * 255).round_().to(torch.uint8), lab.to(torch.uint8))
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
