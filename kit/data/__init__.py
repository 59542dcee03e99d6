"""Data: the toy world, real-dataset readers (:mod:`kit.data.real`: Cityscapes, GTA5, SYNTHIA;
:mod:`kit.data.folders`: your own image/label folders, BDD100K, CamVid), joint transforms,
label spaces, image mixing (:mod:`kit.data.mixing`, ClassMix), dataset wrappers
(:mod:`kit.data.wrappers`: :class:`Unlabeled`, alias ``ImagesOnly``) and labeled subsets
for semi-supervised training (:mod:`kit.data.subsets`: seeded, nested label fractions).

:func:`make_da_datasets` gives the four datasets of a domain-adaptation experiment
(source/target x train/val) from a config: the toy world by default, or the real
benchmarks when ``cfg["data_root"]`` is set (GTA5 or SYNTHIA -> Cityscapes, the papers'
resizing conventions, evaluation against full-resolution labels).

:func:`make_cdcl_datasets` gives several labelled datasets by name, ``{name: {"train", "val"}}``
(cross-dataset training, CDCL): toy-world cities, or Cityscapes, BDD100K and CamVid under
``cfg["data_root"]`` (:data:`REAL_LAYOUT`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from .labels import CITYSCAPES_CLASSES, IGNORE_INDEX
from .world import ToyWorld, render
from .world_spec import DOMAINS, WORLD_CLASSES, get_domain
from .wrappers import ImagesOnly, Unlabeled

__all__ = ["ToyWorld", "render", "DOMAINS", "WORLD_CLASSES", "get_domain", "make_da_datasets", "IGNORE_INDEX",
           "CITYSCAPES_CLASSES", "ResizeImage", "Unlabeled", "ImagesOnly", "make_cdcl_datasets", "REAL_LAYOUT",
           "describe_dataset", "VOID_LABELS_HINT"]


#: what to check when a dataset has no labelled pixel (training and evaluation say it alike)
VOID_LABELS_HINT = (f"Check the label files and the id mapping (Cityscapes needs *_gtFine_labelIds.png; label ids "
                    f"that all map to {IGNORE_INDEX}, such as 0 = unlabeled, leave no labelled pixel).")


def describe_dataset(dataset: Any) -> str:
    """A dataset named for an error message: its type, length and (where it has its own) repr;
    a wrapper without a repr (``torch.utils.data.Subset``) names the dataset it wraps too.

    >>> from torch.utils.data import Subset, TensorDataset
    >>> describe_dataset(Subset(TensorDataset(torch.zeros(5)), [0, 1]))
    'Subset of 2 items of TensorDataset of 5 items'
    """
    try:
        n = f"{len(dataset)} items"
    except TypeError:
        n = "unknown length"
    out = f"{type(dataset).__name__} of {n}"
    if type(dataset).__repr__ is not object.__repr__:
        return f"{out}: {dataset!r}"
    inner = getattr(dataset, "dataset", None)
    return f"{out} of {describe_dataset(inner)}" if inner is not None else out


class ResizeImage:
    """Resize the image only (bilinear, antialiased), keeping the label at full resolution:
    the papers evaluate predictions upsampled to the original label size."""

    def __init__(self, size):
        self.size = (int(size[0]), int(size[1]))

    def __repr__(self) -> str:
        return f"ResizeImage(size={self.size})"

    def __call__(self, image: torch.Tensor, label: torch.Tensor):
        img = F.interpolate(image[None], size=self.size, mode="bilinear", align_corners=False, antialias=True)[0]
        return img, label


def make_da_datasets(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``{"source_train", "source_val", "target_train", "target_val"}`` for a config.

    Toy world (``data_root`` is None): domains ``cfg["source"]`` -> ``cfg["target"]``.
    Real data: ``<data_root>/gta5`` (or ``synthia`` when ``cfg["source"] == "synthia"``)
    -> ``<data_root>/cityscapes``; source images resized to ``source_size``, target to
    ``size``; target val images resized to ``size`` with labels at their full size.
    ``source_val`` is None for real data (the papers do not evaluate on the source).
    """
    root = cfg.get("data_root")
    size = tuple(cfg["size"])
    src_size = tuple(cfg.get("source_size") or size)
    if not root:
        dev = cfg.get("render_device", "cpu")
        return {
            "source_train": ToyWorld(cfg["source"], "train", src_size, cfg["n_train"], device=dev),
            "source_val": ToyWorld(cfg["source"], "val", tuple(cfg["eval_size"]), cfg["n_val"]),
            "target_train": ToyWorld(cfg["target"], "train", size, cfg["n_train"], device=dev),
            "target_val": ToyWorld(cfg["target"], "val", tuple(cfg["eval_size"]), cfg["n_val"]),
        }
    from . import real
    from .transforms import Resize

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"DATA_ROOT {root} is not a folder; expected {root}/cityscapes and "
                                f"{root}/gta5 (or {root}/synthia)")
    classes = 16 if cfg["source"] == "synthia" else 19
    if cfg["source"] == "synthia":
        src = real.Synthia(root / "synthia", classes=classes, transform=Resize(src_size))
    else:
        src = real.GTA5(root / "gta5", transform=Resize(src_size))
    return {
        "source_train": src,
        "source_val": None,
        "target_train": real.Cityscapes(root / "cityscapes", "train", classes=classes, transform=Resize(size)),
        "target_val": real.Cityscapes(root / "cityscapes", "val", classes=classes, transform=ResizeImage(size)),
    }


#: real datasets under DATA_ROOT and their folder layout (paper profile)
REAL_LAYOUT = """<data_root>/cityscapes/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png, gtFine/... (Cityscapes reader)
<data_root>/bdd100k/images/{train,val}/*.jpg, labels/{train,val}/*_train_id.png (19 Cityscapes train ids)
<data_root>/camvid/{train,val}/*.png, {train,val}annot/*.png (SegNet CamVid: 11 classes, 11 = void)"""


def _real_dataset(root: Path, name: str, split: str, size, train: bool):
    from . import folders, real
    from .transforms import Compose, RandomCrop, RandomHorizontalFlip

    tf = Compose([RandomCrop(size), RandomHorizontalFlip()]) if train else ResizeImage(size)
    if name == "cityscapes":
        return real.Cityscapes(root / "cityscapes", split, transform=tf)
    if name == "bdd100k":
        return folders.BDD100K(root / "bdd100k", split, transform=tf)
    if name == "camvid":
        return folders.CamVid(root / "camvid", split, transform=tf)
    raise ValueError(f"unknown real dataset {name!r}; expected cityscapes, bdd100k or camvid laid out as\n{REAL_LAYOUT}")


def make_cdcl_datasets(cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{name: {"train": ds, "val": ds}}`` for every dataset in ``cfg["datasets"]``.

    Toy world (``data_root`` None): ``ToyWorld(name, split, size, n_train / n_val)``.
    Real data: ``cityscapes``, ``bdd100k``, ``camvid`` under ``data_root`` (:data:`REAL_LAYOUT`),
    training images randomly cropped to ``size``, validation images resized to ``eval_size``.
    """
    names = list(cfg["datasets"])
    if not names or len(set(names)) != len(names):
        raise ValueError(f"datasets must be a non-empty list of distinct names, got {names}")
    root = cfg.get("data_root")
    out = {}
    for n in names:
        if not root:
            if n not in DOMAINS:
                raise ValueError(f"unknown toy-world dataset {n!r}; expected one of {sorted(DOMAINS)}")
            out[n] = {"train": ToyWorld(n, "train", tuple(cfg["size"]), cfg["n_train"],
                                        device=cfg.get("render_device", "cpu")),
                      "val": ToyWorld(n, "val", tuple(cfg["eval_size"]), cfg["n_val"])}
        else:
            root = Path(root)
            out[n] = {"train": _real_dataset(root, n, "train", cfg["size"], True),
                      "val": _real_dataset(root, n, "val", cfg["eval_size"], False)}
    return out
