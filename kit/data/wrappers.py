"""Dataset wrappers that change what a dataset hands out, not what it holds.

:class:`Unlabeled` (alias :data:`ImagesOnly`) shows a labelled segmentation dataset as
an unlabelled one: the label of every item is replaced by the item's index. Methods
that must not see target labels (DAS3's source-free stages, DeP/DDeP's denoising
pretraining) read their data through it, so no code path of theirs can reach a label.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

__all__ = ["Unlabeled", "ImagesOnly"]


class Unlabeled(Dataset):
    """A view of a segmentation dataset that hides its labels: item ``i`` is ``(image, i)``.

    ``i`` is an int64 scalar tensor, so batches collate as usual and a step can look up
    per-item data (e.g. cached pseudo-labels) by index. Items of the wrapped dataset may
    be ``(image, label, ...)`` tuples or bare images. Wrapping twice wraps once. The
    wrapper keeps ``num_classes`` and ``fingerprint`` (the wrapped dataset's identity),
    so cache keys that read a dataset's identity see through it.

    >>> from torch.utils.data import TensorDataset
    >>> ds = Unlabeled(TensorDataset(torch.zeros(3, 3, 2, 2), torch.ones(3, 2, 2)))
    >>> x, i = ds[2]
    >>> tuple(x.shape), int(i), len(Unlabeled(ds))
    ((3, 2, 2), 2, 3)
    """

    def __init__(self, dataset: Dataset):
        if isinstance(dataset, Unlabeled):
            dataset = dataset.dataset
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(f"expected a map-style dataset of (image, label) pairs, got {type(dataset).__name__}")
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        item = self.dataset[i]
        image = item[0] if isinstance(item, (tuple, list)) else item
        return image, torch.tensor(i, dtype=torch.int64)

    @property
    def num_classes(self) -> int | None:
        return getattr(self.dataset, "num_classes", None)

    @property
    def fingerprint(self):
        """The identity of the images: the wrapped dataset's (:func:`kit.hashing.data_identity`,
        a content fingerprint when it has no ``fingerprint`` of its own)."""
        from ..hashing import data_identity

        return data_identity(self.dataset)

    def __repr__(self) -> str:
        return f"Unlabeled({self.dataset!r})"


#: The same wrapper under the name DeP/DDeP used (``kit.methods.ddep.ImagesOnly``).
ImagesOnly = Unlabeled
