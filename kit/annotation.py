"""Active domain adaptation's bookkeeping (RIPU): annotation budgets, the per-pixel annotation
state of a target pool, and the selection rounds that spend the one on the other.

:class:`Budget` says how many pixels (regions, points, centre pixels or whole images) each
image may have labelled after each round; :class:`AnnotationState` records, per pixel, the
round it was labelled in and the round it first fell inside a suppression window;
:func:`select_round` runs one round of region/pixel/point selection on a batch of pool
images (scores and greedy picks from :mod:`kit.active`) and :func:`image_level_select` one
round of whole-image selection. :func:`label_geometry` describes what a finished
annotation covers (RIPU's C2 diagnosis: clustered regions against spread-out points). Split
out of ``kit/active.py``, which still exports the names it had.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .active import (
    MODES, _check_k, _check_tie_order, acquisition_map, greedy_select, greedy_select_reference, region_mask,
)

__all__ = ["BUDGET_ROUNDINGS", "Budget", "AnnotationState", "select_round", "image_level_select", "label_geometry"]

#: how the RA / point budget is split into rounds: "exact" (never above the budget; a share
#: smaller than one region carries over) or "ceil" (official: ceil(share / area) picks per round)
BUDGET_ROUNDINGS = ("exact", "ceil")


@dataclass
class Budget:
    """Annotation budget per image, spread evenly over ``rounds`` selection rounds.

    ``mode="region"`` (RA) and ``"point"``: ``fraction`` of the image's pixels in total.
    ``rounding="exact"`` (default): after round ``r`` an image holds at most
    ``floor(fraction * H * W * (r+1) / rounds)`` labelled pixels, in whole regions of area
    ``(2k+1)^2`` (points: area 1), so the budget is never exceeded and a share smaller than one
    region carries over. ``rounding="ceil"`` (official): every round takes
    ``ceil(H * W * fraction / rounds / (2k+1)^2)`` regions (at 1024x2048, 2.2%, 5 rounds, k=1:
    1026 per round, 2.2016% in all).

    ``mode="pixel"`` (PA, official formula): ``ceil(points / rounds * pixel_scale)`` centre pixels
    per image and round. ``points`` is the budget of one *training-size* image (paper: 40) and
    ``pixel_scale`` the ratio of the selection resolution's area to the training size's area:
    the official code picks on 2048x1024 labels with ``PIXELS / rounds / (1280*640) * (2048*1024)``,
    i.e. ``pixel_scale = 2.56`` and ``ceil(20.48) = 21`` picks per round. Where the selection
    runs at the training size (the toy profiles) ``pixel_scale = 1``: ``ceil(points / rounds)``.

    ``mode="image"``: ``fraction`` of all pool pixels, spent on whole images.
    """

    mode: str = "region"
    fraction: float = 0.022
    rounds: int = 5
    k: int = 1
    points: int = 40
    pixel_scale: float = 1.0
    rounding: str = "exact"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown annotation mode {self.mode!r}; expected one of {MODES}")
        if not 0 <= float(self.fraction) <= 1:
            raise ValueError(f"budget fraction must be in [0, 1] (e.g. 0.022 for 2.2%), got {self.fraction}")
        if not 1 <= int(self.rounds) <= 254:
            raise ValueError(f"rounds must be in 1..254, got {self.rounds}")
        if float(self.pixel_scale) <= 0:
            raise ValueError(f"pixel_scale must be > 0, got {self.pixel_scale}")
        if self.rounding not in BUDGET_ROUNDINGS:
            raise ValueError(f"unknown budget rounding {self.rounding!r}; expected one of {BUDGET_ROUNDINGS}")
        _check_k(self.k)

    @property
    def area(self) -> int:
        """Pixels labelled per pick: (2k+1)^2 for regions, 1 for points and PA."""
        return (2 * self.k + 1) ** 2 if self.mode == "region" else 1

    def picks_per_round(self, h: int, w: int) -> int:
        """The nominal picks of one image in one round."""
        if self.mode == "pixel":
            return int(math.ceil(int(self.points) / int(self.rounds) * float(self.pixel_scale) - 1e-9))
        if self.rounding == "ceil":
            return int(math.ceil(h * w * float(self.fraction) / int(self.rounds) / self.area - 1e-9))
        return int(math.floor(self.fraction * h * w / self.rounds + 1e-9)) // self.area

    def pixels_per_image(self, h: int, w: int) -> int:
        """The total labelled-pixel budget of one image (all rounds)."""
        if self.mode == "pixel" or self.rounding == "ceil":
            return int(self.rounds) * self.picks_per_round(h, w) * self.area
        return int(math.floor(self.fraction * h * w + 1e-9))

    def allowed_pixels(self, h: int, w: int, round_idx: int) -> int:
        """Labelled pixels one image may hold after round ``round_idx`` (0-based). ``"exact"``
        RA/points: the budget accumulates, ``floor(total * (r+1) / rounds)``, so a share smaller
        than one region carries over to the next round instead of being lost (it matters for
        small images); PA and ``"ceil"``: ``(r+1)`` rounds of :meth:`picks_per_round` picks."""
        r = min(max(int(round_idx), 0), int(self.rounds) - 1)
        if self.mode == "pixel" or self.rounding == "ceil":
            return (r + 1) * self.picks_per_round(h, w) * self.area
        total = self.pixels_per_image(h, w)
        return int(math.floor(total * (r + 1) / int(self.rounds) + 1e-9))

    def picks_allowed(self, h: int, w: int, round_idx: int, labeled: int) -> int:
        """Picks for an image holding ``labeled`` pixels in round ``round_idx``. ``"exact"``
        RA/points: what is left of :meth:`allowed_pixels` divided by the area, so labelled pixels
        never exceed the budget. PA and ``"ceil"`` (official): :meth:`picks_per_round`, whatever
        earlier rounds achieved."""
        if self.mode == "pixel" or self.rounding == "ceil":
            return self.picks_per_round(h, w)
        return max(0, self.allowed_pixels(h, w, round_idx) - int(labeled)) // self.area


def _round_code(round_idx: int) -> int:
    r = int(round_idx)
    if not 0 <= r <= 253:
        raise ValueError(f"round index must be in 0..253, got {round_idx}")
    return r + 1


@dataclass
class AnnotationState:
    """What has been labelled in a pool of N target images, per pixel, by round.

    ``label_round`` uint8 [N,H,W]: 0 = unlabelled, ``r + 1`` = labelled in round ``r``.
    ``active_round`` uint8 [N,H,W]: 0 = never suppressed, ``r + 1`` = first inside a suppression
    window in round ``r`` (the official per-image "active" indicator; labelled pixels are always
    inside one). ``history``: one log record per round.

    Both may be views on shared or memory-mapped storage (:class:`kit.methods.ripu_pool.ActivePool`);
    write through :meth:`mark`, :meth:`label_images` and :meth:`rollback`. A boolean tensor passed
    as ``label_round`` is read as "labelled in round 0".
    """

    label_round: torch.Tensor
    active_round: torch.Tensor | None = None
    history: list = field(default_factory=list)

    def __post_init__(self):
        if self.label_round.dtype == torch.bool:
            self.label_round = self.label_round.to(torch.uint8)
        if self.active_round is None:
            self.active_round = self.label_round.clone()
        for name in ("label_round", "active_round"):
            t = getattr(self, name)
            if t.dtype != torch.uint8 or t.dim() != 3:
                raise ValueError(f"AnnotationState.{name} must be uint8 [N,H,W], got {t.dtype} {tuple(t.shape)}")
        if self.active_round.shape != self.label_round.shape:
            raise ValueError(f"label_round {tuple(self.label_round.shape)} and active_round "
                             f"{tuple(self.active_round.shape)} differ in shape")

    @classmethod
    def empty(cls, n: int, h: int, w: int) -> "AnnotationState":
        return cls(torch.zeros(n, h, w, dtype=torch.uint8), torch.zeros(n, h, w, dtype=torch.uint8))

    @property
    def mask(self) -> torch.Tensor:
        """bool [N,H,W]: labelled pixels (a new tensor; write through :meth:`mark`)."""
        return self.label_round > 0

    @property
    def active(self) -> torch.Tensor:
        """bool [N,H,W]: pixels ever inside a suppression window (a new tensor)."""
        return self.active_round > 0

    @property
    def round_map(self) -> torch.Tensor:
        """int8 [N,H,W]: the round each pixel was labelled in, -1 = never."""
        return (self.label_round.to(torch.int16) - 1).to(torch.int8)

    @property
    def labeled_pixels(self) -> int:
        return int(torch.count_nonzero(self.label_round))

    @property
    def labeled_fraction(self) -> float:
        """Labelled pixels over pool pixels (the paper's budget percentage / 100)."""
        return self.labeled_pixels / max(1, self.label_round.numel())

    def blocked(self, i: int, persist_suppression: bool = True) -> torch.Tensor:
        """bool [H,W]: pixels of image ``i`` that start a round at ``-inf`` (labelled, and with
        ``persist_suppression`` every pixel ever inside a suppression window, as officially)."""
        b = self.label_round[i] > 0
        return b | (self.active_round[i] > 0) if persist_suppression else b

    def mark(self, i: int, labeled: torch.Tensor, suppressed: torch.Tensor, round_idx: int) -> None:
        """Record round ``round_idx``'s labels (bool [H,W]) and suppression windows of image ``i``
        (pixels already labelled / active keep their earlier round)."""
        code = _round_code(round_idx)
        lr, ar = self.label_round[i], self.active_round[i]
        lr[labeled & (lr == 0)] = code
        ar[(suppressed | labeled) & (ar == 0)] = code

    def label_images(self, index: Sequence[int], round_idx: int) -> None:
        """Label whole images (image-level selection) in round ``round_idx``."""
        code = _round_code(round_idx)
        for i in index:
            for t in (self.label_round[i], self.active_round[i]):
                t[t == 0] = code

    def rollback(self, round_idx: int) -> None:
        """Forget rounds ``round_idx`` and later (labels, suppression, log): used when a run resumes
        from a checkpoint taken before those rounds ran."""
        code = _round_code(round_idx)
        for t in (self.label_round, self.active_round):
            for i in range(t.shape[0]):   # per image: no [N,H,W] temporary at paper scale
                t[i][t[i] >= code] = 0
        self.history[:] = [h for h in self.history if int(h.get("round", 0)) < int(round_idx)]

    def masked_labels(self, labels: torch.Tensor, index) -> torch.Tensor:
        """``labels`` [.., H, W] of pool images ``index`` with every unlabelled pixel set to 255."""
        out = labels.clone()
        out[self.label_round[index] == 0] = 255
        return out


def select_round(prob: torch.Tensor, state: AnnotationState, index: Sequence[int], budget: Budget,
                 acquisition: str = "ripu", suppress: int | None = None, generator: torch.Generator | None = None,
                 fast: bool = True, round_idx: int | None = None, *, tie_order: str = "column",
                 persist_suppression: bool = True, normalize: bool | None = None,
                 score_k: int | None = None, record: bool = True) -> list[list[tuple[int, int]]]:
    """One selection round on pool images ``index`` with probabilities ``prob`` [B,C,H,W].

    ``prob`` must be at the resolution of ``state`` -- the official code upsamples the logits
    (bilinear, ``align_corners=True``) to the original label size and selects there
    (:func:`kit.methods.ripu_pool.select_on_pool` does this). Scores: RA and points rank by RI x PU
    with radius ``budget.k`` (:func:`~kit.active.region_scores`); PA by the official PA score
    (:func:`~kit.active.pixel_scores`) with window radius ``score_k`` (default: the suppression radius, as
    the official ``RADIUS_K`` serves both). Pixels in :meth:`AnnotationState.blocked` are
    ``-inf``; each image gets ``budget.picks_allowed(h, w, round_idx, its labelled pixels)``
    greedy picks (``round_idx`` defaults to the number of rounds logged in ``state.history``; at
    2.2% of a 1024x2048 image that is 1025 regions of 3x3 per round, 1026 with
    ``rounding="ceil"``) with suppression radius ``suppress`` (default: 2k for regions, 32 for
    PA, 1 for points) and tie rule ``tie_order``. The picks' regions (regions: (2k+1)^2;
    otherwise the pixel) are labelled and their suppression windows marked active. Returns the
    picks per image; ``record``: append a log record to ``state.history`` (it counts the labelled
    pixels of the whole pool: callers that select batch by batch log once per round instead).
    (Image-level selection is :func:`image_level_select`.)
    """
    if budget.mode == "image":
        raise ValueError("image-level selection ranks whole images: use image_level_select")
    _check_tie_order(tie_order)
    if prob.shape[0] != len(index):
        raise ValueError(f"prob has {prob.shape[0]} images but index has {len(index)}")
    h, w = prob.shape[-2:]
    if tuple(state.label_round.shape[-2:]) != (h, w):
        raise ValueError(f"probabilities are {h}x{w} but the annotation masks are "
                         f"{tuple(state.label_round.shape[-2:])}: select at the masks' resolution")
    if suppress is None:
        suppress = {"region": 2 * budget.k, "pixel": 32, "point": 1}[budget.mode]
    pixel = budget.mode == "pixel"
    k_score = (int(suppress) if score_k is None else _check_k(score_k)) if pixel else budget.k
    scores = acquisition_map(prob, acquisition, k_score, generator, pixel=pixel, normalize=normalize).float().cpu()
    r = len(state.history) if round_idx is None else int(round_idx)
    label_k = budget.k if budget.mode == "region" else 0
    select = greedy_select if fast else greedy_select_reference
    out = []
    for b, i in enumerate(index):
        n = budget.picks_allowed(h, w, r, int(torch.count_nonzero(state.label_round[i])))
        s = scores[b].clone()
        s[state.blocked(i, persist_suppression)] = -math.inf
        picks = select(s, n, suppress, tie_order=tie_order)
        state.mark(i, region_mask(picks, (h, w), label_k), region_mask(picks, (h, w), suppress), r)
        out.append(picks)
    if record:
        state.history.append({"round": r, "picks": int(sum(len(p) for p in out)),
                              "labeled_pixels": state.labeled_pixels, "labeled_fraction": state.labeled_fraction})
    return out


def image_level_select(image_scores: torch.Tensor, state: AnnotationState, budget: Budget,
                       round_idx: int | None = None) -> list[int]:
    """Image-level active learning at the same pixel budget: label whole images, highest mean score first.

    ``image_scores`` [N]: one score per pool image (e.g. mean uncertainty). After round r (0-based)
    at most ``fraction * pool pixels * (r+1) / rounds`` pixels are labelled (unspent budget
    carries over, since an image is larger than a round's share); labelled images are skipped.
    """
    n, h, w = state.label_round.shape
    if image_scores.shape != (n,):
        raise ValueError(f"expected one score per pool image ({n}), got shape {tuple(image_scores.shape)}")
    r_log = len(state.history) if round_idx is None else int(round_idx)
    r = min(r_log, budget.rounds - 1)   # rounds done so far: the budget accumulates
    allowed = int(math.floor(budget.fraction * n * h * w * (r + 1) / budget.rounds + 1e-9))
    done = state.label_round.flatten(1).gt(0).all(1)
    k = max(0, allowed - state.labeled_pixels) // (h * w)
    s = image_scores.clone().float()
    s[done] = -math.inf
    chosen = [int(i) for i in torch.argsort(-s, stable=True)[:k] if s[i] > -math.inf]
    state.label_images(chosen, r_log)
    state.history.append({"round": r_log, "picks": len(chosen), "labeled_pixels": state.labeled_pixels,
                          "labeled_fraction": state.labeled_fraction})
    return chosen


def label_geometry(round_map: torch.Tensor, labels: torch.Tensor, wrong: torch.Tensor | None = None,
                   block: int = 8, ignore_index: int = 255) -> dict[str, float]:
    """Where an annotation's labelled pixels lie, over a pool: ``round_map`` [N,H,W] (the round
    a pixel was labelled in, -1 = never), the pool's ``labels`` [N,H,W] and optionally
    ``wrong`` [N,H,W] (bool: a model's errors, e.g. the source-only model's). All in %:

    * ``labelled``: labelled share of the pool's pixels;
    * ``at_boundary``: share of the labelled pixels within 1 px of another class (pool
      average: ``boundary_share``);
    * ``blocks_touched``: share of the pool's ``block``×``block`` tiles holding a labelled pixel
      (how widely the labels spread over the images);
    * ``images_touched``: share of the pool's images holding one;
    * ``labelled_wrong``: share of the labelled pixels ``wrong`` marks (pool average: ``wrong``).

        >>> rm = torch.full((1, 8, 8), -1, dtype=torch.int8); rm[0, 0, 0] = 0
        >>> g = label_geometry(rm, torch.zeros(1, 8, 8, dtype=torch.long), block=4)
        >>> g["labelled"], g["blocks_touched"], g["images_touched"]
        (1.5625, 25.0, 100.0)
    """
    from .evaluation import boundary_mask

    if round_map.shape != labels.shape:
        raise ValueError(f"round_map {tuple(round_map.shape)} and labels {tuple(labels.shape)} differ in shape")
    lab = round_map >= 0
    n_lab = max(int(lab.sum()), 1)
    edge = boundary_mask(labels, 1, ignore_index)
    tiles = torch.nn.functional.max_pool2d(lab[:, None].float(), block, block, ceil_mode=True)
    out = {"labelled": 100.0 * float(lab.float().mean()),
           "at_boundary": 100.0 * int((lab & edge).sum()) / n_lab,
           "boundary_share": 100.0 * float(edge.float().mean()),
           "blocks_touched": 100.0 * float(tiles.mean()),
           "images_touched": 100.0 * float(lab.flatten(1).any(1).float().mean())}
    if wrong is not None:
        out["labelled_wrong"] = 100.0 * int((lab & wrong).sum()) / n_lab
        out["wrong"] = 100.0 * float(wrong.float().mean())
    return out
