"""The toy world's definition: its label space, the counter-based hash all its randomness comes
from, and its domains (:class:`DomainSpec`: appearance and layout statistics of each renderer or
camera). Rendering is :mod:`kit.data.world` (with the internals in ``world_scene`` and
``world_render``, which read the definitions here).

Label space: ``WORLD_CLASSES`` is a named subset of the Cityscapes 19 classes. Each domain maps
it onto its own label space (``DomainSpec.classes``): the SYNTHIA-like domain has no terrain; the
"cities" used for cross-dataset learning differ in appearance and one of them merges classes, as
CamVid does with respect to Cityscapes.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import torch

from .labels import CITYSCAPES_CLASSES, IGNORE_INDEX

__all__ = [
    "WORLD_CLASSES", "WORLD_TO_CITYSCAPES", "LARGE_CLASSES", "SMALL_CLASSES", "DomainSpec", "DOMAINS", "DA_PAIRS", "SPLITS",
    "RENDER_VERSION", "get_domain", "class_index", "hash_uniform",
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

# A second domain pair, to check that the recipes tuned on synthetic -> real do not hurt elsewhere:
# narrow alleys between tall facades, so one background class (building) covers about three
# quarters of the pixels; objects at half the size; a merged, smaller label space (8 classes).
_ALLEY_LABELS = {"terrain": "sidewalk", "traffic sign": "pole", "bicycle": "person"}
_ALLEY_SIM = DomainSpec(
    name="alley_sim", seed=51,
    palette=_rgb("#6e6e6e", "#b0a070", "#a05a3a", "#e8e8e8", "#ff3030", "#208020",
                 "#9ad040", "#60b0ff", "#ff40ff", "#3050ff", "#ff8000"),
    color_jitter=0.05, texture=0.05, blur=0.0, noise=0.005, light=(0.95, 1.05), saturation=1.2,
    horizon=(0.28, 0.36), road_width=(0.08, 0.14),
    counts={"car": 2.0, "person": 2.0, "pole": 4.0, "sign": 1.0, "tree": 1.0, "bicycle": 0.8},
    object_scale=0.5, terrain_prob=1.0, shadows=0.0, label_of=_ALLEY_LABELS,
    description="alley source (rendered): tall facades (~3/4 of the pixels), narrow road, small objects, 8 classes",
)
_ALLEY_REAL = DomainSpec(
    name="alley_real", seed=61,
    palette=_rgb("#5a5850", "#8a8060", "#7a5a48", "#b8b8a8", "#b84040", "#3a5a30",
                 "#7a8a48", "#b0c0d0", "#9a5080", "#404a70", "#a06030"),
    color_jitter=0.10, texture=0.35, blur=1.0, noise=0.05, light=(0.6, 1.2), saturation=0.8,
    horizon=(0.24, 0.34), road_width=(0.06, 0.12),
    counts={"car": 1.5, "person": 2.5, "pole": 5.0, "sign": 1.2, "tree": 1.5, "bicycle": 1.0},
    object_scale=0.45, terrain_prob=1.0, shadows=0.3, label_of=_ALLEY_LABELS,
    description="alley target (real-like): textured, noisy, darker facades, smaller and more objects",
)

DOMAINS: dict[str, DomainSpec] = {d.name: d for d in (_SYNTHETIC, _REAL, _SYNTHIA, _CITY_A, _CITY_B, _CITY_C,
                                                      _ALLEY_SIM, _ALLEY_REAL)}
#: the kit's domain pairs for unsupervised adaptation (source -> target): the street world the
#: recipes were chosen on, and the alleys, on which they are checked
DA_PAIRS: dict[str, tuple[str, str]] = {"street": ("synthetic", "real"), "alley": ("alley_sim", "alley_real")}
SPLITS = {"train": 0, "val": 1, "test": 2}
#: bump when the rendering code changes what an index renders to (invalidates cached models)
RENDER_VERSION = 7


def get_domain(domain: str | DomainSpec) -> DomainSpec:
    if isinstance(domain, DomainSpec):
        return domain
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {sorted(DOMAINS)}")
    return DOMAINS[domain]
