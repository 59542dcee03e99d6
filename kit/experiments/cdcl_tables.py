"""CDCL's ablations (section 6 of ``notebooks/04_cdcl.ipynb``; the main table is ``cdcl/main`` in
:mod:`kit.experiments.cdcl`). Both train DAT + DAB on the first two datasets (``PAIR``) on the
notebook's ablation seeds (``cfg.ablation_seeds``, else the first seed):

* ``cdcl/interval`` -- the interval-t ablation: one cell ``"t=<t>"`` per ``cfg.intervals`` (dataset A
  every iteration, B every t-th). Claim C4 (t = ``intervals[0]`` beats every other t).
* ``cdcl/update_rule`` -- one step on the summed loss (``"sum"``, DAT) against one step per dataset
  (``"alternate"``, ``dat_mode="alternate"``). Claims C5 (the summed loss gives the smoother loss
  curve: the extra column ``loss roughness``, the notebook's mean |Δloss| between logged points)
  and C5b (it trains at least as well).

A row's ``miou`` is the mean over the two datasets (the notebook's per-seed score), with one
``miou:<dataset>`` column each, as in ``cdcl/main`` (:func:`kit.experiments.cdcl.registry_table`
builds the same table from the notebook's records). The notebook's two-dataset main table
(``extended``) decides no claim and is not registered. No paper numbers are stated.

    >>> from kit import experiments
    >>> e = experiments.get("cdcl/interval")
    >>> cfg = e.config("smoke")
    >>> [c.name for c in e.grid(cfg)], list(e.seeds(cfg))
    (['t=1', 't=2', 't=4'], [0])
"""
from __future__ import annotations

from . import Cell, Claim, Experiment, extended, paired, register
from .cdcl import PAPER, _row, data

INTERVALS = (1, 2, 4)   #: every profile's intervals
ROUGH = "loss roughness"


def ablation_seeds(cfg) -> list[int]:
    """The notebook's ``ABL_SEEDS``: ``cfg.ablation_seeds``, else the first seed."""
    return list(cfg["ablation_seeds"] or cfg["seeds"][:1])


def _dat_pair(cfg, seed, ds, **over):
    """The notebook's ``get("dat", PAIR, seed, **over)`` and its evaluation on both datasets:
    ``({dataset: mIoU}, meta)``."""
    from ..config import Config
    from ..fit import fit
    from ..methods.cdcl import evaluate_cdcl

    pair = list(cfg["datasets"])[:2]
    fitted = fit("cdcl", Config({**cfg, **over}), seed, ds, kind="dat", names=pair)
    model, meta = fitted.model, fitted.meta
    return {n: r.miou for n, r in evaluate_cdcl(model, "dat", pair, ds, cfg).items()}, meta


def roughness(df):
    """The notebook's loss-curve roughness: mean |Δloss| between successive logged points, per
    seed and dataset, then the mean (lower is smoother)."""
    return df.sort_values("iter").groupby(["seed", "dataset"])["loss"].apply(lambda s: s.diff().abs().mean()).mean()


def loss_curves(meta, names, seed):
    """The training loss per dataset from a DAT model's history (the notebook's ``curves`` rows)."""
    import pandas as pd

    return pd.DataFrame([{"seed": seed, "iter": rec["iter"], "dataset": n, "loss": rec[f"seg_{n}"]}
                         for rec in meta["history"]["train"] for n in names])


# --- cdcl/interval ----------------------------------------------------------------------------

def interval_cell(t: int) -> Cell:
    """DAT + DAB on the first two datasets with interval ``t`` (``interval=t``, cached)."""
    def run(cfg, seed, ds):
        return _row(_dat_pair(cfg, seed, ds, interval=int(t))[0])
    return Cell(f"t={t}", run)


def c4_effects(table):
    """C4: the first interval of the run (the config's ``intervals[0]``, t = 1) − every other t,
    paired by seed on the mean mIoU over both datasets (other t in sorted order, as the notebook)."""
    ref = str(table["cell"].iloc[0])
    return {f"{ref} − {v}": paired(table, ref, v) for v in sorted(set(table["cell"])) if v != ref}


C4 = Claim("C4", "Interval t = 1 is the best interval", "ablation over t: t = 1 best", c4_effects)

INTERVAL = register(Experiment(
    id="cdcl/interval", paper=PAPER, notebook="04_cdcl", in_notebook=extended, method="cdcl",
    reference="the interval-t ablation (DAT + DAB on the first two datasets, t = 1, 2, 4)",
    cells=tuple(interval_cell(t) for t in INTERVALS), claims=(C4,), data=data, seeds=ablation_seeds,
    grid=lambda cfg: tuple(interval_cell(int(t)) for t in cfg["intervals"])))


# --- cdcl/update_rule -------------------------------------------------------------------------

def update_cell(mode: str) -> Cell:
    """DAT + DAB on the first two datasets, one summed step (``"sum"``: the main recipe) or one step
    per dataset (``"alternate"``), with its loss-curve roughness."""
    def run(cfg, seed, ds):
        per, meta = _dat_pair(cfg, seed, ds, **({} if mode == "sum" else {"dat_mode": "alternate"}))
        return {**_row(per), ROUGH: float(roughness(loss_curves(meta, list(per), seed)))}
    return Cell(mode, run)


def c5_effects(table):
    """C5: loss roughness of "alternate" − of "sum", paired by seed (> 0: the summed loss is smoother)."""
    return {"roughness alternate − sum": paired(table, "alternate", "sum", ROUGH)}


def c5b_effects(table):
    """C5b: mean mIoU over both datasets, "sum" − "alternate", paired by seed."""
    return {"mIoU sum − alternate": paired(table, "sum", "alternate")}


C5 = Claim("C5", "One step on the summed loss gives a smoother (more stable) loss curve than one step per dataset",
           "Sec. 3.3: summed-loss alternation is the stable choice", c5_effects)
C5b = Claim("C5b", "One step on the summed loss trains at least as well as one step per dataset",
            "Sec. 3.3 (implied by the choice of DAT)", c5b_effects)

UPDATE_RULE = register(Experiment(
    id="cdcl/update_rule", paper=PAPER, notebook="04_cdcl", in_notebook=extended, method="cdcl",
    reference="summed-loss step (DAT) vs one step per dataset, on the first two datasets (Sec. 3.3)",
    cells=(update_cell("sum"), update_cell("alternate")), claims=(C5, C5b), data=data, seeds=ablation_seeds))
