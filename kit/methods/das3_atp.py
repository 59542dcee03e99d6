"""DAS3's stage 3 as the authors' later code does it (ATP, ``atp_semi.py``; config
``stage3="atp"``): an EMA teacher (:func:`kit.models.utils.ema_update`), plain argmax
pseudo-labels with the DACS weight on the hard pixels, ClassMix from easy onto hard images
and strong photometric augmentation (:func:`kit.data.transforms.strong_augment`).

:func:`kit.methods.das3.stage3_propagate` calls :func:`stage3_atp` for this variant; the
kit's own reading of the v1 paper is :func:`kit.methods.das3.stage3_kit`.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

import torch
import torch.nn as nn
from torch.utils.data import Dataset, Subset

from .. import losses
from ..data.mixing import class_mix, class_mix_batch
from ..data.transforms import strong_augment
from ..data.wrappers import Unlabeled
from ..engine import make_optimizer
from ..machine import resolve_device
from ..models.utils import ema_alpha_at, ema_update, make_teacher
from .das3_stage import StageResult, stage_engine
from .das3_scan import _num_classes, _probs, _stage3_split, _to

__all__ = ["ATP_LABELS", "ATP_TEACHERS", "atp_pseudo_labels", "stage3_atp"]


ATP_LABELS = ("argmax", "thresholded")
ATP_TEACHERS = ("ema", "frozen")


def atp_pseudo_labels(q_easy: torch.Tensor, q_hard: torch.Tensor, mix_mask: torch.Tensor,
                      conf_threshold: float = 0.968, thresholds: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The targets of one step of the ATP stage 3, from the teacher's probabilities.

    * easy images: the teacher's plain ``argmax`` (no threshold: every pixel labelled);
    * mixed images: the easy image's label where ``mix_mask`` is true (its pasted classes),
      the hard image's argmax elsewhere;
    * pixel weights of the mixed images: 1 on the pasted (easy) pixels, and on the hard
      pixels the DACS weight: the share of *all* hard pixels of the batch whose teacher
      confidence reaches ``conf_threshold`` (:func:`kit.losses.confident_pixel_share`).

    ``q_easy``, ``q_hard`` [B,C,H,W]; ``mix_mask`` bool [B,H,W]. Returns
    ``(y_easy [B,H,W], y_mix [B,H,W], w_mix [B,H,W])``.

    ``thresholds`` [C] (a deviation from the official code, config ``atp_labels="thresholded"``):
    the labels are stage 2's positive pseudo-labels instead of the plain argmax, the argmax
    class where its probability reaches that class's threshold and ignored elsewhere
    (:func:`kit.losses.positive_pseudo_labels`); the DACS weight is unchanged.
    """
    if q_easy.shape != q_hard.shape or q_easy.dim() != 4:
        raise ValueError(f"q_easy and q_hard must be probabilities of one shape [B,C,H,W], got "
                         f"{tuple(q_easy.shape)} and {tuple(q_hard.shape)}")
    if mix_mask.dtype != torch.bool or mix_mask.shape != q_easy.shape[:1] + q_easy.shape[2:]:
        raise ValueError(f"mix_mask must be bool [B,H,W] = {tuple(q_easy.shape[:1] + q_easy.shape[2:])}, got "
                         f"{mix_mask.dtype} {tuple(mix_mask.shape)}")
    if thresholds is None:
        y_easy, y_hard = q_easy.argmax(1), q_hard.argmax(1)
    else:
        y_easy, y_hard = losses.positive_pseudo_labels(q_easy, thresholds), losses.positive_pseudo_labels(q_hard, thresholds)
    w_hard = losses.confident_pixel_share(q_hard, conf_threshold)
    y_mix = torch.where(mix_mask, y_easy, y_hard)
    w_mix = torch.where(mix_mask, torch.ones_like(mix_mask, dtype=torch.float32), w_hard.float())
    return y_easy, y_mix, w_mix


def _atp_optimizer(cfg: Mapping[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    kind = cfg["atp_optimizer"] or cfg["optimizer"]
    lr = float(cfg["atp_lr"] if cfg["atp_lr"] is not None else cfg["stage3_lr"])
    if kind == "sgd":
        wd = cfg["weight_decay"]
    elif kind == "adamw":
        wd = float(cfg["atp_weight_decay"])
    else:
        wd = 0.0
    groups = model.param_groups() if hasattr(model, "param_groups") else [{"params": list(model.parameters())}]
    for g in groups:
        if g.get("name") == "head":
            g["lr_mult"] = cfg["head_lr_mult"]
    return make_optimizer(kind, groups, lr, cfg["momentum"], wd)


def stage3_atp(model: nn.Module, target: Dataset, cfg: Mapping[str, Any], seed: int = 0) -> StageResult:
    """Stage 3 as the authors' later code does it (``stage3="atp"``; ATP, ``atp_semi.py``).

    Split as in :func:`kit.methods.das3.stage3_kit` (the stage-2 model's mean normalized entropy, the
    ``easy_ratio`` lowest easy). Then, each iteration ``t``:

    1. the teacher is the EMA of the student, updated first (:func:`ema_update`,
       ``a = min(1 - 1/(t+1), ema_alpha)``; at ``t = 0`` it is the stage-2 model);
    2. it labels half a batch of easy and of hard images by plain argmax
       (:func:`atp_pseudo_labels`); the hard pixels get the DACS weight, the share of hard
       pixels with teacher confidence >= ``atp_conf_threshold``;
    3. ClassMix: half of each easy image's (argmax) classes are pasted onto a hard image;
    4. the easy images and the mixed ones get strong colour jitter and blur
       (:func:`strong_augment`);
    5. the student minimizes ``CE(easy) + mix_weight * sum_i w_i CE_i(mixed) / N``.

    Optimizer: ``atp_optimizer`` / ``atp_lr`` (the authors: AdamW 6e-5, heads 10x, weight
    decay 0.01; the paper profile sets these), else the config's optimizer at
    ``stage3_lr``. Left out of the official recipe: its contrastive term on hard images
    (SePiCo's, not part of DAS3), its crop of the pseudo-labels' top 15 / bottom 120 rows
    (the Cityscapes ego-vehicle), and its double augmentation (it jitters the easy and hard
    images before mixing and the mix again; here the mix of the un-augmented images is
    augmented once, as in DACS). The returned model is the student (the official
    evaluation uses the student too); ``teacher`` is the final EMA teacher.

    Two named deviations, for diagnosing this recipe (the notebook's section 4c):
    ``atp_labels="thresholded"`` labels with stage 2's class-wise thresholds (from the scan of
    the stage-2 model, as :func:`kit.methods.das3.stage3_kit` does) instead of the plain
    argmax; ``atp_teacher="frozen"`` keeps the stage-2 model as the teacher throughout
    instead of the EMA of the student.
    """
    _num_classes(model)  # a segmenter with num_classes, or a clear error
    device = resolve_device(cfg["device"])
    teacher = _to(make_teacher(model), device, cfg)
    scan, easy, hard, half = _stage3_split(teacher, target, cfg, seed)      # the stage-2 model ranks the images
    student = copy.deepcopy(model)
    for p in student.parameters():
        p.requires_grad_(True)
    w_mix, alpha, conf = float(cfg["mix_weight"]), float(cfg["ema_alpha"]), float(cfg["atp_conf_threshold"])
    jit, p_jit, p_blur = float(cfg["atp_jitter"]), float(cfg["atp_jitter_prob"]), float(cfg["atp_blur_prob"])
    ema_alpha_at(0, alpha)                                   # validates alpha before training starts
    if cfg["atp_labels"] not in ATP_LABELS or cfg["atp_teacher"] not in ATP_TEACHERS:
        raise ValueError(f"atp_labels must be one of {ATP_LABELS} and atp_teacher one of {ATP_TEACHERS}, "
                         f"got {cfg['atp_labels']!r} and {cfg['atp_teacher']!r}")
    thr = (scan.thresholds(float(cfg["top_k"]), cfg["threshold_mode"]).to(device)
           if cfg["atp_labels"] == "thresholded" else None)
    frozen = cfg["atp_teacher"] == "frozen"
    gen = torch.Generator().manual_seed(seed * 7 + 3)
    data = Unlabeled(target)
    ema_log: list[float] = []

    def step(batch, engine):
        net, opt = engine.modules["model"], engine.optimizers["model"]
        a = 1.0 if frozen else ema_update(teacher, engine.raw_modules["model"], engine.it, alpha)   # 1. EMA teacher
        ema_log.append(a)
        xe, _ = batch["easy"]
        xh, _ = batch["hard"]
        q = _probs(teacher, torch.cat([xe, xh]), xe.shape[-2:], engine.amp)     # teacher, eval mode, no gradient
        n = xe.shape[0]
        ye = q[:n].argmax(1)
        _, _, mask = class_mix_batch(xe, ye, ye, xh, q[n:].argmax(1), generator=gen)   # 3. classes of easy images
        y_easy, y_mix, w = atp_pseudo_labels(q[:n], q[n:], mask, conf, thr)      # 2. argmax labels, DACS weight
        xm, _ = class_mix(xe, y_easy, xh, y_mix, mask)
        xs = strong_augment(torch.cat([xe, xm]), gen, jit, p_jit, p_blur)       # 4. jitter + blur
        opt.zero_grad(set_to_none=True)
        with engine.autocast():
            logits = net(xs)["out"]
        l_easy = losses.seg_loss(logits[:n], y_easy)                             # 5.
        l_mix = losses.pixel_weighted_seg_loss(logits[n:], y_mix, w)
        loss = l_easy + w_mix * l_mix
        loss.backward()
        opt.step()
        return {"easy": l_easy.detach(), "mix": l_mix.detach(), "hard_weight": w[~mask].mean() if bool((~mask).any())
                else torch.tensor(1.0)}

    eng = stage_engine(cfg, 3, student, step, {"easy": Subset(data, easy), "hard": Subset(data, hard)}, seed,
                  "DAS3 stage 3 (propagation, ATP)", batch_size=half, opt=_atp_optimizer(cfg, student))
    history = eng.run()
    info = {"variant": "atp", "labels": cfg["atp_labels"], "teacher": cfg["atp_teacher"],
            **({"thresholds": thr.cpu().tolist()} if thr is not None else {}), "easy": easy, "hard": hard, "entropy": scan.entropy.tolist(),
            "items": scan.items.tolist(), "ema_alpha_last": ema_log[-1] if ema_log else None}
    return StageResult(student, history, info, teacher)
