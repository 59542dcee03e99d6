"""DAS3's passes over the unlabelled target set.

One pass of a frozen model over the target images (:func:`scan_target`, labels never
read) gives what two stages of :mod:`kit.methods.das3` need before they train:

* the max probability and argmax of a random sample of pixels, from which
  :func:`pseudo_label_thresholds` sets the positive pseudo-label thresholds (class-wise
  top-K, or one global threshold) of stage 2 and of stage 3 (``stage3="kit"``);
* the mean normalized entropy of each image, which ranks the images for stage 3's
  easy / hard split (:meth:`Scan.split`).

Also what the stages share around the frozen model that scans and labels the target
(:func:`kit.models.utils.make_teacher`): :func:`_to` (put it where the engine puts the
student), :func:`_probs` (its upsampled softmax), :func:`_num_classes` (the check that the
model is a segmenter), and :func:`_stage3_split` (stage 3's scan and easy / hard split, both
variants).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from .. import losses
from ..data.wrappers import Unlabeled
from ..machine import autocast

__all__ = ["Scan", "pseudo_label_thresholds", "scan_target"]


def _num_classes(model: nn.Module) -> int:
    n = getattr(model, "num_classes", None)
    if not isinstance(n, int):
        raise ValueError(f"{type(model).__name__} has no integer 'num_classes'; DAS3 needs a segmenter like DeepLabV2")
    return n


@torch.no_grad()
def _probs(model: nn.Module, x: torch.Tensor, size, amp: str) -> torch.Tensor:
    with autocast(x.device, amp):
        logits = model(x)["out"]
    return F.softmax(losses.upsample(logits.float(), size), 1)


def _to(model: nn.Module, device: torch.device, cfg: Mapping[str, Any]) -> nn.Module:
    """Move a frozen model where the engine puts the student (device, memory format)."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if cfg["channels_last"] else model


@dataclass
class Scan:
    """What one pass of a model over the (unlabelled) target set gives.

    ``entropy``: mean normalized pixel entropy per scanned image [N]; ``items``: their
    dataset indices [N]; ``confidence``/``pred``: max probability and argmax of a random
    sample of pixels (``scan_pixels`` per image), for the pseudo-label thresholds.
    """

    items: torch.Tensor
    entropy: torch.Tensor
    confidence: torch.Tensor
    pred: torch.Tensor
    num_classes: int

    def thresholds(self, top_k: float, mode: str = "classwise") -> torch.Tensor:
        return pseudo_label_thresholds(self.confidence, self.pred, self.num_classes, top_k, mode)

    def split(self, easy_ratio: float) -> tuple[list[int], list[int]]:
        """(easy, hard) dataset indices: the ``easy_ratio`` lowest-entropy images and the rest."""
        if not 0.0 < easy_ratio < 1.0:
            raise ValueError(f"easy_ratio must be in (0, 1), got {easy_ratio}")
        order = torch.argsort(self.entropy, stable=True)
        n_easy = min(max(1, round(easy_ratio * len(order))), len(order) - 1)
        items = self.items[order].tolist()
        return items[:n_easy], items[n_easy:]


def pseudo_label_thresholds(confidence: torch.Tensor, pred: torch.Tensor, num_classes: int, top_k: float,
                            mode: str = "classwise") -> torch.Tensor:
    """Thresholds [C] for positive pseudo-labels: class-wise top-K (DAS3) or one global
    threshold that keeps the same proportion of all pixels (ablation), repeated per class."""
    if mode == "classwise":
        return losses.classwise_thresholds(confidence, pred, num_classes, top_k)
    if mode == "global":
        return torch.full((num_classes,), losses.global_threshold(confidence, top_k))
    raise ValueError(f"threshold_mode must be 'classwise' or 'global', got {mode!r}")


@torch.no_grad()
def scan_target(model: nn.Module, target: Dataset, items: Sequence[int] | None = None, batch_size: int = 32,
                scan_pixels: int = 2048, amp: str = "auto", seed: int = 0) -> Scan:
    """Run ``model`` (eval mode) over target images (labels never read); see :class:`Scan`."""
    target = Unlabeled(target)
    num_classes = _num_classes(model)
    items = list(range(len(target))) if items is None else [int(i) for i in items]
    if not items:
        raise ValueError("scan_target needs at least one target image")
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    ent, conf, pred = [], [], []
    loader = DataLoader(Subset(target, items), batch_size=batch_size, shuffle=False)
    for x, _idx in loader:
        x = x.to(dev)
        prob = _probs(model, x, x.shape[-2:], amp).cpu()
        h = losses.normalized_entropy(prob)                      # [B,H,W]
        ent.append(h.flatten(1).mean(1))
        c, p = prob.max(1)
        c, p = c.flatten(1), p.flatten(1)
        k = min(scan_pixels, c.shape[1])
        pick = torch.stack([torch.randperm(c.shape[1], generator=g)[:k] for _ in range(c.shape[0])])
        conf.append(c.gather(1, pick).flatten().half())
        pred.append(p.gather(1, pick).flatten().to(torch.uint8 if num_classes <= 255 else torch.int64))
    model.train(was_training)
    return Scan(torch.tensor(items), torch.cat(ent), torch.cat(conf).float(), torch.cat(pred).long(), num_classes)


def _stage3_split(teacher: nn.Module, target: Dataset, cfg: Mapping[str, Any], seed: int):
    scan = scan_target(teacher, target, None, cfg["eval_batch_size"], cfg["scan_pixels"], cfg["amp"], seed)
    easy, hard = scan.split(float(cfg["easy_ratio"]))
    half = max(1, int(cfg["batch_size"]) // 2)
    if len(easy) < half or len(hard) < half:
        raise ValueError(f"the easy ({len(easy)}) and hard ({len(hard)}) splits need at least {half} images each "
                         f"(half a batch); use more target images or a different easy_ratio")
    return scan, easy, hard, half
