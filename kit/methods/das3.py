"""DAS3 -- Wang, Liang, Zhang, "Give Me Your Trained Model: Domain Adaptive Semantic
Segmentation without Source Data" (arXiv 2106.11653, 2021).

Source-free domain adaptation: the inputs are a model trained on the source and
*unlabelled* target images -- nothing else. That is structural here: no function of this
module accepts source data, and every target dataset is wrapped in :class:`kit.data.wrappers.Unlabeled`,
which hands out ``(image, index)`` and never the label. Three stages, each a separate
function that starts from the previous model and returns a new one (the input is not
modified), so they compose in any order or alone:

1. :func:`stage1_align` -- *implicit feature alignment*. The classifier (ASPP head) is
   frozen; the feature extractor is trained with the focal entropic loss plus the
   weighted diversity loss (:func:`kit.losses.focal_entropic_loss`,
   :func:`kit.losses.weighted_diversity_loss`), so target features move to where the
   source classifier is confident, without collapsing onto a few classes.
2. :func:`stage2_self_train` -- *bi-directional self-training*. A frozen copy of the
   stage-1 model labels each batch: positive pseudo-labels where its confidence reaches
   the class-wise top-K threshold of the predicted class (CE), and negative pseudo-labels
   for the classes it gives probability below ``neg_threshold`` (``-log(1 - p_c)``).
3. :func:`stage3_propagate` -- *information propagation*. Target images are ranked by
   the mean normalized entropy of the stage-2 model; the ``easy_ratio`` most confident are
   "easy", the rest "hard"; half of the classes of an easy image are pasted on a hard one
   (ClassMix, :func:`kit.data.mixing.class_mix`), so labels of easy images propagate into hard ones. Two
   variants (config ``stage3``): ``"kit"`` (default, :func:`stage3_kit`) -- a frozen copy
   of the stage-2 model labels both with the thresholded rule of stage 2; ``"atp"``
   (:func:`kit.methods.das3_atp.stage3_atp`, its own module) -- as the authors' later code: an EMA teacher, plain argmax
   labels, DACS-style weights on the hard pixels and strong augmentation.

:func:`adapt` chains the three; :func:`load_or_run_stage` caches each stage's model
keyed by its full config and the key of the model it started from.
"""
from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from .. import losses
from ..cache import data_identity, load_or_train, model_key
from ..data.labels import IGNORE_INDEX
from ..data.mixing import class_mix, class_mix_batch  # noqa: F401  (re-exported: their old home)
from ..data.transforms import strong_augment  # noqa: F401  (re-exported: its old home)
from ..data.wrappers import Unlabeled  # noqa: F401  (re-exported: its old home)
from ..engine import Engine, autocast, evaluate, make_optimizer, resolve_device
from ..models.utils import ema_alpha_at, ema_update  # noqa: F401  (re-exported: their old home)
from .supervised import build_model, load_or_train_baseline, make_model_optimizer

__all__ = ["Unlabeled", "StageResult", "Scan", "scan_target", "make_teacher", "pseudo_label_thresholds",
           "reestimate_bn", "class_mix", "class_mix_batch", "stage1_align", "stage2_self_train", "stage3_propagate",
           "stage3_kit", "adapt",
           "STAGE_NAMES", "STAGE3_VARIANTS", "stage_tags", "stage_key", "load_or_run_stage", "eval_record", "load_source_model", "train"]

# Defaults and sections of every field: kit.methods.defaults (METHODS["das3"]).

STAGE_NAMES = {1: "alignment", 2: "self-training", 3: "propagation"}  #: for labels and logs

STAGE3_VARIANTS = ("kit", "atp")


def _num_classes(model: nn.Module) -> int:
    n = getattr(model, "num_classes", None)
    if not isinstance(n, int):
        raise ValueError(f"{type(model).__name__} has no integer 'num_classes'; DAS3 needs a segmenter like DeepLabV2")
    return n


def _classifiers(model: nn.Module) -> list[nn.Module]:
    """The classifier modules of a segmenter (frozen in stage 1)."""
    heads = [getattr(model, name) for name in ("head", "aux_head") if getattr(model, name, None) is not None]
    if not heads:
        raise ValueError(f"{type(model).__name__} has no 'head' classifier to freeze; DAS3 stage 1 needs one")
    return heads


def make_teacher(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model``: eval mode (BN running statistics) and no gradients. The
    pseudo-labeller of stage 2 and the teacher of stage 3; never handed to an optimizer or
    to the engine (which would switch it to train mode)."""
    teacher = copy.deepcopy(model)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


def _to(model: nn.Module, device: torch.device, cfg: Mapping[str, Any]) -> nn.Module:
    """Move a frozen model where the engine puts the student (device, memory format)."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if cfg["channels_last"] else model


@torch.no_grad()
def _probs(model: nn.Module, x: torch.Tensor, size, amp: str) -> torch.Tensor:
    with autocast(x.device, amp):
        logits = model(x)["out"]
    return F.softmax(losses.upsample(logits.float(), size), 1)


# ----------------------------------------------------------------------------------
# Scanning the target set: confidences for thresholds, entropies for ranking
# ----------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------
# The three stages
# ----------------------------------------------------------------------------------
@dataclass
class StageResult:
    """A stage's output: the new model, its training history, and what the stage computed
    (thresholds, easy/hard split); ``teacher`` is the frozen model that labelled the data (stages 2, 3)."""

    model: nn.Module
    history: Any
    info: dict = field(default_factory=dict)
    teacher: nn.Module | None = None


def _engine(cfg: Mapping[str, Any], stage: int, model: nn.Module, step, data: Mapping[str, Dataset], seed: int,
            desc: str, batch_size=None, opt: torch.optim.Optimizer | None = None) -> Engine:
    iters = _check_iters(cfg[f"stage{stage}_iters"], f"stage{stage}_iters")
    if opt is None:
        opt = make_model_optimizer(cfg, model, lr=float(cfg[f"stage{stage}_lr"]))
    return Engine({"model": model}, {"model": opt}, step, data, batch_size or cfg["batch_size"], iters,
                  poly_power=cfg["poly_power"], device=cfg["device"], amp=cfg["amp"],
                  channels_last=cfg["channels_last"], seed=seed, log_every=cfg["log_every"],
                  progress=cfg["progress"], num_workers=cfg["num_workers"], desc=desc)


def _check_iters(n: int, which: str) -> int:
    if int(n) < 1:
        raise ValueError(f"{which} must be >= 1, got {n}")
    return int(n)


def stage1_align(model: nn.Module, target: Dataset, cfg: Mapping[str, Any], seed: int = 0) -> StageResult:
    """Stage 1, implicit feature alignment (target images only).

    A copy of ``model`` with its classifier frozen minimizes
    ``ent_weight * L_fe + div_weight * L_div`` on target batches:
    ``L_fe`` = focal entropic loss (or plain entropy if ``stage1_loss == "entropy"``) and
    ``L_div`` = weighted diversity loss. ``focal_grad`` says how the focal factor
    ``(1 - H)^gamma`` enters the gradient: ``"detached"`` (default), a weight, so every
    pixel's entropy goes down and the confident ones lead (the paper's motivation); or
    ``"through"``, part of the objective, which pushes pixels with ``H > 1/(1 + gamma)``
    towards *higher* entropy (see :func:`kit.losses.focal_entropic_loss`). BatchNorm layers (unless frozen by the config)
    re-estimate their statistics on the target as they train.
    """
    if cfg["stage1_loss"] not in ("focal", "entropy"):
        raise ValueError(f"stage1_loss must be 'focal' or 'entropy', got {cfg['stage1_loss']!r}")
    focal_grad = cfg["focal_grad"]
    if focal_grad not in losses.FOCAL_GRAD_MODES:
        raise ValueError(f"focal_grad must be one of {losses.FOCAL_GRAD_MODES}, got {focal_grad!r}")
    model = copy.deepcopy(model)
    for p in model.parameters():
        p.requires_grad_(True)
    for head in _classifiers(model):
        for p in head.parameters():
            p.requires_grad_(False)
    gamma, alpha = float(cfg["gamma"]), float(cfg["alpha"])
    w_ent, w_div = float(cfg["ent_weight"]), float(cfg["div_weight"])

    def step(batch, engine):
        net, opt = engine.modules["model"], engine.optimizers["model"]
        x, _ = batch["target"]
        opt.zero_grad(set_to_none=True)
        with engine.autocast():
            logits = net(x)["out"]
        if cfg["stage1_loss"] == "focal":
            l_ent = losses.focal_entropic_loss(logits, gamma, focal_grad)  # sg[(1 - H)^gamma] * H
        else:
            l_ent = losses.entropy_loss(logits)                       # H
        l_div = losses.weighted_diversity_loss(logits, alpha)         # sum_c p_bar log p_bar
        loss = w_ent * l_ent + w_div * l_div
        loss.backward()
        opt.step()
        return {"ent": l_ent.detach(), "div": l_div.detach()}

    eng = _engine(cfg, 1, model, step, {"target": Unlabeled(target)}, seed, "DAS3 stage 1 (alignment)")
    history = eng.run()
    for p in model.parameters():
        p.requires_grad_(True)
    return StageResult(model, history, {})


def stage2_self_train(model: nn.Module, target: Dataset, cfg: Mapping[str, Any], seed: int = 0) -> StageResult:
    """Stage 2, bi-directional self-training (target images only).

    A frozen copy of ``model`` (the labeller) is scanned over the target to set the
    positive thresholds (class-wise top-K, or one global threshold); a copy of ``model``
    (all layers trainable) then minimizes, per batch,
    ``CE(p, y_pos) + neg_weight * mean_{(i,c): q_ic < neg_threshold} -log(1 - p_ic)``
    where ``q`` are the labeller's probabilities and ``y_pos`` its confident argmax.
    """
    _num_classes(model)  # a segmenter with num_classes, or a clear error
    device = resolve_device(cfg["device"])
    labeller = _to(make_teacher(model), device, cfg)
    items = None
    if cfg.get("scan_items"):
        n = min(int(cfg["scan_items"]), len(target))  # type: ignore[arg-type]
        items = torch.randperm(len(target), generator=torch.Generator().manual_seed(seed))[:n].tolist()  # type: ignore[arg-type]
    scan = scan_target(labeller, target, items, cfg["eval_batch_size"], cfg["scan_pixels"], cfg["amp"], seed)
    thr = scan.thresholds(float(cfg["top_k"]), cfg["threshold_mode"]).to(device)
    tau, w_neg = float(cfg["neg_threshold"]), float(cfg["neg_weight"])
    student = copy.deepcopy(model)
    for p in student.parameters():
        p.requires_grad_(True)

    def step(batch, engine):
        net, opt = engine.modules["model"], engine.optimizers["model"]
        x, _ = batch["target"]
        q = _probs(labeller, x, x.shape[-2:], engine.amp)              # labeller, no gradient
        y_pos = losses.positive_pseudo_labels(q, thr)
        opt.zero_grad(set_to_none=True)
        with engine.autocast():
            logits = net(x)["out"]
        logits = losses.upsample(logits.float(), x.shape[-2:])          # once, for both terms
        l_pos = losses.seg_loss(logits, y_pos)
        out = {"pos": l_pos.detach(), "pos_share": (y_pos != IGNORE_INDEX).float().mean()}
        loss = l_pos
        if w_neg > 0:
            neg = losses.negative_labels(q, tau)
            l_neg = losses.negative_pseudo_label_loss(logits, neg)
            loss = loss + w_neg * l_neg
            out["neg"] = l_neg.detach()
        loss.backward()
        opt.step()
        return out

    eng = _engine(cfg, 2, student, step, {"target": Unlabeled(target)}, seed, "DAS3 stage 2 (self-training)")
    history = eng.run()
    return StageResult(student, history, {"thresholds": thr.cpu().tolist()}, labeller)


def stage3_propagate(model: nn.Module, target: Dataset, cfg: Mapping[str, Any], seed: int = 0) -> StageResult:
    """Stage 3, information propagation (target images only), in the variant ``cfg["stage3"]``:
    ``"kit"`` (default, :func:`stage3_kit`) or ``"atp"`` (the authors' later code,
    :func:`kit.methods.das3_atp.stage3_atp`). Both rank the target images by the stage-2 model's mean normalized
    entropy and take the ``easy_ratio`` lowest as easy."""
    variant = cfg.get("stage3", "kit")
    if variant == "kit":
        return stage3_kit(model, target, cfg, seed)
    if variant == "atp":
        from .das3_atp import stage3_atp

        return stage3_atp(model, target, cfg, seed)
    raise ValueError(f"stage3 must be one of {STAGE3_VARIANTS}, got {variant!r}")


def _stage3_split(teacher: nn.Module, target: Dataset, cfg: Mapping[str, Any], seed: int):
    scan = scan_target(teacher, target, None, cfg["eval_batch_size"], cfg["scan_pixels"], cfg["amp"], seed)
    easy, hard = scan.split(float(cfg["easy_ratio"]))
    half = max(1, int(cfg["batch_size"]) // 2)
    if len(easy) < half or len(hard) < half:
        raise ValueError(f"the easy ({len(easy)}) and hard ({len(hard)}) splits need at least {half} images each "
                         f"(half a batch); use more target images or a different easy_ratio")
    return scan, easy, hard, half


def stage3_kit(model: nn.Module, target: Dataset, cfg: Mapping[str, Any], seed: int = 0) -> StageResult:
    """Stage 3 as this kit reads the v1 paper (``stage3="kit"``).

    The frozen teacher (a copy of ``model``) ranks the target images by mean entropy;
    the ``easy_ratio`` lowest are easy, the rest hard. Each iteration takes half a batch
    of easy and half of hard images; the teacher labels both (positive pseudo-labels with
    the thresholds of stage 2's rule); half of each easy image's classes are pasted onto a
    hard image (ClassMix); the student minimizes ``CE(easy) + mix_weight * CE(mixed)``.
    """
    _num_classes(model)  # a segmenter with num_classes, or a clear error
    device = resolve_device(cfg["device"])
    teacher = _to(make_teacher(model), device, cfg)
    scan, easy, hard, half = _stage3_split(teacher, target, cfg, seed)
    thr = scan.thresholds(float(cfg["top_k"]), cfg["threshold_mode"]).to(device)
    student = copy.deepcopy(model)
    for p in student.parameters():
        p.requires_grad_(True)
    w_mix = float(cfg["mix_weight"])
    gen = torch.Generator().manual_seed(seed * 7 + 3)
    data = Unlabeled(target)

    def step(batch, engine):
        net, opt = engine.modules["model"], engine.optimizers["model"]
        xe, _ = batch["easy"]
        xh, _ = batch["hard"]
        q = _probs(teacher, torch.cat([xe, xh]), xe.shape[-2:], engine.amp)   # teacher, no gradient
        y = losses.positive_pseudo_labels(q, thr)
        seg = q.argmax(1)
        n = xe.shape[0]
        xm, ym, _ = class_mix_batch(xe, seg[:n], y[:n], xh, y[n:], generator=gen)
        opt.zero_grad(set_to_none=True)
        with engine.autocast():
            logits = net(torch.cat([xe, xm]))["out"]
        l_easy = losses.seg_loss(logits[:n], y[:n])
        l_mix = losses.seg_loss(logits[n:], ym)
        loss = l_easy + w_mix * l_mix
        loss.backward()
        opt.step()
        return {"easy": l_easy.detach(), "mix": l_mix.detach()}

    eng = _engine(cfg, 3, student, step, {"easy": Subset(data, easy), "hard": Subset(data, hard)}, seed,
                  "DAS3 stage 3 (propagation)", batch_size=half)
    history = eng.run()
    info = {"variant": "kit", "thresholds": thr.cpu().tolist(), "easy": easy, "hard": hard, "entropy": scan.entropy.tolist(),
            "items": scan.items.tolist()}
    return StageResult(student, history, info, teacher)


_STAGES = {1: stage1_align, 2: stage2_self_train, 3: stage3_propagate}


def adapt(source_model: nn.Module, target: Dataset, cfg: Mapping[str, Any], seed: int = 0,
          stages: Sequence[int] = (1, 2, 3)) -> dict[int, StageResult]:
    """Run the given stages in order from ``source_model`` on unlabelled ``target`` images.

    The signature is the whole interface of source-free adaptation: a trained model and
    target images; there is no argument through which source data could enter.
    Returns ``{stage: StageResult}``.
    """
    out: dict[int, StageResult] = {}
    model = source_model
    for s in stages:
        if s not in _STAGES:
            raise ValueError(f"unknown DAS3 stage {s!r}; expected 1, 2 or 3")
        out[s] = _STAGES[s](model, target, cfg, seed)
        model = out[s].model
    return out


# ----------------------------------------------------------------------------------
# Caching: every stage's model keyed by its config and the model it started from
# ----------------------------------------------------------------------------------
def stage_tags(stage: int, cfg: Mapping[str, Any]) -> tuple[str, ...]:
    """The tags of a stage's model (:mod:`kit.methods.defaults`): ``stage<N>``, plus ``atp`` for
    the authors' stage 3 (its EMA / augmentation / optimizer fields are in its key only then)."""
    if stage not in _STAGES:
        raise ValueError(f"unknown DAS3 stage {stage!r}; expected 1, 2 or 3")
    return (f"stage{stage}", "atp") if stage == 3 and cfg["stage3"] == "atp" else (f"stage{stage}",)


def stage_key(stage: int, cfg: Mapping[str, Any], prev_key: str, seed: int, target: Dataset | None = None) -> dict:
    """The cache key of a stage (:func:`kit.cache.model_key`): the config (the fields of the other
    stages left out: they reach it through ``prev_key``, the key of its input model), the seed and
    the identity of the target data."""
    return model_key(cfg, "das3", seed=seed, data={"target": target}, parents=[prev_key],
                     tags=stage_tags(stage, cfg), stage=int(stage))


def load_or_run_stage(stage: int, model: nn.Module, prev_key: str, target: Dataset, cfg: Mapping[str, Any],
                      seed: int = 0, val_set: Dataset | None = None, verbose: bool = False) -> tuple[nn.Module, dict]:
    """The model after ``stage`` from ``model`` (whose cache key is ``prev_key``), cached.

    Returns ``(model, meta)``; ``meta`` has ``key`` (for the next stage), ``history``,
    ``info`` (thresholds, easy/hard split) and, when ``val_set`` is given, ``eval``
    (mIoU and per-class IoU on it; stored with the checkpoint, recomputed only for
    another validation set).
    """
    key = stage_key(stage, cfg, prev_key, seed, target)
    vfp = data_identity(val_set)

    def run():
        res = _STAGES[stage](model, target, cfg, seed)
        meta = {"history": res.history.to_dict(), "info": res.info}
        if val_set is not None:
            meta["eval"] = eval_record(res.model, val_set, cfg, vfp)
        return {"model": res.model.state_dict()}, meta

    state, meta = load_or_train(f"das3-stage{stage}", key, run, cfg.get("cache_dir"), verbose=verbose)
    out = copy.deepcopy(model)
    out.load_state_dict(state["model"])
    for p in out.parameters():
        p.requires_grad_(True)
    out.eval()
    if val_set is not None and (meta.get("eval") or {}).get("val") != vfp:
        meta["eval"] = eval_record(out, val_set, cfg, vfp)
    return out, meta


def eval_record(model: nn.Module, val_set: Dataset, cfg: Mapping[str, Any], fingerprint=None) -> dict:
    """mIoU, per-class IoU and the predicted / true pixel share per class of ``model`` on ``val_set``."""
    res = evaluate(model, val_set, batch_size=cfg["eval_batch_size"], flip=cfg["flip_eval"], amp=cfg["amp"])
    classes = res.classes or tuple(str(i) for i in range(len(res.iou)))
    cm = res.confusion.double()
    return {"val": fingerprint, "miou": res.miou,
            "iou": {c: (None if v != v else float(v)) for c, v in zip(classes, res.iou.tolist())},
            "pred_share": dict(zip(classes, (cm.sum(0) / cm.sum()).tolist())),
            "true_share": dict(zip(classes, (cm.sum(1) / cm.sum()).tolist()))}


# ----------------------------------------------------------------------------------
# The source model
# ----------------------------------------------------------------------------------
def load_source_model(cfg: Mapping[str, Any], seed: int = 0, datasets: Mapping[str, Any] | None = None,
                      num_classes: int | None = None) -> tuple[nn.Module, str]:
    """The source-trained model DAS3 starts from, and its cache key.

    ``cfg["source_checkpoint"]``: a file with the network's ``state_dict`` (or a kit
    checkpoint holding it under ``"model"``), loaded into :func:`build_model` of the config;
    its key is the file's SHA-256. Otherwise the kit's cached source-only baseline
    (:func:`kit.methods.supervised.load_or_train_baseline`, trained if not cached -- the
    only place where source data is used, before adaptation starts).
    """
    path = cfg.get("source_checkpoint")
    if path:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"source_checkpoint {path} does not exist; expected a state_dict file (.pt)")
        if num_classes is None:
            if datasets is None:
                raise ValueError("num_classes (or datasets) is needed to build the network for a source checkpoint")
            num_classes = datasets["target_train"].num_classes
        data = path.read_bytes()
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
            state = state["model"]
        model = build_model(cfg, num_classes)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"source_checkpoint {path} does not fit the config's network "
                             f"({cfg['model']} depth {cfg['depth']} width {cfg['width']}, {num_classes} classes): "
                             f"{str(e)[:300]}") from None
        model.eval()
        return model, "file-" + hashlib.sha256(data).hexdigest()[:16]
    model, meta = load_or_train_baseline("source_only", cfg, seed, datasets, verbose=False)
    return model, str(meta["key"])


def train(cfg: Mapping[str, Any]) -> Path | None:
    """``kit train das3``: the three stages from the source model of ``cfg`` (first seed),
    on the config's target images; saves ``<run_dir>/das3.pt`` (rank 0)."""
    from .. import distributed
    from ..cache import save_checkpoint
    from ..data import make_da_datasets
    from . import train_output_path

    ds = make_da_datasets(cfg)
    seed = int(cfg["seeds"][0])
    model, key = load_source_model(cfg, seed, ds)
    history = {}
    for s in (1, 2, 3):
        model, meta = load_or_run_stage(s, model, key, ds["target_train"], cfg, seed, ds["target_val"])
        key = meta["key"]
        history[s] = meta.get("eval")
    path = train_output_path(cfg, "das3")
    if distributed.is_main():
        save_checkpoint(path, {"model": model.state_dict()},
                        {"method": "das3", "seed": seed, "config": dict(cfg), "stages": history})
    distributed.barrier()
    return path if distributed.is_main() else None


def __getattr__(name: str):
    """``stage3_atp`` and ``atp_pseudo_labels`` live in :mod:`kit.methods.das3_atp` (imported on use)."""
    if name in ("stage3_atp", "atp_pseudo_labels"):
        from . import das3_atp

        return getattr(das3_atp, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
