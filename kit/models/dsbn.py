"""Dataset-specific BatchNorm for CDCL's Dataset-Aware Blocks (Wang et al., 2021, Fig. 2)
[CDCL: dataset-aware block].

A Dataset-Aware Block is conv -> BN of the current dataset -> ReLU: the convolution
is shared by all datasets, each dataset has its own normalization statistics and its
own affine parameters. Here every ``nn.BatchNorm2d`` of a model is swapped for a
:class:`DSBatchNorm2d`, and the dataset ("domain") of the current batch is selected
for the whole model at once::

    model = convert_to_dsbn(PSPNet([19, 19]), num_domains=2)
    with use_domain(model, 1):
        out = model(x_b, head=1)
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

__all__ = ["DSBatchNorm2d", "convert_to_dsbn", "use_domain", "set_domain", "get_domain",
           "dsbn_modules"]


class DSBatchNorm2d(nn.Module):
    """One ``nn.BatchNorm2d`` per domain; ``self.domain`` (int) picks the branch used.

    Shape: [B,C,H,W] -> [B,C,H,W]. A forward pass in train mode updates only the running
    statistics of the selected branch. Setting ``domain`` outside ``[0, num_domains)``
    raises ``ValueError``.
    """

    def __init__(self, num_features: int, num_domains: int, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None, dtype=None):
        super().__init__()
        if not isinstance(num_domains, int) or num_domains < 1:
            raise ValueError(f"num_domains must be a positive int, got {num_domains!r}")
        self.num_features, self.num_domains = num_features, num_domains
        self.bns = nn.ModuleList(
            nn.BatchNorm2d(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
            for _ in range(num_domains))
        self._domain = 0

    @property
    def domain(self) -> int:
        return self._domain

    @domain.setter
    def domain(self, value: int) -> None:
        self._domain = _check_domain(value, self.num_domains)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"DSBatchNorm2d expects [B,{self.num_features},H,W], got {tuple(x.shape)}")
        return self.bns[self._domain](x)

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, num_domains={self.num_domains}, domain={self._domain}"


def _check_domain(value, num_domains: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"domain must be an int, got {type(value).__name__}")
    if not 0 <= value < num_domains:
        raise ValueError(f"domain {value} out of range: this model has {num_domains} domain "
                         f"branches (valid: 0..{num_domains - 1})")
    return value


def dsbn_modules(model: nn.Module) -> list[DSBatchNorm2d]:
    """All :class:`DSBatchNorm2d` modules of ``model`` (including ``model`` itself)."""
    return [m for m in model.modules() if isinstance(m, DSBatchNorm2d)]


def _from_bn(bn: nn.BatchNorm2d, num_domains: int) -> DSBatchNorm2d:
    ref = bn.weight if bn.weight is not None else bn.running_mean
    kw = {"device": ref.device, "dtype": ref.dtype} if ref is not None else {}
    ds = DSBatchNorm2d(bn.num_features, num_domains, bn.eps, bn.momentum, bn.affine,
                       bn.track_running_stats, **kw)
    for branch in ds.bns:
        branch.load_state_dict(bn.state_dict())  # weight, bias, running stats, num_batches_tracked
        for p_new, p_old in zip(branch.parameters(), bn.parameters()):
            p_new.requires_grad_(p_old.requires_grad)
        branch.train(bn.training)
    ds.train(bn.training)
    return ds


def convert_to_dsbn(model: nn.Module, num_domains: int) -> nn.Module:
    """Replaces every ``nn.BatchNorm2d`` of ``model`` by a :class:`DSBatchNorm2d` (in place).

    Every branch starts as a copy of the original BN (weights, bias, running stats,
    ``num_batches_tracked``, ``requires_grad`` and train/eval mode), so the model's outputs
    are unchanged right after conversion, whichever domain is selected. Existing
    DSBatchNorm2d modules are left alone. Returns the model (or a new DSBatchNorm2d if
    ``model`` itself is a BatchNorm2d). Build the optimizer *after* converting.
    """
    if not isinstance(num_domains, int) or num_domains < 1:
        raise ValueError(f"num_domains must be a positive int, got {num_domains!r}")
    if isinstance(model, nn.BatchNorm2d):
        return _from_bn(model, num_domains)
    for name, child in list(model.named_children()):
        if isinstance(child, DSBatchNorm2d):
            continue
        if isinstance(child, nn.BatchNorm2d):
            setattr(model, name, _from_bn(child, num_domains))
        else:
            convert_to_dsbn(child, num_domains)
    return model


def set_domain(model: nn.Module, domain: int) -> None:
    """Selects BN branch ``domain`` in every DSBatchNorm2d of ``model``."""
    modules = dsbn_modules(model)
    if not modules:
        raise ValueError("model has no DSBatchNorm2d layers; call convert_to_dsbn(model, num_domains) first")
    for m in modules:
        _check_domain(domain, m.num_domains)
    for m in modules:
        m.domain = domain


def get_domain(model: nn.Module) -> int | None:
    """The domain selected in ``model``'s DSBN layers (None without DSBN layers)."""
    modules = dsbn_modules(model)
    return modules[0].domain if modules else None


@contextlib.contextmanager
def use_domain(model: nn.Module, domain: int):
    """Context manager: select ``domain`` in every DSBN layer, restore the previous choice on exit."""
    modules = dsbn_modules(model)
    previous = [m.domain for m in modules]
    set_domain(model, domain)
    try:
        yield model
    finally:
        for m, d in zip(modules, previous):
            m.domain = d
