"""CDCL -- Wang, Li, Zhu, Tian, Shan, "Cross-Dataset Collaborative Learning for Semantic
Segmentation" (arXiv 2103.11351, 2021; AAAI 2022 as "... in Autonomous Driving").

Several *labelled* datasets (Cityscapes, BDD100K, CamVid; here the toy world's cities
``city_a``, ``city_b``, ``city_c``) train one network together:

* **Dataset-Aware Block** (DAB, Fig. 2): conv (shared) -> BN of the batch's dataset -> ReLU.
  :func:`build_cdcl_model` converts every BN of a PSPNet into a
  :class:`kit.models.DSBatchNorm2d` and gives each dataset its own classifier head.
* **Dataset Alternation Training** (DAT, Sec. 3.3): every iteration takes one batch of
  each dataset, each through its own BNs and head, sums the losses
  ``L = sum_i w_i L_i`` with ``L_i = -1/|I| sum_j y_j log p_j`` (the pixel cross-entropy of
  dataset i), then one backward pass and one optimizer step (:class:`DATStep`).
  The interval ``t``: the first dataset is trained every iteration, the others every
  ``t``-th iteration only ("A t times per once B"; t = 1 is plain DAT).
* The paper's **baselines**: single-dataset training, fine-tuning from one dataset to
  another, and label remapping -- one ordinary network (shared BNs, one head) on the
  union of the datasets with a merged label space (:class:`~kit.methods.cdcl_remap.LabelRemap`; a dataset's
  class that merges several union classes is trained with the log of their summed
  probability, :func:`~kit.methods.cdcl_remap.label_remap_loss`; both in :mod:`kit.methods.cdcl_remap`).

Everything trains through :class:`kit.engine.Engine` and is cached with
``kit.fit.fit("cdcl", ...)`` (:class:`CDCL`). The datasets come from
:func:`kit.data.make_cdcl_datasets`; the analysis of the paper's Fig. 1 (conv weights alike,
BN statistics different) is in :mod:`kit.methods.cdcl_analysis`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from .. import losses
from ..cache import model_key
from ..data import make_cdcl_datasets
from ..engine import Engine, History, seed_everything
from ..evaluation import evaluate
from ..models import DSBatchNorm2d, PSPNet, convert_to_dsbn, use_domain
from .base import Method, Parent
from .cdcl_remap import GroupedOutput, label_remap_for, label_remap_loss
from .supervised import build_model, make_model_optimizer

__all__ = ["KINDS", "DATStep", "build_cdcl_model", "dataset_model", "train_cdcl", "CDCL", "evaluate_cdcl"]

#: the kinds of model this module trains
KINDS = ("single", "finetune", "remap", "dat")

# Defaults and sections of every field: kit.defaults (METHODS["cdcl"]).


# =============================================================================================
# Dataset Alternation Training (paper Sec. 3.3)
# =============================================================================================
@dataclass
class Route:
    """How dataset i's batches go through the network: BN branch ``domain`` (None: plain BNs),
    classifier ``head``, and a ``membership`` matrix for label remapping (None: own head)."""

    stream: str
    domain: int | None = None
    head: int = 0
    membership: torch.Tensor | None = None


class DATStep:
    """One DAT iteration [CDCL: dataset alternation training] (the step function of
    :class:`kit.engine.Engine`).

    ``mode="sum"`` (the paper): ``L = sum_i w_i L_i`` over the datasets active this
    iteration, one ``backward`` and one ``step``. ``mode="alternate"``: one optimizer step
    per dataset batch, in turn (the per-batch alternation the paper compares against).
    ``interval`` t: dataset 0 is active every iteration, the others when ``it % t == 0``.
    Returns the per-dataset losses (``seg_<stream>``) and their weighted sum (``total``).
    """

    def __init__(self, routes: Sequence[Route], weights: Sequence[float] | None = None, interval: int = 1,
                 mode: str = "sum"):
        if mode not in ("sum", "alternate"):
            raise ValueError(f"mode must be 'sum' or 'alternate', got {mode!r}")
        if not isinstance(interval, int) or interval < 1:
            raise ValueError(f"interval t must be a positive int, got {interval!r}")
        self.routes = list(routes)
        if not self.routes:
            raise ValueError("DATStep needs at least one route (dataset)")
        self.weights = [1.0] * len(self.routes) if weights is None else [float(w) for w in weights]
        if len(self.weights) != len(self.routes):
            raise ValueError(f"{len(self.routes)} datasets but {len(self.weights)} weights")
        self.interval, self.mode = interval, mode

    def active(self, it: int) -> list[int]:
        return [i for i in range(len(self.routes)) if i == 0 or it % self.interval == 0]

    def loss_of(self, model: nn.Module, route: Route, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if route.domain is not None:
            with use_domain(model, route.domain):
                out = model(x, head=route.head)
        else:
            out = model(x, head=route.head)
        if route.membership is not None:
            return label_remap_loss(out["out"], y, route.membership)
        return losses.seg_loss(out["out"], y)

    def __call__(self, batch, engine: Engine) -> dict[str, torch.Tensor]:
        model, opt = engine.modules["model"], engine.optimizers["model"]
        logs: dict[str, torch.Tensor] = {}
        total = 0.0
        opt.zero_grad(set_to_none=True)
        for i in self.active(engine.it):
            r = self.routes[i]
            x, y = batch[r.stream]
            with engine.autocast():
                li = self.weights[i] * self.loss_of(model, r, x, y)
            if self.mode == "alternate":
                li.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            total = total + li
            logs[f"seg_{r.stream}"] = li.detach()
        if self.mode == "sum":
            total.backward()
            opt.step()
        logs["total"] = total.detach()
        return logs


# =============================================================================================
# The model: Dataset-Aware Blocks (paper Fig. 2), and what a DAT model is for one dataset
# =============================================================================================
def build_cdcl_model(cfg: Mapping[str, Any], num_classes: Sequence[int] | int, dsbn: bool = True) -> nn.Module:
    """The config's PSPNet with one head per entry of ``num_classes`` and, with ``dsbn``, every
    BN converted to a dataset-specific BN with one branch per head (Dataset-Aware Blocks)."""
    if cfg["model"] != "pspnet":
        raise ValueError(f"CDCL uses PSPNet (model='pspnet'), got model={cfg['model']!r}")
    heads = [int(num_classes)] if isinstance(num_classes, int) else [int(k) for k in num_classes]
    model = build_model(cfg, heads if (dsbn or len(heads) > 1) else heads[0])
    if dsbn:
        convert_to_dsbn(model, len(heads))
    return model


def dataset_model(model: nn.Module, i: int) -> PSPNet:
    """The plain PSPNet that a DAT model is for dataset i at inference: shared convs, BN branch
    i, head i. Same parameters and FLOPs as a single-dataset PSPNet (the paper's "no extra
    inference cost"); its outputs equal ``model(x, head=i)`` under ``use_domain(model, i)``."""
    if not isinstance(model, PSPNet):
        raise TypeError(f"dataset_model expects a PSPNet, got {type(model).__name__}")
    heads = model.num_classes if isinstance(model.num_classes, list) else [model.num_classes]
    if not 0 <= i < len(heads):
        raise ValueError(f"dataset index {i} out of range for {len(heads)} heads")
    single = copy.deepcopy(model)

    def strip(mod: nn.Module):
        for name, child in list(mod.named_children()):
            if isinstance(child, DSBatchNorm2d):
                setattr(mod, name, copy.deepcopy(child.bns[i]))
            else:
                strip(child)

    strip(single)
    if isinstance(single.classifier, nn.ModuleList):
        single.classifier = single.classifier[i]
        if single.aux_classifier is not None:
            single.aux_classifier = single.aux_classifier[i]
        single.num_classes, single.num_heads = heads[i], 1
    return single


# =============================================================================================
# Training
# =============================================================================================
def _check_kind(kind: str, names: Sequence[str], init: str | None) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    if kind in ("single", "finetune") and len(names) != 1:
        raise ValueError(f"kind {kind!r} trains on exactly one dataset, got {list(names)}")
    if kind in ("remap", "dat") and len(names) < 1:
        raise ValueError(f"kind {kind!r} needs at least one dataset")
    if kind == "finetune" and not init:
        raise ValueError("kind 'finetune' needs init=<the dataset the model is first trained on>")


def _build(cfg, kind, names, datasets):
    """(model, routes) for a kind of training on ``names``."""
    ks = [datasets[n]["train"].num_classes for n in names]
    if kind == "dat":
        model = build_cdcl_model(cfg, ks, dsbn=True)
        routes = [Route(n, domain=i, head=i) for i, n in enumerate(names)]
    elif kind == "remap":
        remap = label_remap_for({n: datasets[n] for n in names})
        model = build_cdcl_model(cfg, remap.num_classes, dsbn=False)
        routes = [Route(n, membership=remap.membership(i)) for i, n in enumerate(names)]
    else:
        model = build_cdcl_model(cfg, ks[0], dsbn=False)
        routes = [Route(names[0])]
    return model, routes


def train_cdcl(cfg: Mapping[str, Any], kind: str, names: Sequence[str], seed: int = 0,
               datasets: Mapping[str, Any] | None = None, init_state: Mapping[str, torch.Tensor] | None = None,
               desc: str | None = None) -> tuple[nn.Module, History]:
    """Train one model: ``kind`` in :data:`KINDS` on the datasets ``names``.

    ``"single"``: a PSPNet on one dataset; ``"finetune"``: the same, started from
    ``init_state`` (the backbone and every layer whose shape fits; the classifier is new when
    label spaces differ) for ``ft_iters``; ``"remap"``: one PSPNet on all ``names`` with the
    merged label space; ``"dat"``: DSBN + one head per dataset, DAT with ``interval``,
    ``dat_mode`` and ``dataset_weights`` of the config. Returns ``(model, history)``.
    """
    names = list(names)
    _check_kind(kind, names, "x" if init_state is not None or kind != "finetune" else None)
    ds = datasets if datasets is not None else make_cdcl_datasets({**cfg, "datasets": names})
    missing = [n for n in names if n not in ds]
    if missing:
        raise ValueError(f"datasets {missing} not in the given datasets {list(ds)}")
    seed_everything(seed)
    model, routes = _build(cfg, kind, names, ds)
    iters = int(cfg["iters"])
    if kind == "finetune":
        own = model.state_dict()
        fit = {k: v for k, v in init_state.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(fit, strict=False)
        iters = int(cfg.get("ft_iters") or cfg["iters"])
    step = DATStep(routes, cfg.get("dataset_weights") if kind == "dat" else None,
                   int(cfg.get("interval", 1)) if kind == "dat" else 1,
                   cfg.get("dat_mode", "sum") if kind == "dat" else "sum")
    opt = make_model_optimizer(cfg, model)
    eng = Engine.from_config(cfg, {"model": model}, {"model": opt}, step, {n: ds[n]["train"] for n in names},
                             seed=seed, iters=iters, desc=desc or f"cdcl {kind} {'+'.join(names)} seed {seed}",
                             find_unused_parameters=True)
    history = eng.run()
    model.cpu().eval()
    return model, history


class CDCL(Method):
    """CDCL for :func:`kit.fit.fit`: a model of ``kind`` (:data:`KINDS`) on the datasets ``names``
    (default the config's; their order gives BN branches and heads); ``kind="finetune"`` takes
    ``names = [target]`` and ``init``, the dataset it first trains on (its single-dataset model,
    same seed, is the parent). Cached as ``cdcl_<kind>``, keyed by the config (fields tagged with
    ``kind``), the training data of ``names`` in order, the seed and the parent's key; the meta
    holds ``history`` and ``datasets``."""

    name = config = "cdcl"
    spec = {"kind": "dat", "names": None, "init": None}

    def _names(self, cfg, spec) -> list[str]:
        return list(spec["names"] or cfg["datasets"])

    def check(self, cfg, spec):
        _check_kind(spec["kind"], self._names(cfg, spec), spec["init"])

    def datasets(self, cfg, spec):
        names = self._names(cfg, spec)
        return make_cdcl_datasets({**cfg, "datasets": sorted(set(names + ([spec["init"]] if spec["init"] else [])))})

    def parents(self, cfg, spec):
        if spec["kind"] != "finetune":
            return {}
        return {"init": Parent("cdcl", cfg, {"kind": "single", "names": [spec["init"]]})}

    def cache_name(self, cfg, spec):
        return f"cdcl_{spec['kind']}"

    def key(self, cfg, seed, data, spec, parents):
        names, kind = self._names(cfg, spec), spec["kind"]
        return model_key(cfg, "cdcl", seed=seed, data={f"{i}:{n}": data[n]["train"] for i, n in enumerate(names)},
                         parents=list(parents.values()), tags=(kind,), kind=kind, names=names)

    def build(self, cfg, data, spec):
        return {"model": _build(cfg, spec["kind"], self._names(cfg, spec), data)[0]}

    def train(self, cfg, seed, data, spec, parents, verbose=False):
        names = self._names(cfg, spec)
        init_state = parents["init"].model.state_dict() if "init" in parents else None
        model, hist = train_cdcl(cfg, spec["kind"], names, seed, data, init_state)
        return {"model": model}, {"history": hist.to_dict(), "datasets": names}


CDCL_METHOD = CDCL()


def evaluate_cdcl(model: nn.Module, kind: str, names: Sequence[str], datasets: Mapping[str, Any],
                  cfg: Mapping[str, Any], branch: Mapping[str, int] | None = None) -> dict[str, Any]:
    """mIoU of a model on each dataset's val split: ``{name: EvalResult}``.

    ``names`` are the datasets the model was trained on (their order gives BN branches and
    heads); a single/fine-tuned model is evaluated on its one dataset. ``branch`` (DAT only)
    overrides the BN branch per dataset name (to route a dataset through another's BNs).
    """
    names = list(names)
    out = {}
    kw = dict(batch_size=cfg["eval_batch_size"], amp=cfg["amp"], max_items=cfg.get("eval_items"),
              flip=cfg.get("flip_eval", False))
    if kind == "remap":
        remap = label_remap_for({n: datasets[n] for n in names})
        for i, n in enumerate(names):
            val = datasets[n]["val"]
            out[n] = evaluate(GroupedOutput(model, remap.membership(i)), val, val.num_classes, **kw)
        return out
    if kind in ("single", "finetune"):
        val = datasets[names[0]]["val"]
        return {names[0]: evaluate(model, val, val.num_classes, **kw)}
    for i, n in enumerate(names):
        val = datasets[n]["val"]
        b = i if branch is None else int(branch.get(n, i))
        with use_domain(model, b):
            out[n] = evaluate(model, val, val.num_classes, head=i, **kw)
    return out
