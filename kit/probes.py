"""Linear probes of a trained network's levels: what a level knows about the classes and the domain.

The premise of AdaptSegNet's *multi-level* adaptation is that a mid-level output can be
aligned usefully: the mid level (DeepLab-v2's layer3) still carries the class layout, so a
segmentation head on it is meaningful, and a head on it trained on the source loses on the
target, so aligning it has a gap to close. :func:`level_probes` measures both for each level
of a model with a linear read-out of the frozen features (nothing of the model is trained):
a linear (1×1) softmax classifier fitted on the level's features of source training images,
evaluated by mIoU at the level's resolution on the source and on the target validation
images. ``"pixels"`` is the same probe on the images' own colours (averaged down to the
first level's resolution): what a level knows beyond colour is its probe minus that one.

    >>> import torch
    >>> x = torch.cat([torch.zeros(10, 2), torch.ones(10, 2)]) + 0.01 * torch.arange(20.)[:, None]
    >>> y = torch.cat([torch.zeros(10), torch.ones(10)]).long()
    >>> w = fit_linear(x, y, 2)
    >>> bool((predict_linear(w, x) == y).all())
    True
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .evaluation import _loader
from .metrics import confusion_matrix, miou

__all__ = ["level_probes", "fit_linear", "predict_linear", "deeplab_levels"]


def _standardize(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return (x - ref.mean(0)) / ref.std(0).clamp_min(1e-6)


def fit_linear(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float = 1e-3,
               steps: int = 100) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A multinomial logistic regression on standardized ``x`` [N,D] -> ``y`` [N] (L-BFGS, L2
    ``weight_decay``); returns ``(W, b, x_ref)``, what :func:`predict_linear` needs."""
    x = x.double()
    z = _standardize(x, x)
    w = torch.zeros(z.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z @ w + b, y) + weight_decay * (w ** 2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return w.detach(), b.detach(), x


def predict_linear(fitted: tuple[torch.Tensor, torch.Tensor, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    w, b, ref = fitted
    return (_standardize(x.double(), ref) @ w + b).argmax(1)


def deeplab_levels(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The backbone levels of a :class:`kit.models.DeepLabV2` (``layer1`` ... ``layer4``)."""
    return model.backbone.forward_features(model.norm(x))


@torch.no_grad()
def _features(model, levels_fn, dataset, max_items, layers, batch_size):
    feats = {k: [] for k in (*layers, "pixels")}
    labels = []
    for x, y in _loader(dataset, max_items, batch_size):
        labels.append(y)
        out = levels_fn(model, x.to(next(model.parameters()).device))
        for k in layers:
            feats[k].append(out[k].float().cpu())
        feats["pixels"].append(x)
    return {k: torch.cat(v) for k, v in feats.items()}, torch.cat(labels)


def _pixels(f: torch.Tensor, y: torch.Tensor, num_classes: int, ignore_index: int):
    """Feature map [B,C,h,w] and labels [B,H,W] -> pixel features [N,C] and labels [N] at (h, w)."""
    yl = F.interpolate(y[:, None].float(), size=f.shape[-2:], mode="nearest")[:, 0].long()
    fx = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])
    yl = yl.reshape(-1)
    keep = (yl != ignore_index) & (yl >= 0) & (yl < num_classes)
    return fx[keep], yl[keep]


def level_probes(model: nn.Module, source_train, source_val, target_val, num_classes: int,
                 layers: Sequence[str] = ("layer3", "layer4"), max_items: int = 50,
                 levels_fn: Callable[[nn.Module, torch.Tensor], Mapping[str, torch.Tensor]] = deeplab_levels,
                 batch_size: int = 16, ignore_index: int = 255) -> dict[str, dict[str, float]]:
    """``{level: {"source_miou": ..., "target_miou": ...}}`` (%) for each of ``layers`` and for
    ``"pixels"``: a linear probe fitted on the level's features of the first ``max_items``
    ``source_train`` images, evaluated on as many ``source_val`` and ``target_val`` images."""
    if min(len(source_train), len(source_val), len(target_val)) < 1:
        raise ValueError("level_probes needs at least one image in each of source_train, source_val, target_val")
    was_training = model.training
    model.eval()
    splits = {name: _features(model, levels_fn, d, max_items, layers, batch_size)
              for name, d in (("train", source_train), ("source", source_val), ("target", target_val))}
    model.train(was_training)
    size = splits["train"][0][layers[0]].shape[-2:]
    for f, _ in splits.values():   # colour at the first probed level's resolution
        f["pixels"] = F.adaptive_avg_pool2d(f["pixels"], size)
    out = {}
    for k in (*layers, "pixels"):
        probe = fit_linear(*_pixels(splits["train"][0][k], splits["train"][1], num_classes, ignore_index), num_classes)
        out[k] = {}
        for name in ("source", "target"):
            x, y = _pixels(splits[name][0][k], splits[name][1], num_classes, ignore_index)
            out[k][f"{name}_miou"] = 100.0 * miou(confusion_matrix(predict_linear(probe, x), y, num_classes))
    return out
