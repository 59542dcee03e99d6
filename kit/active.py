"""Active domain adaptation: region scores, greedy selection and annotation masks (RIPU).

Budgets, the annotation state and the selection rounds, which use these, are in
:mod:`kit.annotation`.

Xie et al., "Towards Fewer Annotations: Active Learning via Region Impurity and Prediction
Uncertainty for Domain Adaptive Semantic Segmentation", CVPR 2022 (arXiv 2111.12940).

**Floating regions.** Every pixel ``(i, j)`` defines the square region ``N_k(i, j)`` of side
``2k+1`` around it (clipped to the image). With class probabilities ``P`` [B,C,H,W] and the
predicted class ``Y^ = argmax_c P``:

* region impurity [RIPU Eq. 2]  ``RI(i,j) = - sum_c h_c log h_c``, ``h_c = |{q in N_k : Y^_q = c}| / |N_k|``
  (the entropy of the predicted-class histogram of the region). The paper's Eq. 2 is in nats;
  the official code divides it by ``log C`` (``normalize=True``, the default here); the ranking
  is the same either way;
* prediction uncertainty [RIPU Eq. 3] ``PU(i,j) = 1/|N_k| sum_{q in N_k} H(P_q) / log C`` with
  ``H(P_q) = -sum_c P_q^c log(P_q^c + 1e-6)`` (the official code's epsilon);
* the acquisition score [RIPU Eq. 4] ``A = RI * PU``.

Windows are all-ones convolutions with zero padding; ``|N_k|`` counts the in-image pixels
of the window (so border regions are averages over real pixels, as in the official code).
One deliberate difference: the impurity uses ``0 log 0 = 0`` exactly (the official code writes
``h log(h + 1e-6)``, which makes a pure region's impurity about ``-1e-6`` instead of 0).

**Pixel-based annotating (PA)** is scored differently in the official code
(:func:`pixel_scores`): ``A = H(P_q) * RI_K(q)`` -- the pixel's own entropy (nats, not
normalized, not window-averaged) times the impurity (nats) of the ``(2K+1)^2`` window around it,
``K = 32`` in the paper (the same radius as the PA suppression window).

**Greedy selection (the reference semantics).** Given a score map S [H,W] and ``n`` picks:
repeat ``n`` times: take the maximum of S, stop if it is ``-inf``; record the pick; set S to
``-inf`` on the pick's suppression window (side ``2r+1``, clipped). Region-based annotating
(RA) labels the ``(2k+1)^2`` region of each pick and suppresses ``r = 2k`` (a ``(4k+1)^2``
window, so regions never overlap); PA labels the centre pixel only and suppresses ``r = 32``
(65x65) in the paper.

*Ties* (``tie_order``). The official code finds the maximum with ``torch.max(S, dim=0)`` (the
maximum of every column and the first row reaching it) and then ``torch.max`` over that row
vector (the first column holding the global maximum). So on ties the **lowest column** wins,
and within it the lowest row: the first maximum in *column-major* order
(``tie_order="column"``, the default). ``tie_order="row"`` is the first maximum in row-major
order (``torch.argmax`` of the flattened map; this kit's behaviour before it followed the
official order).

*Persistence across rounds* (``persist_suppression``). The official code keeps a per-image
"active" indicator: every pixel that was ever inside a suppression window is ``-inf`` at the
start of every later round, not only the labelled pixels (``persist_suppression=True``, the
default). ``False``: only labelled pixels are excluded in later rounds.

:func:`greedy_select_reference` is that loop, one full-map maximum per pick (what the
official code does; ~1000 maxima per image per round at 2.2%). :func:`greedy_select` is
*exactly* equivalent but fast: the greedy order is the order of the candidates sorted by
(score descending, index ascending in the tie order) with every candidate that lies within
``r`` (Chebyshev distance) of an earlier *accepted* candidate skipped. So: find a threshold
that keeps a few times ``n`` candidates (one pass over the map), sort only those (stable, so
ties keep the tie order), and scan them with an occupancy grid; if the scan runs out before
``n`` picks, lower the threshold and continue where it stopped. Column-major order is the
row-major order of the transposed map. Tests check identity with the reference on random
maps with many ties.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ACQUISITIONS", "MODES", "TIE_ORDERS", "window_counts", "pixel_entropy", "region_impurity",
           "prediction_uncertainty", "region_scores", "pixel_scores", "acquisition_map", "greedy_select_reference",
           "greedy_select", "region_mask"]

#: the acquisition functions: RIPU's product and the three baselines
ACQUISITIONS = ("ripu", "impurity", "uncertainty", "random")
#: how picks are turned into labels: regions (RA), centre pixels (PA), points at the region budget, whole images
MODES = ("region", "pixel", "point", "image")
#: tie rules of the greedy selection: "column" (official: lowest column first), "row" (row-major)
TIE_ORDERS = ("column", "row")
#: the epsilon of the official code's entropy, ``-sum p log(p + eps)``
ENTROPY_EPS = 1e-6


def _check_prob(prob: torch.Tensor) -> None:
    if not isinstance(prob, torch.Tensor) or prob.dim() != 4:
        raise ValueError(f"expected class probabilities [B,C,H,W], got "
                         f"{tuple(prob.shape) if isinstance(prob, torch.Tensor) else type(prob).__name__}")
    if prob.shape[1] < 2:
        raise ValueError(f"need at least 2 classes, got C={prob.shape[1]}")


def _check_k(k: int) -> int:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 0:
        raise ValueError(f"region radius k must be an integer >= 0, got {k!r}")
    return int(k)


def _check_tie_order(tie_order: str) -> str:
    if tie_order not in TIE_ORDERS:
        raise ValueError(f"unknown tie_order {tie_order!r}; expected one of {TIE_ORDERS}")
    return tie_order


def window_counts(x: torch.Tensor, k: int) -> torch.Tensor:
    """Sum of ``x`` [B,C,H,W] over every (2k+1)^2 window (zero padding), same shape.

    >>> window_counts(torch.ones(1, 1, 2, 3), 1)[0, 0]
    tensor([[4., 6., 4.],
            [4., 6., 4.]])
    """
    k = _check_k(k)
    if k == 0:
        return x.clone()
    # the all-ones (2k+1)^2 convolution with zero padding, as a box filter: average pooling
    # that counts the padding, times the area (much faster than a depthwise conv2d on CPU)
    a = (2 * k + 1) ** 2
    return F.avg_pool2d(x, 2 * k + 1, stride=1, padding=k, count_include_pad=True) * a


def _in_image(shape, k: int, device, dtype=torch.float32) -> torch.Tensor:
    h, w = shape
    return window_counts(torch.ones(1, 1, h, w, device=device, dtype=dtype), k)[0, 0]


def pixel_entropy(prob: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """Per-pixel entropy [B,H,W] ``-sum_c p log(p + 1e-6)`` (nats; ``normalize``: divided by log C).

    >>> round(float(pixel_entropy(torch.full((1, 2, 1, 1), 0.5))[0, 0, 0]), 4)   # log 2
    0.6931
    """
    _check_prob(prob)
    p = prob.float()
    ent = -(p * torch.log(p + ENTROPY_EPS)).sum(1)
    return ent / math.log(prob.shape[1]) if normalize else ent


def region_impurity(prob: torch.Tensor, k: int = 1, normalize: bool = True) -> torch.Tensor:
    """RI [B,H,W] [RIPU Eq. 2]: entropy of the predicted-class histogram of each (2k+1)^2 region,
    divided by ``log C`` when ``normalize`` (the official code; the paper's Eq. 2 is in nats).

    >>> p = torch.zeros(1, 2, 1, 2); p[0, 0, 0, 0] = 1; p[0, 1, 0, 1] = 1   # predictions [0, 1]
    >>> round(float(region_impurity(p, 1, normalize=False)[0, 0, 0]), 4)  # histogram (1/2, 1/2): log 2
    0.6931
    >>> float(region_impurity(p, 1)[0, 0, 0])                             # / log 2
    1.0
    """
    _check_prob(prob)
    onehot = torch.zeros(prob.shape, dtype=torch.float32, device=prob.device)
    onehot.scatter_(1, prob.max(1, keepdim=True).indices, 1.0)   # contiguous [B,C,H,W]; max(1) is faster than argmax(1) on CPU
    counts = torch.round(window_counts(onehot, k))   # exact integer counts (the box filter is float)
    hist = counts / _in_image(prob.shape[-2:], k, prob.device).round()
    ri = -torch.xlogy(hist, hist).sum(1)              # 0 log 0 = 0
    return ri / math.log(prob.shape[1]) if normalize else ri


def prediction_uncertainty(prob: torch.Tensor, k: int = 1) -> torch.Tensor:
    """PU [B,H,W] [RIPU Eq. 3]: mean over each (2k+1)^2 region of the pixel entropy normalized by log C."""
    ent = pixel_entropy(prob, normalize=True)[:, None]
    return (window_counts(ent, k) / _in_image(prob.shape[-2:], k, prob.device))[:, 0]


def region_scores(prob: torch.Tensor, k: int = 1, normalize: bool = True) -> dict[str, torch.Tensor]:
    """``{"impurity", "uncertainty", "score"}`` maps [B,H,W]; score = impurity * uncertainty [RIPU Eq. 4].
    ``normalize``: the impurity divided by log C (official; ``False``: nats as in the paper's Eq. 2)."""
    ri, pu = region_impurity(prob, k, normalize), prediction_uncertainty(prob, k)
    return {"impurity": ri, "uncertainty": pu, "score": ri * pu}


def pixel_scores(prob: torch.Tensor, k: int = 32, normalize: bool = False) -> dict[str, torch.Tensor]:
    """PA scores [B,H,W] as the official code computes them: ``{"impurity", "uncertainty", "score"}``
    with uncertainty = the pixel's own entropy (nats, not window-averaged), impurity = RI of the
    ``(2k+1)^2`` window (nats; official PA radius k = 32) and score = their product.
    ``normalize=True`` divides both by log C (not the official PA numbers; same ranking)."""
    ri, ent = region_impurity(prob, k, normalize), pixel_entropy(prob, normalize)
    return {"impurity": ri, "uncertainty": ent, "score": ri * ent}


def acquisition_map(prob: torch.Tensor, acquisition: str = "ripu", k: int = 1,
                    generator: torch.Generator | None = None, *, pixel: bool = False,
                    normalize: bool | None = None) -> torch.Tensor:
    """The score map [B,H,W] an acquisition function ranks pixels by (``random``: uniform noise).

    ``pixel=False``: the region scores of :func:`region_scores` (RA, points, images);
    ``pixel=True``: the PA scores of :func:`pixel_scores` with window radius ``k``.
    ``normalize=None`` means the official numbers: impurity / log C for regions, nats for PA.
    """
    if acquisition not in ACQUISITIONS:
        raise ValueError(f"unknown acquisition {acquisition!r}; expected one of {ACQUISITIONS}")
    _check_prob(prob)
    if acquisition == "random":
        b, _, h, w = prob.shape
        return torch.rand(b, h, w, generator=generator).to(prob.device)
    if normalize is None:
        normalize = not pixel
    scores = pixel_scores(prob, k, normalize) if pixel else region_scores(prob, k, normalize)
    return scores[{"impurity": "impurity", "uncertainty": "uncertainty", "ripu": "score"}[acquisition]]


# ---------------------------------------------------------------------------------------------
# Greedy selection: the reference loop and the exact fast version
# ---------------------------------------------------------------------------------------------
def _check_score(score, who: str) -> np.ndarray:
    if isinstance(score, torch.Tensor):
        score = score.detach().cpu().numpy()
    s = np.asarray(score)
    if s.ndim != 2:
        raise ValueError(f"{who}: expected one score map [H,W], got shape {s.shape}")
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    if np.isnan(s).any():
        raise ValueError(f"{who}: the score map contains NaN (did the model diverge?); scores must be "
                         "numbers (-inf = never pick)")
    return s


def greedy_select_reference(score, n: int, suppress: int, tie_order: str = "column") -> list[tuple[int, int]]:
    """The plain greedy loop (the official selection): ``n`` full-map maxima, each followed by
    setting the ``(2*suppress+1)^2`` window around the pick to ``-inf``. Returns picks ``(y, x)``
    in order; fewer than ``n`` if the map runs out (its maximum becomes ``-inf``).

    ``tie_order="column"`` (official): ``torch.max`` over rows (per column: the maximum and the
    first row reaching it), then over that row vector (the first column holding the maximum) --
    on ties the lowest column wins, then the lowest row. ``"row"``: the first maximum in
    row-major order.

    >>> greedy_select_reference(torch.tensor([[0., 1.], [1., 0.]]), 1, 0)   # (0,1) and (1,0) tie
    [(1, 0)]
    >>> greedy_select_reference(torch.tensor([[0., 1.], [1., 0.]]), 1, 0, tie_order="row")
    [(0, 1)]
    """
    _check_tie_order(tie_order)
    s = torch.as_tensor(_check_score(score, "greedy_select_reference")).clone()
    h, w = s.shape
    picks = []
    if h == 0 or w == 0:
        return picks
    for _ in range(int(n)):
        if tie_order == "column":
            col_max, rows = torch.max(s, dim=0)        # per column: max and its first row
            top, x = torch.max(col_max, dim=0)         # the first column holding the maximum
            x = int(x)
            y = int(rows[x])
        else:
            i = int(torch.argmax(s.reshape(-1)))       # first maximal index in row-major order
            y, x = divmod(i, w)
            top = s[y, x]
        if top == -math.inf:
            break
        picks.append((y, x))
        s[max(0, y - suppress):y + suppress + 1, max(0, x - suppress):x + suppress + 1] = -math.inf
    return picks


def greedy_select(score, n: int, suppress: int, start_factor: int = 4,
                  tie_order: str = "column") -> list[tuple[int, int]]:
    """Exactly the picks of :func:`greedy_select_reference` (same regions, same order, same
    ``tie_order``), fast.

    The greedy order is the order of the candidates sorted by (score desc, index asc in the
    tie order) in which every candidate within ``suppress`` (Chebyshev distance) of an earlier
    *accepted* one is skipped. Column-major order is handled as the row-major order of the
    transposed map (the suppression window is symmetric). The map is processed in value blocks,
    highest first: a threshold ``t`` keeps about ``start_factor * n`` candidates (estimated
    from a strided sample, ``torch.topk``); the candidates ``> t`` are sorted (stable: ties keep
    the index order), then the tie group ``== t`` follows in index order (no sort needed,
    however large -- score maps are mostly exact zeros where regions are pure); an occupancy
    grid skips suppressed candidates. If ``n`` picks are not reached, the threshold is lowered
    (4x more candidates) and the scan resumes below the previous block.
    """
    _check_tie_order(tie_order)
    s = _check_score(score, "greedy_select")
    if tie_order == "column":
        picks = _greedy_row_major(np.ascontiguousarray(s.T), n, suppress, start_factor)
        return [(y, x) for x, y in picks]
    return _greedy_row_major(s, n, suppress, start_factor)


def _greedy_row_major(s: np.ndarray, n: int, suppress: int, start_factor: int) -> list[tuple[int, int]]:
    n = int(n)
    if n < 0 or suppress < 0:
        raise ValueError(f"n and suppress must be >= 0, got n={n}, suppress={suppress}")
    h, w = s.shape
    flat = s.reshape(-1)
    total = flat.size
    picks: list[tuple[int, int]] = []
    if n == 0 or total == 0:
        return picks
    occupied = np.zeros((h, w), dtype=bool)
    occ_flat = occupied.reshape(-1)
    r = int(suppress)
    stride = max(1, total // 65536)
    sample = torch.from_numpy(np.ascontiguousarray(flat[::stride]))
    m = max(16, start_factor * n // stride)   # candidates wanted in the sample
    upper = math.inf                          # every candidate with score >= upper has been scanned

    def scan(indices) -> bool:
        for i in indices:
            if occ_flat[i]:
                continue
            y, x = divmod(i, w)
            picks.append((y, x))
            if len(picks) == n:
                return True
            occupied[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1] = True
        return False

    while True:
        rest = sample[sample < upper] if upper < math.inf else sample
        thr = float(torch.topk(rest, min(m, rest.numel())).values[-1]) if rest.numel() else -math.inf
        below = flat < upper if upper < math.inf else None
        if thr == -math.inf:   # last block: every finite score below `upper`
            sel = flat > -math.inf if below is None else (flat > -math.inf) & below
            idx = np.flatnonzero(sel)
            scan(idx[np.argsort(-flat[idx], kind="stable")].tolist())
            return picks
        sel = flat > thr if below is None else (flat > thr) & below
        idx = np.flatnonzero(sel)
        if scan(idx[np.argsort(-flat[idx], kind="stable")].tolist()):
            return picks
        if scan(np.flatnonzero(flat == thr).tolist()):   # the tie group at thr, in index order
            return picks
        upper = thr
        m *= 4


def region_mask(picks: Sequence[tuple[int, int]], shape, k: int) -> torch.Tensor:
    """Boolean [H,W] mask of the union of the (2k+1)^2 regions (clipped) around ``picks``."""
    k = _check_k(k)
    h, w = shape
    m = torch.zeros(h, w, dtype=torch.bool)
    for y, x in picks:
        m[max(0, y - k):y + k + 1, max(0, x - k):x + k + 1] = True
    return m
