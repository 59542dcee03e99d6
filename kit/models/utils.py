"""Small helpers shared by every model of the kit.

* :func:`upsample_like` - bilinear upsampling of logits to a label size.
* :class:`InputNorm` - the input normalization every segmentation model applies first.
* :func:`check_image` - the one input check (tensor, 4-D, channels, minimum size).
* :func:`param_groups_from` - builds the ``param_groups()`` list (backbone x1, head x10).
* :func:`count_parameters`, :func:`count_flops` - model size and cost (CDCL "no extra
  inference cost" claim, benchmarks).
* :func:`freeze` / :func:`unfreeze` - stop / restart gradients of a module (DDeP);
  :func:`set_requires_grad` - the same over one module or a collection of them (AdaptSegNet's D).
* :func:`make_teacher` - a frozen copy of a model in eval mode (DAS3's pseudo-labeller and teacher).
* :func:`ema_alpha_at` / :func:`ema_update` - the EMA teacher (DAS3's ATP stage 3).
* :func:`reestimate_bn` - BatchNorm statistics recomputed on other images, "AdaBN" (DAS3's reference).
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from ..data.wrappers import Unlabeled
from ..machine import autocast

__all__ = [
    "upsample_like", "InputNorm", "check_image", "param_groups_from",
    "count_parameters", "count_flops", "freeze", "unfreeze", "set_requires_grad", "INPUT_NORMS", "ema_alpha_at",
    "ema_update", "make_teacher", "reestimate_bn",
]

# name -> (mean, std, scale, to_bgr); the image is first multiplied by `scale`.
INPUT_NORMS = {
    # torchvision ImageNet statistics, RGB in [0, 1].
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1.0, False),
    # Official AdaptSegNet / Caffe DeepLab preprocessing: BGR, 0..255, mean subtraction, no std.
    "caffe": ((104.008, 116.669, 122.675), (1.0, 1.0, 1.0), 255.0, True),
}


def upsample_like(logits: torch.Tensor, size) -> torch.Tensor:
    """Bilinearly resize ``logits`` [B,C,h,w] to ``size`` (align_corners=False).

    ``size`` is ``(H, W)``, a ``torch.Size`` or a tensor whose last two dims give the size
    (e.g. the label [B,H,W] or the image [B,3,H,W]). Returns [B,C,H,W].
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 4:
        raise ValueError(f"upsample_like expects logits of shape [B,C,h,w], got "
                         f"{type(logits).__name__}{tuple(getattr(logits, 'shape', ()))}")
    if isinstance(size, torch.Tensor):
        if size.dim() < 2:
            raise ValueError(f"size tensor must have at least 2 dims, got shape {tuple(size.shape)}")
        size = size.shape[-2:]
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (H, W) with positive entries, got {size}")
    if tuple(logits.shape[-2:]) == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class InputNorm(nn.Module):
    """Normalizes images [B,3,H,W] in [0,1] RGB inside the model.

    ``mode="imagenet"``: ``(x - mean) / std`` with the ImageNet statistics.
    ``mode="caffe"``: the official AdaptSegNet preprocessing, RGB->BGR, x255, minus
    (104.008, 116.669, 122.675), no std. ``mode=None``: identity.
    mean/std are non-persistent buffers (they move with ``.to()`` but stay out of checkpoints).
    """

    def __init__(self, mode: str | None = "imagenet"):
        super().__init__()
        if mode is not None and mode not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {sorted(INPUT_NORMS)} or None, got {mode!r}")
        self.mode = mode
        mean, std, scale, bgr = INPUT_NORMS.get(mode, ((0.0,) * 3, (1.0,) * 3, 1.0, False))
        self.scale = scale
        self.to_bgr = bgr
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode is None:
            return x
        if self.to_bgr:
            x = x.flip(1)
        return (x * self.scale - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


def check_image(x, channels: int = 3, min_size: int = 1, who: str = "model") -> None:
    """Raises a clear error unless ``x`` is a float tensor [B, channels, H, W], H, W >= min_size."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who} expects a torch.Tensor [B,{channels},H,W], got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{who} expects a 4-D tensor [B,{channels},H,W], got shape {tuple(x.shape)}"
                         + (" (add a batch dim with x[None])" if x.dim() == 3 else ""))
    if x.shape[1] != channels:
        raise ValueError(f"{who} expects {channels} input channels [B,{channels},H,W], "
                         f"got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{who} expects a floating-point image tensor, got dtype {x.dtype}")
    h, w = x.shape[-2:]
    if h < min_size or w < min_size:
        raise ValueError(f"{who} needs inputs of at least {min_size}x{min_size} pixels, "
                         f"got {h}x{w}")


def _trainable(modules_or_params) -> list[nn.Parameter]:
    out = []
    for m in modules_or_params:
        params = m.parameters() if isinstance(m, nn.Module) else [m]
        out.extend(p for p in params if p.requires_grad)
    return out


def param_groups_from(groups: Sequence[tuple[str, Iterable, float]]) -> list[dict]:
    """Builds ``[{"params", "lr_mult", "name"}, ...]`` from ``(name, modules, lr_mult)``.

    Frozen parameters (``requires_grad=False``) are skipped, a parameter listed twice
    is kept in its first group only, and groups left empty are dropped (so look groups
    up by ``"name"``, not by position).
    """
    seen: set[int] = set()
    result = []
    for name, modules, lr_mult in groups:
        params = []
        for p in _trainable(modules):
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
        if params:
            result.append({"params": params, "lr_mult": float(lr_mult), "name": name})
    return result


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (shared parameters counted once)."""
    params = {id(p): p for p in model.parameters() if p.requires_grad or not trainable_only}
    return sum(p.numel() for p in params.values())


def count_flops(model: nn.Module, input_shape, **forward_kwargs) -> int:
    """Multiply-accumulates (MACs) of one forward pass on a zero input of ``input_shape``.

    Counts only ``nn.Conv2d`` / ``nn.ConvTranspose2d`` (output elements x in_channels/groups
    x kernel area) and ``nn.Linear`` modules (output elements x in_features), via forward
    hooks; normalization, activations, pooling, interpolation and attention matmuls are
    not counted. ``input_shape`` is [B,C,H,W] (or [C,H,W], then B=1); the count covers
    the whole batch. The model runs in eval mode under ``no_grad`` and its mode is restored.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1,) + shape
    if len(shape) != 4:
        raise ValueError(f"input_shape must be [B,C,H,W] or [C,H,W], got {input_shape}")
    total = [0]

    def conv_hook(m, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1]
        total[0] += out.numel() * (m.in_channels // m.groups) * k

    def convt_hook(m, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1]
        # each input element is multiplied by (out_channels/groups) * k weights
        total[0] += inp[0].numel() * (m.out_channels // m.groups) * k

    def linear_hook(m, inp, out):
        total[0] += out.numel() * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.ConvTranspose2d):
            handles.append(m.register_forward_hook(convt_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    ref = next(model.parameters(), None)
    device = ref.device if ref is not None else "cpu"
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(shape, device=device, dtype=dtype), **forward_kwargs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(total[0])


def freeze(module: nn.Module) -> nn.Module:
    """Sets ``requires_grad=False`` on every parameter of ``module`` and returns it.

    BatchNorm running statistics still update when the module is in train mode; put
    the module in eval mode (or build the backbone with ``frozen_bn=True``) to stop that.
    """
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def unfreeze(module: nn.Module) -> nn.Module:
    """Sets ``requires_grad=True`` on every parameter of ``module`` and returns it."""
    for p in module.parameters():
        p.requires_grad_(True)
    return module


def set_requires_grad(modules, flag: bool) -> None:
    """Freeze (``False``) or unfreeze (``True``) the parameters of one module or a collection of them.

    :func:`freeze` / :func:`unfreeze` with the flag as an argument, over one module, a sequence
    or the values of a mapping (AdaptSegNet freezes its discriminators ``{key: D}`` for G's step).

    >>> discs = {"out": nn.Conv2d(2, 1, 1), "aux": nn.Conv2d(2, 1, 1)}
    >>> set_requires_grad(discs, False)
    >>> any(p.requires_grad for d in discs.values() for p in d.parameters())
    False
    >>> set_requires_grad(discs["out"], True)
    >>> [all(p.requires_grad for p in d.parameters()) for d in discs.values()]
    [True, False]
    """
    if isinstance(modules, nn.Module):
        modules = [modules]
    elif isinstance(modules, Mapping):
        modules = list(modules.values())
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(flag)


def make_teacher(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model``: eval mode (BN running statistics) and no gradients. The
    pseudo-labeller of stage 2 and the teacher of stage 3; never handed to an optimizer or
    to the engine (which would switch it to train mode)."""
    teacher = copy.deepcopy(model)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


def ema_alpha_at(it: int, alpha: float = 0.999) -> float:
    """The EMA rate at iteration ``it`` (0-based): ``min(1 - 1/(it + 1), alpha)``.

    0 at the first iteration (the teacher *is* the student), then a ramp ``1 - 1/(t+1)``
    (the teacher is the running mean of the student's iterates) until it reaches
    ``alpha`` (at ``t = 1/(1 - alpha) - 1``: 999 for 0.999).

    >>> [round(ema_alpha_at(t), 3) for t in (0, 1, 3, 5000)]
    [0.0, 0.5, 0.75, 0.999]
    """
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"the EMA rate alpha must be in [0, 1), got {alpha}")
    if it < 0:
        raise ValueError(f"iteration must be >= 0, got {it}")
    return min(1.0 - 1.0 / (it + 1), float(alpha))


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, it: int, alpha: float = 0.999) -> float:
    """Move the teacher towards the student: ``theta_T <- a theta_T + (1 - a) theta_S`` with
    ``a = ema_alpha_at(it, alpha)`` (mean-teacher / DACS rule); returns ``a``.

    Every parameter follows the rule; so do floating-point buffers (BatchNorm running
    statistics: the kit's teacher predicts in eval mode, so it needs statistics that track
    the student's); integer buffers (``num_batches_tracked``) are copied. The two modules
    must have the same architecture.
    """
    a = ema_alpha_at(it, alpha)
    tp, sp = dict(teacher.named_parameters()), dict(student.named_parameters())
    tb, sb = dict(teacher.named_buffers()), dict(student.named_buffers())
    if tp.keys() != sp.keys() or tb.keys() != sb.keys():
        raise ValueError("ema_update: teacher and student have different parameters or buffers")
    for name, t in list(tp.items()) + list(tb.items()):
        s = sp[name] if name in sp else sb[name]
        if t.is_floating_point():
            t.mul_(a).add_(s.detach().to(t.dtype), alpha=1.0 - a)
        else:
            t.copy_(s)
    return a


@torch.no_grad()
def reestimate_bn(model: nn.Module, target: Dataset, n_images: int = 256, batch_size: int = 32,
                  amp: str = "off") -> nn.Module:
    """A copy of ``model`` whose BatchNorm running statistics are recomputed on target images
    (cumulative average over ``n_images``, no gradient step): "AdaBN". Not a stage of DAS3;
    a reference that separates what stage 1 gains from the BN statistics (which its
    train-mode forward passes re-estimate anyway) from what its losses add."""
    model = copy.deepcopy(model)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        raise ValueError(f"{type(model).__name__} has no BatchNorm layers to re-estimate")
    model.train()
    if not all(m.training for m in bns):
        raise ValueError("the model's BatchNorm layers are frozen (they stay in eval mode, e.g. frozen_bn=True); "
                         "their statistics cannot be re-estimated")
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    dev = next(model.parameters()).device
    n = min(int(n_images), len(target))  # type: ignore[arg-type]
    for x, _ in DataLoader(Subset(Unlabeled(target), range(n)), batch_size=batch_size):
        with autocast(dev, amp):
            model(x.to(dev))
    for m in bns:
        m.momentum = 0.1
    return model.eval()
