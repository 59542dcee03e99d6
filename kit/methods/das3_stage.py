"""What every DAS3 stage shares (:mod:`kit.methods.das3`, :mod:`kit.methods.das3_atp`): its
result, :class:`StageResult`, and its training loop, :func:`stage_engine` (the config's
optimizer at ``stage<N>_lr`` for ``stage<N>_iters`` iterations)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from ..engine import Engine
from .supervised import make_model_optimizer

__all__ = ["StageResult", "stage_engine"]


@dataclass
class StageResult:
    """A stage's output: the new model, its training history, and what the stage computed
    (thresholds, easy/hard split); ``teacher`` is the frozen model that labelled the data (stages 2, 3)."""

    model: nn.Module
    history: Any
    info: dict = field(default_factory=dict)
    teacher: nn.Module | None = None


def stage_engine(cfg: Mapping[str, Any], stage: int, model: nn.Module, step, data: Mapping[str, Dataset], seed: int,
                 desc: str, batch_size=None, opt: torch.optim.Optimizer | None = None) -> Engine:
    """The Engine of stage ``stage``: ``model`` trained by ``step`` on ``data`` for ``stage<N>_iters``
    with ``opt`` (default: the config's optimizer at ``stage<N>_lr``)."""
    n = int(cfg[f"stage{stage}_iters"])
    if n < 1:
        raise ValueError(f"stage{stage}_iters must be >= 1, got {cfg[f'stage{stage}_iters']}")
    if opt is None:
        opt = make_model_optimizer(cfg, model, lr=float(cfg[f"stage{stage}_lr"]))
    return Engine.from_config(cfg, {"model": model}, {"model": opt}, step, data, seed=seed,
                              batch_size=batch_size or None, iters=n, desc=desc)
