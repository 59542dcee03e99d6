"""Label spaces shared by the toy world and the real-dataset readers.

Cityscapes defines 34 label ids; the 19 "train ids" used by every paper in this kit
come from the mapping below (everything else maps to 255, ignored). GTA5 labels use
the same ids. SYNTHIA-RAND-CITYSCAPES has its own 23 class ids, mapped here onto the
Cityscapes train ids; it is evaluated on 16 of the 19 classes (RIPU, DAS3) or on 13
(AdaptSegNet).

Mapping raw ids to train ids is done with a lookup table (LUT): one gather over the
whole label map instead of a Python loop over classes::

    >>> import numpy as np
    >>> lut = make_lut(CITYSCAPES_ID_TO_TRAIN_ID)
    >>> apply_lut(np.array([[7, 26], [0, 33]], dtype=np.uint8), lut).tolist()
    [[0, 13], [255, 18]]

:class:`IdMapping` adds the check that every raw id is *known* (mapped or a known
void id), so that a label file in the wrong encoding fails loudly instead of training
on garbage.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

IGNORE_INDEX = 255
#: LUT entry for "this raw id is not known" (see :class:`IdMapping`).
UNKNOWN_ID = -1

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "train", "motorcycle", "bicycle",
)

# Cityscapes label id -> train id (GTA5 labels use the same ids).
CITYSCAPES_ID_TO_TRAIN_ID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}

# Cityscapes label ids that exist but are not evaluated (cityscapesScripts labels.py:
# unlabeled, ego vehicle, rectification border, out of roi, static, dynamic, ground,
# parking, rail track, guard rail, bridge, tunnel, polegroup, caravan, trailer) plus
# -1 (license plate). Every id in -1..33 is therefore "known".
# 255 is also accepted as void: it is how -1 looks when stored in a uint8 PNG, and the
# ignore value of many pre-converted label sets.
CITYSCAPES_VOID_IDS: frozenset[int] = frozenset(
    {-1, 255} | (set(range(34)) - set(CITYSCAPES_ID_TO_TRAIN_ID))
)

# SYNTHIA-RAND-CITYSCAPES class ids, from the README.txt shipped with the dataset
# (table "Class R G B ID"); the same table appears in the AdaptSegNet/ADVENT/DAFormer
# SYNTHIA readers and in public dataset summaries. Pixel statistics published for the
# dataset show parking-slot, terrain, truck and train never occur.
SYNTHIA_CLASS_IDS: dict[int, str] = {
    0: "void", 1: "sky", 2: "building", 3: "road", 4: "sidewalk", 5: "fence",
    6: "vegetation", 7: "pole", 8: "car", 9: "traffic sign", 10: "pedestrian",
    11: "bicycle", 12: "motorcycle", 13: "parking-slot", 14: "road-work",
    15: "traffic light", 16: "terrain", 17: "rider", 18: "truck", 19: "bus",
    20: "train", 21: "wall", 22: "lanemarking",
}

# SYNTHIA id -> Cityscapes 19-class train id. Name-for-name correspondence with
# CITYSCAPES_CLASSES ("pedestrian" -> person). Void, parking-slot, road-work and
# lanemarking have no Cityscapes train class and are ignored (the usual choice of the
# DA papers; lanemarking is *not* folded into road). Terrain, truck and train are
# mapped for completeness but are dropped by the 16/13-class protocols anyway.
SYNTHIA_ID_TO_TRAIN_ID: dict[int, int] = {
    3: 0,    # road
    4: 1,    # sidewalk
    2: 2,    # building
    21: 3,   # wall
    5: 4,    # fence
    7: 5,    # pole
    15: 6,   # traffic light
    9: 7,    # traffic sign
    6: 8,    # vegetation
    16: 9,   # terrain (absent from the data)
    1: 10,   # sky
    10: 11,  # pedestrian -> person
    17: 12,  # rider
    8: 13,   # car
    18: 14,  # truck (absent from the data)
    19: 15,  # bus
    20: 16,  # train (absent from the data)
    12: 17,  # motorcycle
    11: 18,  # bicycle
}
SYNTHIA_VOID_IDS: frozenset[int] = frozenset({0, 13, 14, 22})

# Evaluated subsets, as lists of 19-class train ids (in train-id order).
# 16 classes: all but terrain (9), truck (14), train (16).
SYNTHIA_16: list[int] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18]
# 13 classes: the 16 minus wall (3), fence (4), pole (5).
SYNTHIA_13: list[int] = [0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18]

CLASS_SUBSETS: dict[int, list[int]] = {19: list(range(19)), 16: SYNTHIA_16, 13: SYNTHIA_13}

# CamVid as SegNet distributes it (11 classes, ids 0..10 in this order, 11 = void).
CAMVID_CLASSES: tuple[str, ...] = (
    "sky", "building", "pole", "road", "sidewalk", "vegetation", "traffic sign", "fence", "car",
    "person", "bicycle",
)
#: CamVid (SegNet) class -> the Cityscapes classes it covers, for label remapping (CDCL)
CAMVID_TO_CITYSCAPES: dict[str, tuple[str, ...]] = {
    "sky": ("sky",), "building": ("building", "wall"), "pole": ("pole",), "road": ("road",),
    "sidewalk": ("sidewalk",), "vegetation": ("vegetation", "terrain"),
    "traffic sign": ("traffic sign", "traffic light"), "fence": ("fence",),
    "car": ("car", "truck", "bus", "train"), "person": ("person",),
    "bicycle": ("rider", "motorcycle", "bicycle"),
}


def subset_for(num_classes: int) -> list[int]:
    """The 19-class train ids kept by the 19-, 16- or 13-class protocol."""
    if num_classes not in CLASS_SUBSETS:
        raise ValueError(f"classes must be one of {sorted(CLASS_SUBSETS)}, got {num_classes!r}")
    return list(CLASS_SUBSETS[num_classes])


def subset_classes(subset: Sequence[int]) -> tuple[str, ...]:
    """Class names of a subset given as 19-class train ids (new id = position)."""
    _check_subset(subset)
    return tuple(CITYSCAPES_CLASSES[i] for i in subset)


def _check_subset(subset: Sequence[int]) -> None:
    ids = list(subset)
    if len(set(ids)) != len(ids) or any(not 0 <= i < len(CITYSCAPES_CLASSES) for i in ids):
        raise ValueError(f"subset must list distinct 19-class train ids in 0..18, got {ids}")


# --------------------------------------------------------------------------- LUTs


def make_lut(
    mapping: Mapping[int, int] | None,
    size: int = 256,
    *,
    fill: int = IGNORE_INDEX,
    dtype: str | np.dtype = "int64",
    as_tensor: bool = False,
) -> np.ndarray | torch.Tensor:
    """Lookup table of ``size`` entries: ``lut[raw] = mapping[raw]``, else ``fill``.

    ``mapping=None`` is the identity on ``0..size-1``. Keys outside ``0..size-1`` are
    skipped (e.g. Cityscapes' ``-1``), values must fit ``dtype`` (``"uint8"`` or
    ``"int64"``; use int64 with ``fill=UNKNOWN_ID``). Returns a numpy array, or a torch
    tensor with ``as_tensor=True``.
    """
    dtype = np.dtype(dtype)
    if size < 1:
        raise ValueError(f"LUT size must be positive, got {size}")
    if mapping is None:
        lut = np.arange(size, dtype=np.int64)
    else:
        lut = np.full(size, fill, dtype=np.int64)
        for raw, new in mapping.items():
            if 0 <= int(raw) < size:
                lut[int(raw)] = int(new)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if lut.min() < info.min or lut.max() > info.max:
            raise ValueError(f"LUT values {lut.min()}..{lut.max()} do not fit {dtype}")
    lut = lut.astype(dtype)
    return torch.from_numpy(lut) if as_tensor else lut


def apply_lut(label, lut):
    """Map every value of ``label`` through ``lut`` (one vectorized gather).

    Works on numpy arrays and torch tensors (the result has the LUT's dtype and the
    label's library; a numpy LUT with a tensor label is converted). Raises
    ``ValueError`` naming the first offending value if a value is negative or
    ``>= len(lut)``.
    """
    n = len(lut)
    if isinstance(label, torch.Tensor):
        t_lut = lut if isinstance(lut, torch.Tensor) else torch.from_numpy(np.asarray(lut))
        if label.numel():
            lo, hi = int(label.min()), int(label.max())
            if lo < 0 or hi >= n:
                bad = lo if lo < 0 else hi
                raise ValueError(f"label value {bad} is outside the lookup table (0..{n - 1})")
        return t_lut.to(label.device)[label.long()]
    arr = np.asarray(label)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"label must hold integers, got dtype {arr.dtype}")
    np_lut = lut.numpy() if isinstance(lut, torch.Tensor) else np.asarray(lut)
    if arr.size:
        # uint8 labels with a LUT of >= 256 entries cannot be out of range: skip the scan.
        if not (arr.dtype == np.uint8 and n >= 256) and not (arr.dtype == np.uint16 and n >= 65536):
            lo, hi = int(arr.min()), int(arr.max())
            if lo < 0 or hi >= n:
                bad = lo if lo < 0 else hi
                raise ValueError(f"label value {bad} is outside the lookup table (0..{n - 1})")
    return np_lut[arr]


class UnknownLabelIdError(ValueError):
    """A label file holds a raw id that is neither mapped nor a known void id."""


@dataclass(frozen=True, eq=False)
class IdMapping:
    """A raw-id -> train-id mapping that also knows which raw ids are legal.

    ``mapping`` sends raw ids to train ids, ``void_ids`` lists raw ids that exist but
    are ignored (-> 255); any other raw id is unknown and raises
    :class:`UnknownLabelIdError`. ``mapping=None`` means identity on ``identity_ids``
    (for label folders that already hold train ids). ``size`` is the LUT length; raw
    values ``>= size`` are unknown too.
    """

    mapping: Mapping[int, int] | None
    void_ids: frozenset[int] = frozenset({IGNORE_INDEX})
    size: int = 256
    identity_ids: tuple[int, ...] = ()
    _lut: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        lut = np.full(self.size, UNKNOWN_ID, dtype=np.int64)
        for v in self.void_ids:
            if 0 <= v < self.size:
                lut[v] = IGNORE_INDEX
        if self.mapping is None:
            for v in self.identity_ids:
                lut[v] = v
        else:
            for raw, new in self.mapping.items():
                if not 0 <= int(raw) < self.size:
                    raise ValueError(f"raw id {raw} outside 0..{self.size - 1}")
                if new is None:
                    new = IGNORE_INDEX
                if not (0 <= int(new) < 256):
                    raise ValueError(f"train id {new} (for raw id {raw}) must be in 0..255")
                lut[int(raw)] = int(new)
        object.__setattr__(self, "_lut", lut)

    @property
    def lut(self) -> np.ndarray:
        """int64 LUT: train id, 255 for void, ``UNKNOWN_ID`` (-1) for unknown ids."""
        return self._lut

    def then(self, subset: Sequence[int] | None) -> "IdMapping":
        """Compose with :func:`remap_to_subset` (one LUT: raw id -> subset id)."""
        if subset is None:
            return self
        _check_subset(subset)
        to_sub = {old: new for new, old in enumerate(subset)}
        known = np.flatnonzero(self._lut != UNKNOWN_ID)
        new_ids = make_lut(to_sub, 256)[self._lut[known]]
        return IdMapping(dict(zip(known.tolist(), new_ids.tolist())), frozenset(), self.size)

    def __call__(self, raw, source: str = "label") -> np.ndarray:
        """Map a raw label array to int64 train ids; ``source`` names it in errors."""
        arr = np.asarray(raw)
        try:
            out = apply_lut(arr, self._lut)
        except ValueError:
            bad = np.unique(arr[(arr < 0) | (arr >= self.size)])
            raise UnknownLabelIdError(
                f"{source}: unknown label id(s) {bad[:10].tolist()} (known ids: "
                f"{self.describe_known()})") from None
        if out.size and out.min() < 0:
            bad = np.unique(arr[out < 0])
            raise UnknownLabelIdError(
                f"{source}: unknown label id(s) {bad[:10].tolist()} (known ids: "
                f"{self.describe_known()}); is this file in the expected encoding?")
        return out

    def describe_known(self) -> str:
        ids = np.flatnonzero(self._lut != UNKNOWN_ID).tolist()
        if not ids:
            return "none"
        runs, start, prev = [], ids[0], ids[0]
        for i in ids[1:] + [None]:
            if i is not None and i == prev + 1:
                prev = i
                continue
            runs.append(f"{start}" if start == prev else f"{start}..{prev}")
            if i is not None:
                start = prev = i
        return ", ".join(runs)


CITYSCAPES_IDS = IdMapping(CITYSCAPES_ID_TO_TRAIN_ID, CITYSCAPES_VOID_IDS, 256)
SYNTHIA_IDS = IdMapping(SYNTHIA_ID_TO_TRAIN_ID, SYNTHIA_VOID_IDS, 65536)


def remap_to_subset(label, subset: Sequence[int]):
    """Map 19-class train ids to the contiguous label space of ``subset``.

    ``subset`` lists the kept 19-class train ids (e.g. :data:`SYNTHIA_16`); kept id
    ``subset[k]`` becomes ``k``, every other id (and 255) becomes 255. Accepts numpy
    arrays or torch tensors, returns int64 of the same library.

    >>> remap_to_subset(torch.tensor([0, 3, 9, 10, 255]), SYNTHIA_13).tolist()
    [0, 255, 255, 6, 255]
    """
    _check_subset(subset)
    lut = make_lut({old: new for new, old in enumerate(subset)}, 256)
    return apply_lut(label, lut if not isinstance(label, torch.Tensor) else torch.from_numpy(lut))
