"""Readers for the real domain-adaptation benchmarks: Cityscapes, GTA5 and
SYNTHIA-RAND-CITYSCAPES, on :class:`SegmentationFiles`, the base of every file reader (the
generic image/label folder reader and BDD100K and CamVid live in :mod:`kit.data.folders`).

Every reader is a ``torch.utils.data.Dataset`` whose items are ``(image, label)``:

* ``image``: float32 tensor ``[3, H, W]``, RGB in [0, 1];
* ``label``: int64 tensor ``[H, W]``, train ids of the reader's label space, 255 = ignore.

An optional ``transform(image, label) -> (image, label)`` (see ``kit.data.transforms``)
is applied after loading. Readers expose ``classes`` (names) and ``num_classes``, list
their files once at construction (sorted, deterministic) and read one file pair per
``__getitem__``; nothing is loaded into memory up front.

They check their input and fail loudly, naming the file or folder and the expected
layout: a missing folder, an empty split or an image without its label raise
``FileNotFoundError`` at construction; a label whose size differs from its image, a
label in the wrong encoding (e.g. a color PNG) or a raw id that the mapping does not
know raise ``ValueError`` when the item is read.

Nothing is downloaded: point the readers at datasets you already have.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..hashing import config_hash, file_sha256, flush_file_hashes
from .labels import (
    CITYSCAPES_CLASSES, CITYSCAPES_IDS, SYNTHIA_IDS, IdMapping,
    subset_classes, subset_for,
)
from .transforms import image_to_tensor

__all__ = [
    "Cityscapes", "GTA5", "Synthia",
    "read_image", "read_label_ids", "read_synthia_label", "decode_png", "png_header",
    "SegmentationFiles",
]


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


# --------------------------------------------------------------------------- PNG


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_header(path) -> dict:
    """Width, height, bit depth, color type and interlace flag of a PNG (reads 33 bytes)."""
    with open(path, "rb") as f:
        head = f.read(33)
    if head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise ValueError(f"{path}: not a PNG file")
    w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
    return {"width": w, "height": h, "bit_depth": depth, "color_type": ctype,
            "interlace": interlace}


def decode_png(path, channels: Sequence[int] | None = None) -> np.ndarray:
    """Decode a PNG with OpenCV, keeping every sample's full value (8 or 16 bits).

    Returns ``[H, W, C]`` uint8 or uint16 in the file's channel order: gray ``C=1``,
    RGB ``C=3``, RGBA ``C=4`` (OpenCV's BGR(A) order is undone here). Gray+alpha files
    come back as RGBA with the gray value in R, G and B; palette files as the RGB colors
    of their palette (use :func:`read_label_ids` for palette indices). ``channels``
    selects channels of that result (e.g. ``[0]`` for R).

    Pillow cannot be used for 16-bit RGB(A) PNGs: it keeps only the high byte of each
    sample. Raises ``ValueError`` naming the file if it cannot be decoded.
    """
    import cv2  # imported here: only the SYNTHIA reader needs it

    buf = np.fromfile(path, np.uint8)  # read + imdecode: also handles non-ASCII paths
    try:
        arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        raise ValueError(f"{path}: cannot decode PNG ({e})") from None
    if arr is None:
        raise ValueError(f"{path}: cannot decode PNG (not a PNG, or a truncated or corrupt one)")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    n_ch = arr.shape[2]
    if channels is None:
        if n_ch in (3, 4):
            arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB if n_ch == 3 else cv2.COLOR_BGRA2RGBA)
        return arr
    rgb_order = {3: [2, 1, 0], 4: [2, 1, 0, 3]}.get(n_ch, list(range(n_ch)))  # BGR(A) -> RGB(A)
    chans = [int(c) for c in channels]
    if any(not 0 <= c < n_ch for c in chans):
        raise ValueError(f"{path}: has {n_ch} channel(s), asked for {chans}")
    # one basic slice per channel (a fancy index on the last axis is 20x slower)
    return np.stack([arr[:, :, rgb_order[c]] for c in chans], axis=-1)


# --------------------------------------------------------------------------- readers


def read_image(path) -> torch.Tensor:
    """An RGB image file (PNG/JPEG; gray or RGBA converted) -> float32 ``[3,H,W]`` in [0, 1]."""
    try:
        with Image.open(path) as im:
            return image_to_tensor(im.convert("RGB"))
    except (OSError, SyntaxError) as e:
        raise ValueError(f"{path}: cannot read image ({e})") from None


def read_label_ids(path) -> np.ndarray:
    """A single-channel label-id image (8-bit L/P, 16-bit I;16, 32-bit I) -> integer array.

    Palette ('P') PNGs give their palette indices (GTA5 stores its ids that way).
    Color-coded labels are refused: they need a color map (see :class:`kit.data.folders.FolderSegmentation`).
    """
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
                return np.asarray(im)
    except (OSError, SyntaxError) as e:
        raise ValueError(f"{path}: cannot read label image ({e})") from None
    raise ValueError(f"{path}: expected a single-channel label-id image (mode L or P: one id "
                     f"per pixel), got mode {mode}. Is this a color visualization (e.g. "
                     f"*_color.png) instead of the id map?")


def read_synthia_label(path) -> np.ndarray:
    """The class-id channel of a SYNTHIA ``GT/LABELS`` PNG, with full 16-bit values.

    The official files are 16-bit multi-channel PNGs: class id in the first channel,
    instance id in the second. Pillow reads 16-bit RGB(A) PNGs as 8-bit RGB(A),
    dropping the low byte of every sample (a class id 3 would read as 0), so such files
    are decoded by OpenCV (:func:`decode_png`), keeping channel 0 (R) only.
    Single-channel files (16-bit ``I;16`` or 8-bit, e.g. re-saved labels) and 8-bit RGB
    files (channel 0 taken) are read by Pillow.
    """
    try:
        head = png_header(path)
    except ValueError:
        head = None  # not a PNG: let Pillow try and report
    if head is not None and head["bit_depth"] == 16 and head["color_type"] in (2, 4, 6):
        return decode_png(path, channels=[0])[:, :, 0]
    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
            mode = im.mode
    except (OSError, SyntaxError) as e:
        raise ValueError(f"{path}: cannot read label image ({e})") from None
    if arr.ndim == 3:
        if mode not in ("RGB", "RGBA", "LA"):
            raise ValueError(f"{path}: unexpected label image mode {mode}")
        arr = arr[:, :, 0]
    return arr


def _image_size(path) -> tuple[int, int]:
    """(H, W) from the file header, without decoding pixels."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (OSError, SyntaxError) as e:
        raise ValueError(f"{path}: cannot read image ({e})") from None
    return h, w


class SegmentationFiles(Dataset):
    """Base reader: a fixed list of (image, label) files and a raw-id mapping.

    Subclasses build the file lists; this class reads, checks sizes, maps ids with one
    LUT gather and applies the transform.
    """

    layout: str = ""

    def __init__(self, image_paths: Sequence[Path], label_paths: Sequence[Path],
                 mapping: IdMapping | Callable, classes: Sequence[str],
                 transform: Callable | None = None, max_items: int | None = None,
                 label_reader: Callable = read_label_ids):
        if len(image_paths) != len(label_paths):
            raise ValueError("image and label lists differ in length")
        if max_items is not None:
            if max_items < 1:
                raise ValueError(f"max_items must be positive, got {max_items}")
            image_paths, label_paths = image_paths[:max_items], label_paths[:max_items]
        self.image_paths = [Path(p) for p in image_paths]
        self.label_paths = [Path(p) for p in label_paths]
        self.mapping = mapping
        self.classes = tuple(classes)
        self.transform = transform
        self.label_reader = label_reader

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def fingerprint(self) -> str:
        """The identity of this reader's content for the model cache (:func:`kit.cache.model_key`):
        the SHA-256 of every image and label file's bytes with its name (folder and file name, not
        the absolute path), the classes, the id mapping and the transform. Moving the dataset to
        another folder keeps it; editing a file's pixels (even at the same byte size), adding,
        removing or renaming a file changes it.

        Cost: the first call reads every file once (about 0.7 GB/s from the page cache on two CPU
        cores: 1 GB in 1.4 s; Cityscapes' train split, ~6.5 GB, in about 10 s). The hashes are
        remembered per file with its size, modification time and inode (:func:`kit.hashing.file_sha256`,
        kept across processes in ``$KIT_HASH_STORE``: a new process takes ~15 ms for 500 files) and the
        fingerprint on this reader, so later calls only ``stat`` the files. A file rewritten in place
        whose size, modification time (e.g. restored with ``touch -r``) and inode all stay the same
        is therefore not read again: delete the hash store to force a fresh read.
        """
        def stable_repr(obj) -> str:
            # objects without their own __repr__ would print a memory address: name their type only
            return repr(obj) if type(obj).__repr__ is not object.__repr__ else type(obj).__qualname__

        spec = {"type": type(self).__qualname__, "classes": list(self.classes),
                "mapping": stable_repr(self.mapping), "transform": stable_repr(self.transform),
                "label_reader": getattr(self.label_reader, "__name__", stable_repr(self.label_reader))}
        paths = self.image_paths + self.label_paths
        # stat-ing is cheap: it tells whether a file may have changed since the last call
        stamps = tuple((st.st_size, st.st_mtime_ns, st.st_ino) for st in map(os.stat, paths))
        memo = getattr(self, "_fingerprint_memo", None)
        if memo is not None and memo[0] == stamps and memo[1] == spec:
            return memo[2]
        files = [[p.parent.name, p.name, file_sha256(p)] for p in paths]
        flush_file_hashes()   # the next process reuses these hashes instead of reading the files again
        fp = config_hash({**spec, "files": files}, length=16)
        self._fingerprint_memo = (stamps, spec, fp)
        return fp

    def __len__(self) -> int:
        return len(self.image_paths)

    def read_raw(self, index: int) -> tuple[torch.Tensor, np.ndarray]:
        """Image tensor and the raw (unmapped) label ids of item ``index``."""
        img_path, lbl_path = self.image_paths[index], self.label_paths[index]
        image = read_image(img_path)
        raw = self.label_reader(lbl_path)
        if tuple(image.shape[-2:]) != tuple(raw.shape[:2]):
            raise ValueError(
                f"size mismatch: image {img_path} is {image.shape[-1]}x{image.shape[-2]} "
                f"(WxH) but its label {lbl_path} is {raw.shape[1]}x{raw.shape[0]}")
        return image, raw

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        image, raw = self.read_raw(index)
        label = torch.from_numpy(self.mapping(raw, source=str(self.label_paths[index])))
        if self.transform is not None:
            image, label = self.transform(image, label)
        return image, label

    def __repr__(self) -> str:
        # the labels' folder: an error that names the dataset then says where to look
        where = os.path.commonpath([str(p.parent) for p in self.label_paths]) if self.label_paths else "-"
        return (f"{type(self).__name__}({len(self)} items, {self.num_classes} classes, labels in {where}, "
                f"transform={self.transform!r})")


def _layout_error(kind: str, what: str, layout: str) -> FileNotFoundError:
    return FileNotFoundError(f"{kind}: {what}\nExpected layout:\n{layout}")


def _require_dir(path: Path, kind: str, layout: str) -> None:
    if not path.is_dir():
        raise _layout_error(kind, f"folder not found: {path}", layout)


def _files(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    sfx = tuple(s.lower() for s in suffixes)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(sfx))


def _pair(images: Sequence[Path], label_for: Callable[[Path], Path], kind: str,
          layout: str) -> list[Path]:
    labels = []
    for img in images:
        lbl = label_for(img)
        if not lbl.is_file():
            raise _layout_error(kind, f"image {img} has no label (looked for {lbl})", layout)
        labels.append(lbl)
    return labels


# --------------------------------------------------------------------------- Cityscapes


class Cityscapes(SegmentationFiles):
    """Cityscapes fine annotations, mapped to the 19 train ids (or the 16/13 subset).

    ``classes=16`` or ``13`` keeps the SYNTHIA-protocol subset, renumbered 0..15 / 0..12
    (``kit.data.labels.SYNTHIA_16`` / ``SYNTHIA_13``), everything else -> 255. Every
    Cityscapes label id (-1..33) is accepted; any other value raises.
    """

    layout = ("  <root>/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png\n"
              "  <root>/gtFine/<split>/<city>/<name>_gtFine_labelIds.png\n"
              "  (split: train | val | test; e.g. leftImg8bit/val/frankfurt/"
              "frankfurt_000000_000294_leftImg8bit.png)")

    def __init__(self, root, split: str = "train", classes: int = 19,
                 transform: Callable | None = None, max_items: int | None = None):
        if split not in ("train", "val", "test"):
            raise ValueError(f"Cityscapes: split must be train, val or test, got {split!r}")
        subset = subset_for(classes)
        root = Path(root)
        kind = f"Cityscapes({root}, split={split!r})"
        img_dir, lbl_dir = root / "leftImg8bit" / split, root / "gtFine" / split
        _require_dir(img_dir, kind, self.layout)
        _require_dir(lbl_dir, kind, self.layout)
        images = []
        for city in sorted(p for p in img_dir.iterdir() if p.is_dir()):
            images += sorted(city.glob("*_leftImg8bit.png"))
        if not images:
            raise _layout_error(kind, f"no <city>/*_leftImg8bit.png images in {img_dir}",
                                self.layout)

        def label_for(img: Path) -> Path:
            name = img.name[:-len("_leftImg8bit.png")]
            return lbl_dir / img.parent.name / f"{name}_gtFine_labelIds.png"

        labels = _pair(images, label_for, kind, self.layout)
        mapping = CITYSCAPES_IDS if classes == 19 else CITYSCAPES_IDS.then(subset)
        super().__init__(images, labels, mapping, subset_classes(subset), transform, max_items)
        self.root, self.split = root, split


# --------------------------------------------------------------------------- GTA5


class GTA5(SegmentationFiles):
    """GTA5 ("Playing for Data"): ``images/<n>.png`` with ``labels/<n>.png`` holding
    Cityscapes label ids (palette PNGs), mapped to the 19 train ids.

    ``split="all"`` takes every image. ``"train"``/``"val"`` read a list of names, one
    per line (``00001`` or ``00001.png``; blank lines and ``#`` comments skipped), from
    ``list_file`` or ``<root>/<split>.txt``. A given ``list_file`` is used whatever the split.

    Known quirk of the real data: a few GTA5 images differ in size from their label;
    they raise the size-mismatch error naming the file. Drop them with a list file.
    """

    layout = ("  <root>/images/<n>.png     e.g. images/00001.png (RGB)\n"
              "  <root>/labels/<n>.png     e.g. labels/00001.png (Cityscapes label ids)\n"
              "  <root>/<split>.txt        optional for split='train'/'val': names, one per line")

    def __init__(self, root, split: str = "all", list_file=None,
                 transform: Callable | None = None, max_items: int | None = None):
        if split not in ("all", "train", "val"):
            raise ValueError(f"GTA5: split must be all, train or val, got {split!r}")
        root = Path(root)
        kind = f"GTA5({root}, split={split!r})"
        img_dir, lbl_dir = root / "images", root / "labels"
        _require_dir(img_dir, kind, self.layout)
        _require_dir(lbl_dir, kind, self.layout)
        if list_file is None and split != "all":
            list_file = root / f"{split}.txt"
            if not list_file.is_file():
                raise _layout_error(kind, f"split list not found: {list_file} (pass "
                                    f"list_file=... or split='all')", self.layout)
        if list_file is not None:
            list_file = Path(list_file)
            if not list_file.is_file():
                raise _layout_error(kind, f"list file not found: {list_file}", self.layout)
            names = []
            for line in list_file.read_text().splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                name = os.path.basename(line)
                names.append(name if name.lower().endswith(".png") else name + ".png")
            images = [img_dir / n for n in sorted(set(names))]
            for img in images:
                if not img.is_file():
                    raise _layout_error(kind, f"{list_file} lists {img.name}, but {img} does "
                                        "not exist", self.layout)
            where = f"{list_file}"
        else:
            images = _files(img_dir, (".png",))
            where = f"{img_dir}"
        if not images:
            raise _layout_error(kind, f"no images in {where}", self.layout)
        labels = _pair(images, lambda p: lbl_dir / p.name, kind, self.layout)
        super().__init__(images, labels, CITYSCAPES_IDS, CITYSCAPES_CLASSES, transform, max_items)
        self.root, self.split = root, split


# --------------------------------------------------------------------------- SYNTHIA


class Synthia(SegmentationFiles):
    """SYNTHIA-RAND-CITYSCAPES: ``RGB/<n>.png`` with ``GT/LABELS/<n>.png``, evaluated on
    16 or 13 classes (contiguous ids in the order of ``kit.data.labels.SYNTHIA_16/13``).

    Labels are 16-bit PNGs with the class id (0..22, table in ``kit.data.labels``) in
    the first channel; see :func:`read_synthia_label` for how they are decoded. Ids
    above 22 raise.
    """

    layout = ("  <root>/RGB/<n>.png          e.g. RGB/0000000.png (RGB)\n"
              "  <root>/GT/LABELS/<n>.png    16-bit PNG, class id (0..22) in channel 0")

    def __init__(self, root, classes: int = 16, transform: Callable | None = None,
                 max_items: int | None = None):
        if classes not in (16, 13):
            raise ValueError(f"Synthia: classes must be 16 or 13, got {classes!r}")
        subset = subset_for(classes)
        root = Path(root)
        kind = f"Synthia({root})"
        img_dir, lbl_dir = root / "RGB", root / "GT" / "LABELS"
        _require_dir(img_dir, kind, self.layout)
        _require_dir(lbl_dir, kind, self.layout)
        images = _files(img_dir, (".png",))
        if not images:
            raise _layout_error(kind, f"no .png images in {img_dir}", self.layout)
        labels = _pair(images, lambda p: lbl_dir / p.name, kind, self.layout)
        super().__init__(images, labels, SYNTHIA_IDS.then(subset), subset_classes(subset),
                         transform, max_items, label_reader=read_synthia_label)
        self.root = root

