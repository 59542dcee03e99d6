"""RIPU's other tables (Xie et al., CVPR 2022), as reproduced by ``notebooks/03_ripu.ipynb``
(its central Table 4 is :mod:`kit.experiments.ripu`, ``ripu/table4``).

* ``ripu/annotation_unit`` (section 4, claim C2): the same labelled pixels spent as 3×3 regions
  (RA), single points or whole images, all ranked by RI×PU; on every seed.
* ``ripu/budget`` (section 5, claim C3): RA at each budget of the notebook's curve (smoke: 1 and
  5%, else 0.5, 1, 2.2 and 5%) next to the source-only model and the oracle; on the sweep seeds.
  Each budget row carries ``budget`` (a fraction): C3 takes the largest, never a cell name.
* ``ripu/losses`` (section 6, claim C4): the loss ablation, with and without L_cr and L_nl, on
  the sweep seeds. The notebook runs it with ``extended`` on only; with it off the grid is the
  full loss alone (a model Table 4 has cached) and C4 is recorded as not testable.
* ``ripu/region_size`` (section 6, no claim): k at the same pixel budget (smoke: k = 1, 2; else 1, 2, 3).

Every model comes from ``fit("ripu", ...)`` with the notebook's config changes (same
cache keys); the notebook states no paper number for these rows but RA at 2.2% (69.6).

    >>> from kit import experiments
    >>> e = experiments.get("ripu/budget")
    >>> [c.name for c in e.grid(e.config("smoke"))], e.seeds(e.config("quick"))
    (['source-only', 'RA 1%', 'RA 5%', 'oracle'], [0, 1])
"""
from __future__ import annotations

from ..results import effect
from . import Cell, Claim, Experiment, by_cell, extended, paired, register
from .ripu import PAPER, active_run, baseline, data

BUDGETS = (0.005, 0.01, 0.022, 0.05)        #: every profile's budget curve (``cfg.budgets``; smoke: 0.01 and 0.05)
K_VALUES = (1, 2, 3)                         #: every profile's region sizes (``cfg.k_values``; smoke: 1 and 2)
UNITS = {"region (RA)": "region", "point": "point", "image": "image"}   #: cell -> mode (the notebook's ``unit``)
FULL = "CE + L_cr + L_nl"
LOSSES = {FULL: (0.1, 1.0), "CE + L_nl": (0.0, 1.0), "CE + L_cr": (0.1, 0.0), "CE": (0.0, 0.0)}   #: (λ_cr, λ_nl)


def sweep_seeds(cfg) -> list[int]:
    """The notebook's sweep seeds: ``cfg.sweep_seeds``, else the first two seeds."""
    return list(cfg.sweep_seeds or list(cfg.seeds)[:2])


def budgets(cfg) -> list[float]:
    return [float(b) for b in cfg.budgets]


def k_values(cfg) -> list[int]:
    return [int(k) for k in cfg.k_values]


def _with(cell: Cell, **extra) -> Cell:
    """``cell`` whose rows also carry ``extra`` columns."""
    return Cell(cell.name, lambda cfg, seed, ds: {**cell.run(cfg, seed, ds), **extra}, cell.paper)


def budget_cell(b: float) -> Cell:
    return _with(active_run(f"RA {100 * b:g}%", 69.6 if b == 0.022 else None, budget=b), budget=b)


def k_cell(k: int) -> Cell:
    return _with(active_run(f"{2 * k + 1}x{2 * k + 1}", radius_k=k), k=k)


# --- claims --------------------------------------------------------------------------------

def c2_effects(table):
    """C2: region (RA) − image and − point, paired by seed."""
    return {f"region − {u}": paired(table, "region (RA)", u) for u in ("image", "point")}


def c3_effects(table):
    """C3: RA at the largest budget − 0.9 × the oracle, paired by seed."""
    top = table["budget"].max()
    at_top = table[table["budget"] == top].groupby("seed")["miou"].mean()
    return {f"{100 * top:.1f}% − 0.9 × oracle": effect(at_top, paired_with=0.9 * by_cell(table, "oracle"))}


def c4_effects(table):
    """C4: the full loss − dropping L_cr and − dropping L_nl, paired by seed."""
    if any(by_cell(table, k, missing_ok=True).empty for k in ("CE + L_nl", "CE + L_cr")):
        raise ValueError("the loss ablation runs with extended on: PROFILE='full' (or EXTENDED=True)")
    return {f"full − ({k})": paired(table, FULL, k) for k in ("CE + L_nl", "CE + L_cr")}


C2 = Claim("C2", "Region-based beats image-based and point-based selection at the same labelled pixels",
           "Sec. 4.3 / Fig. 1: regions beat images and points", c2_effects)
C3 = Claim("C3", "A few percent of actively chosen target labels approach the fully supervised oracle (>= 90% of its mIoU)",
           "69.6 (2.2%) vs ~65-71 for fully supervised DeepLab-v2", c3_effects)
C4 = Claim("C4", "Each loss term helps: the full loss beats dropping L_cr or L_nl",
           "Table 6: +L_cr and +L_nl each add, both best", c4_effects)

# --- experiments ---------------------------------------------------------------------------

ANNOTATION_UNIT = register(Experiment(
    id="ripu/annotation_unit", paper=PAPER, notebook="03_ripu", method="ripu",
    reference="Sec. 4.3 / Fig. 1 (region vs point vs image selection at the same labelled pixels)",
    cells=tuple(active_run(name, acquisition="ripu", mode=mode) for name, mode in UNITS.items()),
    claims=(C2,), data=data))

SOURCE_ONLY, ORACLE = baseline("source_only"), baseline("oracle")
BUDGET = register(Experiment(
    id="ripu/budget", paper=PAPER, notebook="03_ripu", method="ripu",
    reference="Fig. 1 / Table 5 (RA budget curve, with source-only and the oracle)",
    cells=(SOURCE_ONLY, *(budget_cell(b) for b in BUDGETS), ORACLE), claims=(C3,), data=data,
    seeds=sweep_seeds, grid=lambda cfg: (SOURCE_ONLY, *(budget_cell(b) for b in budgets(cfg)), ORACLE)))

ABLATION = tuple(active_run(name, lambda_cr=cr, lambda_nl=nl) for name, (cr, nl) in LOSSES.items())
LOSS_ABLATION = register(Experiment(
    id="ripu/losses", paper=PAPER, notebook="03_ripu", in_notebook=extended, method="ripu",
    reference="Table 6 (loss ablation: with and without L_cr and L_nl, RA)",
    cells=ABLATION, claims=(C4,), data=data, seeds=sweep_seeds,
    grid=lambda cfg: ABLATION if cfg.extended else ABLATION[:1]))

REGION_SIZE = register(Experiment(
    id="ripu/region_size", paper=PAPER, notebook="03_ripu", method="ripu",
    reference="Fig. 6 (region size k at the same pixel budget, RA)",
    cells=tuple(k_cell(k) for k in K_VALUES), data=data, seeds=sweep_seeds,
    grid=lambda cfg: tuple(k_cell(k) for k in k_values(cfg))))
