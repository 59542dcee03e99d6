"""Folder readers: a generic image/label folder reader (your own data) and the two CDCL
datasets read through it, BDD100K and CamVid (SegNet's 11-class release, colour labels).

Built on :class:`kit.data.real.SegmentationFiles`: same item format, same checks, same
errors naming the file or folder and the expected layout.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from PIL import Image

from .labels import CAMVID_CLASSES, CITYSCAPES_CLASSES, IGNORE_INDEX, IdMapping, UnknownLabelIdError
from .real import SegmentationFiles, _files, _layout_error, _require_dir, read_label_ids

__all__ = ["FolderSegmentation", "BDD100K", "CamVid"]


class _ColorMapping:
    """RGB color -> train id, vectorized (colors packed into one int, then searchsorted)."""

    def __init__(self, color_map: Mapping[tuple, int | None]):
        keys = np.array([(int(r) << 16) | (int(g) << 8) | int(b) for r, g, b in color_map],
                        np.int64)
        vals = np.array([IGNORE_INDEX if v is None else int(v) for v in color_map.values()],
                        np.int64)
        order = np.argsort(keys)
        self.keys, self.vals = keys[order], vals[order]

    def __repr__(self) -> str:
        return f"_ColorMapping({dict(zip(self.keys.tolist(), self.vals.tolist()))})"

    def __call__(self, raw: np.ndarray, source: str = "label") -> np.ndarray:
        if raw.ndim != 3 or raw.shape[2] < 3:
            raise ValueError(f"{source}: a color label map needs an RGB label image, got "
                             f"shape {raw.shape}")
        code = ((raw[:, :, 0].astype(np.int64) << 16) | (raw[:, :, 1].astype(np.int64) << 8)
                | raw[:, :, 2].astype(np.int64))
        pos = np.clip(np.searchsorted(self.keys, code), 0, len(self.keys) - 1)
        found = self.keys[pos] == code
        if not found.all():
            c = int(code[~found][0])
            raise UnknownLabelIdError(f"{source}: unknown label color "
                                      f"{(c >> 16, (c >> 8) & 255, c & 255)}")
        return self.vals[pos]


def _read_rgb_label(path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError) as e:
        raise ValueError(f"{path}: cannot read label image ({e})") from None


class FolderSegmentation(SegmentationFiles):
    """Generic reader: images in ``image_dir``, labels in ``label_dir``, paired by stem.

    * ``label_map``: ``{raw id: train id or None}`` (None and unlisted ``void_ids`` ->
      255; any other raw id raises). With RGB-tuple keys, e.g. ``{(128, 64, 128): 0}``,
      labels are read as color images (CamVid ``*_L.png``). ``None`` (default): the
      labels already hold train ids ``0..len(classes)-1`` (and 255).
    * Pairing: an image ``<stem><image_suffix>`` goes with the label whose stem, after
      removing ``label_strip`` from its end (e.g. ``"_L"`` for CamVid,
      ``"_train_id"`` for BDD100K) or after ``label_stem_fn``, equals ``<stem>``.
    * ``recursive=True`` also searches subfolders (pairing by stem, so stems must be unique).
    """

    layout = ("  <image_dir>/<stem><image_suffix>\n"
              "  <label_dir>/<stem><label_strip><label_suffix>   (single-channel ids, or RGB "
              "with a color label_map)")

    def __init__(self, image_dir, label_dir, label_map: Mapping | None = None,
                 classes: Sequence[str] = CITYSCAPES_CLASSES, image_suffix: str = ".png",
                 label_suffix: str = ".png", label_strip: str = "",
                 label_stem_fn: Callable[[str], str] | None = None,
                 void_ids: Sequence[int] = (IGNORE_INDEX,),
                 transform: Callable | None = None, max_items: int | None = None,
                 recursive: bool = False):
        image_dir, label_dir = Path(image_dir), Path(label_dir)
        classes = tuple(classes)
        kind = f"FolderSegmentation({image_dir}, {label_dir})"
        if label_strip and label_stem_fn is not None:
            raise ValueError("FolderSegmentation: give label_strip or label_stem_fn, not both")
        _require_dir(image_dir, kind, self.layout)
        _require_dir(label_dir, kind, self.layout)

        def listing(folder: Path, suffix: str) -> list[Path]:
            if recursive:
                return sorted(p for p in folder.rglob("*") if p.is_file()
                              and p.name.lower().endswith(suffix.lower()))
            return _files(folder, (suffix,))

        images = listing(image_dir, image_suffix)
        if not images:
            raise _layout_error(kind, f"no *{image_suffix} images in {image_dir}", self.layout)
        by_key: dict[str, Path] = {}
        for lbl in listing(label_dir, label_suffix):
            stem = lbl.name[:len(lbl.name) - len(label_suffix)]
            if label_stem_fn is not None:
                key = label_stem_fn(stem)
            elif label_strip:
                if not stem.endswith(label_strip):
                    continue
                key = stem[:-len(label_strip)]
            else:
                key = stem
            if key in by_key:
                raise ValueError(f"{kind}: labels {by_key[key]} and {lbl} both pair with stem {key!r}")
            by_key[key] = lbl
        labels = []
        for img in images:
            key = img.name[:len(img.name) - len(image_suffix)]
            if key not in by_key:
                raise _layout_error(kind, f"image {img} has no label (looked for "
                                    f"{label_dir / (key + label_strip + label_suffix)})",
                                    self.layout)
            labels.append(by_key[key])

        n = len(classes)
        reader = read_label_ids
        if label_map is None:
            mapping = IdMapping(None, frozenset(void_ids), 256, identity_ids=tuple(range(n)))
        elif label_map and all(isinstance(k, tuple) for k in label_map):
            mapping, reader = _ColorMapping(label_map), _read_rgb_label
        else:
            bad = [v for v in label_map.values() if v is not None and not (0 <= v < n or v == IGNORE_INDEX)]
            if bad:
                raise ValueError(f"{kind}: label_map sends ids to {bad}, outside 0..{n - 1} "
                                 f"({n} classes) and 255")
            size = 256 if max(list(label_map) + list(void_ids) + [0]) < 256 else 65536
            mapping = IdMapping(dict(label_map), frozenset(void_ids), size)
        super().__init__(images, labels, mapping, classes, transform, max_items,
                         label_reader=reader)
        self.image_dir, self.label_dir = image_dir, label_dir


# --------------------------------------------------------------------------- BDD100K, CamVid


class BDD100K(FolderSegmentation):
    """BDD100K semantic segmentation: ``images/<split>/<n>.jpg`` with
    ``labels/<split>/<n>_train_id.png`` holding the 19 Cityscapes train ids (255 = ignore).

    ``root`` is the ``bdd100k`` folder; ``split`` names the subfolders (``train``, ``val``).
    """

    def __init__(self, root, split: str = "train", transform: Callable | None = None,
                 max_items: int | None = None):
        root = Path(root)
        super().__init__(root / "images" / split, root / "labels" / split,
                         classes=CITYSCAPES_CLASSES, image_suffix=".jpg", label_strip="_train_id",
                         transform=transform, max_items=max_items)


class CamVid(FolderSegmentation):
    """CamVid as SegNet distributes it: ``<split>/<n>.png`` with ``<split>annot/<n>.png``
    holding class ids 0..10 (:data:`kit.data.labels.CAMVID_CLASSES`) and 11 = void (-> 255).

    ``root`` is the ``camvid`` folder; ``split`` is ``train``, ``val`` or ``test``.
    """

    def __init__(self, root, split: str = "train", transform: Callable | None = None,
                 max_items: int | None = None):
        root = Path(root)
        label_map: dict[int, int | None] = {i: i for i in range(len(CAMVID_CLASSES))}
        label_map[11] = None
        super().__init__(root / split, root / f"{split}annot", label_map=label_map,
                         classes=CAMVID_CLASSES, transform=transform, max_items=max_items)
