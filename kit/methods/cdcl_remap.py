"""CDCL's label-remapping baseline (Wang et al. 2021, the paper's "label remapping"): one
ordinary network (shared BNs, one head) on the union of the datasets with a merged label space.

* :class:`LabelRemap`: the union label space and, per dataset, which union classes each of
  its classes covers (:meth:`LabelRemap.from_domains` for toy-world domains,
  :func:`label_remap_for` for the datasets of an experiment, toy or Cityscapes-space real).
* :func:`label_remap_loss`: a dataset's class that merges several union classes is trained
  with the log of their summed probability.
* :class:`GroupedOutput`: the union-space model seen as a model of dataset i (evaluation).

:mod:`kit.methods.cdcl` trains and evaluates it as ``kind="remap"`` (each dataset's
:class:`kit.methods.cdcl.Route` carries its ``membership``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import losses
from ..data.labels import CAMVID_TO_CITYSCAPES, CITYSCAPES_CLASSES, IGNORE_INDEX
from ..data.world_spec import DOMAINS, WORLD_CLASSES

__all__ = ["LabelRemap", "label_remap_loss", "GroupedOutput", "label_remap_for"]


@dataclass
class LabelRemap:
    """A merged ("union") label space and, per dataset, which union classes each of its
    classes covers.

    ``groups[i][c]`` is the tuple of union classes that dataset i's class ``c`` stands for
    (one class for a shared class, several where the dataset merges classes, e.g. CamVid's
    or city C's "vegetation" = vegetation + terrain). Every union class belongs to at most
    one class of each dataset (to none if the dataset does not label it).
    """

    union: tuple[str, ...]
    spaces: tuple[tuple[str, ...], ...]
    groups: tuple[dict[str, tuple[str, ...]], ...]

    def __post_init__(self):
        self.union = tuple(self.union)
        self.spaces = tuple(tuple(s) for s in self.spaces)
        if len(set(self.union)) != len(self.union):
            raise ValueError(f"union label space has duplicates: {self.union}")
        if len(self.groups) != len(self.spaces):
            raise ValueError(f"{len(self.spaces)} label spaces but {len(self.groups)} group maps")
        for i, (space, groups) in enumerate(zip(self.spaces, self.groups)):
            if set(groups) != set(space):
                raise ValueError(f"dataset {i}: groups must name each of its classes {space} once, got {list(groups)}")
            seen: dict[str, str] = {}
            for c, members in groups.items():
                if not members:
                    raise ValueError(f"dataset {i}: class {c!r} covers no union class")
                for u in members:
                    if u not in self.union:
                        raise ValueError(f"dataset {i}: class {c!r} maps to {u!r}, not in the union {self.union}")
                    if u in seen:
                        raise ValueError(f"dataset {i}: union class {u!r} is in both {seen[u]!r} and {c!r}")
                    seen[u] = c

    @classmethod
    def from_domains(cls, names: Sequence[str]) -> "LabelRemap":
        """The remap of toy-world domains: the union is every world class some domain labels."""
        specs = [DOMAINS[n] if isinstance(n, str) else n for n in names]
        union = tuple(w for w in WORLD_CLASSES if any(s.label_of.get(w, w) is not None for s in specs))
        groups = []
        for s in specs:
            g: dict[str, tuple[str, ...]] = {c: () for c in s.classes}
            for w in union:
                t = s.label_of.get(w, w)
                if t is not None:
                    g[t] = g[t] + (w,)
            groups.append(g)
        return cls(union, tuple(s.classes for s in specs), tuple(groups))

    @property
    def num_classes(self) -> int:
        return len(self.union)

    def membership(self, i: int) -> torch.Tensor:
        """float [K_i, K_union]: M[c, u] = 1 if dataset i's class c covers union class u."""
        space = self.spaces[i]
        m = torch.zeros(len(space), len(self.union))
        for c, members in self.groups[i].items():
            for u in members:
                m[space.index(c), self.union.index(u)] = 1.0
        return m

    def lut(self, i: int) -> torch.Tensor:
        """int64 [K_union]: union class -> dataset i's class (255 where dataset i does not label it)."""
        out = torch.full((len(self.union),), IGNORE_INDEX, dtype=torch.int64)
        m = self.membership(i)
        for u in range(len(self.union)):
            hit = m[:, u].nonzero()
            if len(hit):
                out[u] = int(hit[0])
        return out


def label_remap_loss(logits: torch.Tensor, labels: torch.Tensor, membership: torch.Tensor,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Cross-entropy of a union-space prediction against one dataset's labels [CDCL: label remapping loss].

    Shapes: ``logits`` [B,K_union,h,w] (upsampled to the label size here), ``labels``
    [B,H,W] in dataset space (``ignore_index`` ignored), ``membership`` [K_d,K_union]
    (:meth:`LabelRemap.membership`). The probability of dataset class c is the sum of the
    probabilities of the union classes it covers; the loss is ``-mean log p(c)``.
    With an identity membership it equals :func:`kit.losses.seg_loss`.

    >>> logits = torch.zeros(1, 3, 1, 2); m = torch.tensor([[1., 1., 0.], [0., 0., 1.]])
    >>> round(float(label_remap_loss(logits, torch.tensor([[[0, 1]]]), m)), 4)  # (log 1.5 + log 3) / 2
    0.752
    """
    if membership.dim() != 2 or membership.shape[1] != logits.shape[1]:
        raise ValueError(f"membership must be [K_dataset, K_union={logits.shape[1]}], got {tuple(membership.shape)}")
    losses.check_labels(labels, membership.shape[0], ignore_index)
    logits = losses.upsample(logits, labels.shape[-2:]).float()
    prob = F.softmax(logits, dim=1)
    grouped = torch.einsum("bkhw,ck->bchw", prob, membership.to(prob)).contiguous()
    valid = labels != ignore_index
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return F.nll_loss(grouped.clamp_min(1e-12).log(), labels, ignore_index=ignore_index)


class GroupedOutput(nn.Module):
    """Wraps a union-space model for evaluation on dataset i: ``"out"`` becomes the log of the
    grouped probabilities [B,K_i,h,w] (softmax of it gives back the grouped probabilities)."""

    def __init__(self, model: nn.Module, membership: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("membership", membership.float())

    def forward(self, x: torch.Tensor, **kw) -> dict[str, torch.Tensor]:
        out = dict(self.model(x, **kw))
        prob = F.softmax(out["out"].float(), dim=1)
        out["out"] = torch.einsum("bkhw,ck->bchw", prob, self.membership).clamp_min(1e-12).log()
        return out


def label_remap_for(datasets: Mapping[str, Mapping[str, Any]]) -> LabelRemap:
    """The :class:`LabelRemap` of the given datasets (toy domains, or Cityscapes-space real data)."""
    names = list(datasets)
    if all(n in DOMAINS for n in names):
        return LabelRemap.from_domains(names)
    groups, spaces = [], []
    for n in names:
        cls = tuple(datasets[n]["train"].classes)
        spaces.append(cls)
        groups.append(CAMVID_TO_CITYSCAPES if n == "camvid" else {c: (c,) for c in cls})
    return LabelRemap(tuple(CITYSCAPES_CLASSES), tuple(spaces), tuple(dict(g) for g in groups))
