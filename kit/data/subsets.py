"""Labeled subsets for semi-supervised training: which images of a split keep their labels.

* :func:`label_subset` - the indices of a label ``fraction`` of a split: seeded, reproducible
  and *nested* (for one seed the 5% set contains the 2% set).
* :func:`label_fraction_sets` - ``{fraction: indices}`` for a list of fractions.
* :class:`RepeatTo` - those items of a dataset, cycled to at least a minimum length (so a 1%
  set of a small split still fills a batch).

DeP/DDeP's label-fraction curve (:mod:`kit.methods.ddep`) fine-tunes on these subsets.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch.utils.data import Dataset

__all__ = ["RepeatTo", "label_subset", "label_fraction_sets"]


class RepeatTo(Dataset):
    """The items ``indices`` of ``dataset``, cycled to at least ``min_len`` items (so a 1% set of a
    small split still fills a batch); ``len(unique)`` stays the number of labeled images."""

    def __init__(self, dataset: Dataset, indices: Sequence[int], min_len: int = 1):
        if not len(indices):
            raise ValueError("RepeatTo needs at least one index")
        self.dataset, self.unique = dataset, list(indices)
        reps = max(1, math.ceil(min_len / len(self.unique)))
        self.indices = self.unique * reps
        self.num_classes = getattr(dataset, "num_classes", None)
        self.classes = getattr(dataset, "classes", None)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[self.indices[i]]


def label_subset(n: int, fraction: float, seed: int = 0) -> list[int]:
    """The indices of the labeled images for a label ``fraction`` of a split of ``n`` images.

    The first ``max(1, round(fraction * n))`` entries of a permutation seeded by ``seed``,
    so subsets are reproducible and *nested*: for one seed the 5% set contains the 2% set.

    >>> a, b = label_subset(1000, 0.02, 0), label_subset(1000, 0.05, 0)
    >>> len(a), len(b), set(a) <= set(b)
    (20, 50, True)
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not 0 < float(fraction) <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction!r}")
    k = max(1, int(round(float(fraction) * n)))
    g = torch.Generator().manual_seed(1_000_003 * int(seed) + 12345)
    return torch.randperm(n, generator=g)[:k].tolist()


def label_fraction_sets(n: int, fractions: Sequence[float], seed: int = 0) -> dict[float, list[int]]:
    """``{fraction: indices}`` for every fraction (nested, see :func:`label_subset`)."""
    return {float(f): label_subset(n, f, seed) for f in fractions}
