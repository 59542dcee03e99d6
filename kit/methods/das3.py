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

:func:`adapt` chains the three; :class:`DAS3` declares them for :func:`kit.fit.fit`, which caches
each stage's model keyed by its config and the key of the model it started from. The scan of
the target that sets the thresholds and the easy / hard split: :mod:`kit.methods.das3_scan`.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
from torch.utils.data import Dataset, Subset

from .. import losses
from ..cache import model_key
from ..data.labels import IGNORE_INDEX
from ..data.mixing import class_mix_batch
from ..data.wrappers import Unlabeled
from ..evaluation import evaluate
from ..machine import resolve_device
from ..hashing import data_identity
from ..models.utils import make_teacher
from .base import Fitted, Method, Parent
from .das3_atp import stage3_atp
from .das3_scan import _num_classes, _probs, _stage3_split, _to, scan_target
from .das3_stage import StageResult, stage_engine
from .supervised import build_model

__all__ = ["STAGE_NAMES", "STAGE3_VARIANTS", "stage1_align", "stage2_self_train", "stage3_propagate", "stage3_kit",
           "adapt", "source_parent", "stage_tags", "eval_record", "DAS3"]

# Defaults and sections of every field: kit.defaults (METHODS["das3"]).

STAGE_NAMES = {1: "alignment", 2: "self-training", 3: "propagation"}  #: for labels and logs

STAGE3_VARIANTS = ("kit", "atp")


def _classifiers(model: nn.Module) -> list[nn.Module]:
    """The classifier modules of a segmenter (frozen in stage 1)."""
    heads = [getattr(model, name) for name in ("head", "aux_head") if getattr(model, name, None) is not None]
    if not heads:
        raise ValueError(f"{type(model).__name__} has no 'head' classifier to freeze; DAS3 stage 1 needs one")
    return heads


# ----------------------------------------------------------------------------------
# The three stages
# ----------------------------------------------------------------------------------
def stage1_align(model: nn.Module, target: Dataset, cfg: Mapping[str, Any], seed: int = 0) -> StageResult:
    """Stage 1, implicit feature alignment (target images only).

    A copy of ``model`` with its classifier frozen minimizes
    ``ent_weight * L_fe + div_weight * L_div`` on target batches:
    ``L_fe`` = focal entropic loss (or plain entropy if ``stage1_loss == "entropy"``) and
    ``L_div`` = weighted diversity loss. ``focal_grad`` says how the focal factor
    ``(1 - H)^gamma`` enters the gradient: ``"through"`` (default, the authors' code), part of
    the objective, which sharpens pixels with ``H < 1/(1 + gamma)`` and pushes the others towards
    *higher* entropy; or ``"detached"``, a weight, so every pixel's entropy goes down and the
    confident ones lead (see :func:`kit.losses.focal_entropic_loss`). BatchNorm layers (unless
    frozen by the config) re-estimate their statistics on the target as they train.
    """
    if cfg["stage1_loss"] not in ("focal", "entropy"):
        raise ValueError(f"stage1_loss must be 'focal' or 'entropy', got {cfg['stage1_loss']!r}")
    focal_grad = cfg["focal_grad"]
    if focal_grad not in losses.FOCAL_GRAD_MODES:
        raise ValueError(f"focal_grad must be one of {losses.FOCAL_GRAD_MODES}, got {focal_grad!r}")
    if cfg["diversity_norm"] not in losses.DIVERSITY_NORMS:
        raise ValueError(f"diversity_norm must be one of {losses.DIVERSITY_NORMS}, got {cfg['diversity_norm']!r}")
    model = copy.deepcopy(model)
    for p in model.parameters():
        p.requires_grad_(True)
    for head in _classifiers(model):
        for p in head.parameters():
            p.requires_grad_(False)
    gamma, alpha, div_norm = float(cfg["gamma"]), float(cfg["alpha"]), cfg["diversity_norm"]
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
        l_div = losses.weighted_diversity_loss(logits, alpha, norm=div_norm)   # sum_c p_bar log p_bar
        loss = w_ent * l_ent + w_div * l_div
        loss.backward()
        opt.step()
        return {"ent": l_ent.detach(), "div": l_div.detach()}

    eng = stage_engine(cfg, 1, model, step, {"target": Unlabeled(target)}, seed, "DAS3 stage 1 (alignment)")
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

    eng = stage_engine(cfg, 2, student, step, {"target": Unlabeled(target)}, seed, "DAS3 stage 2 (self-training)")
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
        return stage3_atp(model, target, cfg, seed)
    raise ValueError(f"stage3 must be one of {STAGE3_VARIANTS}, got {variant!r}")


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

    eng = stage_engine(cfg, 3, student, step, {"easy": Subset(data, easy), "hard": Subset(data, hard)}, seed,
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


def source_parent(cfg: Mapping[str, Any]) -> Parent:
    """The source-trained model DAS3 starts from: ``cfg["source_checkpoint"]`` (a file with the
    network's ``state_dict``, or a kit checkpoint holding it under ``"model"``; keyed by the file's
    SHA-256), else the kit's source-only baseline of the config -- the only place where source data
    is used, before adaptation starts."""
    if cfg.get("source_checkpoint"):
        return Parent("weights_file", cfg, {"path": str(cfg["source_checkpoint"])})
    return Parent("source_only", cfg)


def stage_tags(stage: int, cfg: Mapping[str, Any]) -> tuple[str, ...]:
    """The tags of a stage's model (:mod:`kit.defaults`): ``stage<N>``, plus ``atp`` for
    the authors' stage 3 (its EMA / augmentation / optimizer fields are in its key only then)."""
    if stage not in _STAGES:
        raise ValueError(f"DAS3 stage must be 1, 2 or 3, got {stage!r}")
    return (f"stage{stage}", "atp") if stage == 3 and cfg["stage3"] == "atp" else (f"stage{stage}",)


def eval_record(model: nn.Module, val_set: Dataset, cfg: Mapping[str, Any], fingerprint=None) -> dict:
    """mIoU, per-class IoU and the predicted / true pixel share per class of ``model`` on ``val_set``."""
    res = evaluate(model, val_set, batch_size=cfg["eval_batch_size"], flip=cfg["flip_eval"], amp=cfg["amp"])
    classes = res.classes or tuple(str(i) for i in range(len(res.iou)))
    cm = res.confusion.double()
    return {"val": fingerprint, "miou": res.miou,
            "iou": {c: (None if v != v else float(v)) for c, v in zip(classes, res.iou.tolist())},
            "pred_share": dict(zip(classes, (cm.sum(0) / cm.sum()).tolist())),
            "true_share": dict(zip(classes, (cm.sum(1) / cm.sum()).tolist()))}


class DAS3(Method):
    """DAS3 for :func:`kit.fit.fit`: the model after stages 1..``stage``, each stage from the one
    before it (stage 1 from :func:`source_parent`), cached as ``das3-stage<N>`` and keyed by the
    config without the other stages' fields (they reach it through its input model's key), the
    target data and the seed. Each stage's meta holds ``history``, ``info`` (thresholds, easy/hard
    split) and ``eval`` (:func:`eval_record` on the target val split; recomputed only for another
    one); ``parts["stages"]`` every stage's meta of the chain."""

    name = config = "das3"
    spec = {"stage": 3}
    load_parents = True
    watch = ("input", "target_train")

    def check(self, cfg, spec):
        stage_tags(spec["stage"], cfg)

    def parents(self, cfg, spec):
        s = int(spec["stage"])
        return {"input": Parent("das3", cfg, {"stage": s - 1}) if s > 1 else source_parent(cfg)}

    def cache_name(self, cfg, spec):
        return f"das3-stage{spec['stage']}"

    def key(self, cfg, seed, data, spec, parents):
        return model_key(cfg, "das3", seed=seed, data={"target": data["target_train"]}, parents=[parents["input"]],
                         tags=stage_tags(spec["stage"], cfg), stage=int(spec["stage"]))

    def build(self, cfg, data, spec):
        return {"model": build_model(cfg, data["target_train"].num_classes)}

    def train(self, cfg, seed, data, spec, parents, verbose=False):
        res = _STAGES[spec["stage"]](parents["input"].model, data["target_train"], cfg, seed)
        meta = {"history": res.history.to_dict(), "info": res.info}
        if data.get("target_val") is not None:
            meta["eval"] = eval_record(res.model, data["target_val"], cfg, data_identity(data["target_val"]))
        return {"model": res.model}, meta

    def result(self, cfg, data, spec, modules, meta, parents):
        model = modules["model"]
        for p in model.parameters():
            p.requires_grad_(True)
        val = data.get("target_val")
        if val is not None and (meta.get("eval") or {}).get("val") != data_identity(val):
            meta["eval"] = eval_record(model, val, cfg, data_identity(val))
        stages = {**parents["input"].parts.get("stages", {}), int(spec["stage"]): meta}
        return Fitted(self.name, model.eval(), meta, {"stages": stages})

    def train_record(self, fitted):
        return {"stages": {s: m.get("eval") for s, m in fitted.parts["stages"].items()}}


DAS3_METHOD = DAS3()
