"""CDCL's experiments (Wang et al., arXiv 2103.11351 / AAAI 2022), as reproduced by
``notebooks/04_cdcl.ipynb``: the main table (single-dataset, fine-tuning, label remapping,
DAT + DAB on every dataset of ``cfg.datasets``, three toy cities by default) and its claims
C2 (DAT beats single-dataset training) and C3 (DAT beats fine-tuning and label remapping).

CDCL scores a model on *each* dataset, so one cell is one method (one row of the table per
method and seed, as in the paper) and its per-dataset mIoUs go in extra columns
``"miou:<dataset>"`` (:data:`PER`); ``miou`` is their mean (what ``summary`` shows). The
claims pair two cells by seed on each dataset's column, and take the datasets from the
columns, so they work for any ``datasets`` (two or three, toy or real). Cells stay the same
four names whatever the datasets, which keeps the cells static and each claim one line.
This is the notebook's last setting, the one its C2 and C3 are decided on (all of
``datasets``); its two-dataset table (``extended``) is not registered.

    >>> t = registry_table(__import__("pandas").DataFrame(
    ...     [{"method": "DAT + DAB", "dataset": "a", "seed": 0, "miou": 30.0},
    ...      {"method": "DAT + DAB", "dataset": "b", "seed": 0, "miou": 20.0}]))
    >>> t.to_dict("records")
    [{'cell': 'DAT + DAB', 'seed': 0, 'miou': 25.0, 'miou:a': 30.0, 'miou:b': 20.0}]
    >>> datasets_of(t)
    ['a', 'b']
"""
from __future__ import annotations

from . import Cell, Claim, Experiment, paired, register

PAPER = "CDCL (Wang et al., AAAI 2022)"
PER = "miou:"   #: prefix of the per-dataset mIoU columns
METHODS = ("single-dataset", "fine-tuning", "label remapping", "DAT + DAB")   #: the notebook's method names


def data(cfg):
    from ..methods.cdcl import make_cdcl_datasets

    if not 2 <= len(cfg["datasets"]) <= 3:
        raise ValueError(f"datasets must name two or three datasets, got {list(cfg['datasets'])}")
    return make_cdcl_datasets(cfg)


def _row(per) -> dict:
    """``{dataset: mIoU}`` -> ``miou`` (the mean over datasets) and one column per dataset."""
    per = {n: float(v) for n, v in per.items()}
    return {"miou": sum(per.values()) / len(per), **{PER + n: v for n, v in per.items()}}


def longer(cfg, mult: int):
    """``cfg`` with every model trained ``mult`` times longer: ``iters`` and ``ft_iters`` (the
    notebook's length diagnosis, section 8b)."""
    from ..config import Config

    if mult == 1:
        return cfg
    return Config({**cfg, "iters": mult * int(cfg["iters"]), "ft_iters": mult * int(cfg["ft_iters"] or cfg["iters"])})


def method_cell(name: str, kind: str, mult: int = 1) -> Cell:
    """The notebook's models of one method, seed ``seed``, evaluated with ``evaluate_cdcl``:
    single / fine-tuned models, one per dataset (fine-tuned from the second dataset for the
    first, from the first for the others); label remapping / DAT, one model on all datasets.
    ``mult``: every model trained that many times longer (:func:`longer`)."""
    def run(cfg, seed, ds):
        from ..fit import fit
        from ..methods.cdcl import evaluate_cdcl

        cfg = longer(cfg, mult)
        names = list(cfg["datasets"])
        if kind in ("remap", "dat"):
            model = fit("cdcl", cfg, seed, ds, kind=kind, names=names).model
            return _row({n: r.miou for n, r in evaluate_cdcl(model, kind, names, ds, cfg).items()})
        res = {}
        for n in names:
            init = (names[1] if n == names[0] else names[0]) if kind == "finetune" else None
            model = fit("cdcl", cfg, seed, ds, kind=kind, names=[n], init=init).model
            res[n] = evaluate_cdcl(model, kind, [n], ds, cfg)[n].miou
        return _row(res)
    return Cell(name, run)


def datasets_of(table) -> list[str]:
    """The datasets of a result table: its ``miou:<dataset>`` columns, in order."""
    names = [str(c)[len(PER):] for c in table.columns if str(c).startswith(PER)]
    if not names:
        raise ValueError(f"the table has no per-dataset columns '{PER}<dataset>'; its columns: {list(table.columns)}")
    return names


def registry_table(frame):
    """The registry's table from the notebook's records of one setting (columns ``method``,
    ``dataset``, ``seed``, ``miou``): one row per (method, seed), as the cells return them."""
    import pandas as pd

    return pd.DataFrame([{"cell": m, "seed": int(s), **_row(dict(zip(g["dataset"], g["miou"])))}
                         for (m, s), g in frame.groupby(["method", "seed"], sort=False)])


def c2_effects(table):
    """C2: DAT + DAB − single-dataset on each dataset, paired by seed."""
    return {f"{n}: DAT − single": paired(table, "DAT + DAB", "single-dataset", PER + n) for n in datasets_of(table)}


def c3_effects(table):
    """C3: DAT + DAB − fine-tuning, then − label remapping, on each dataset, paired by seed."""
    return {f"{n}: DAT − {b}": paired(table, "DAT + DAB", b, PER + n)
            for b in ("fine-tuning", "label remapping") for n in datasets_of(table)}


C2 = Claim("C2", "DAT + DAB beats single-dataset training on every dataset",
           "+5.65 / +6.57 / +5.79 mIoU on Cityscapes / BDD100K / CamVid (abstract)", c2_effects)
C3 = Claim("C3", "DAT + DAB beats fine-tuning and label remapping on every dataset",
           "main table: DAT above both baselines", c3_effects)

MAIN = register(Experiment(
    id="cdcl/main", paper=PAPER, notebook="04_cdcl", method="cdcl",
    reference="main table (single-dataset, fine-tuning, label remapping, DAT + DAB; all datasets)",
    cells=tuple(method_cell(m, k) for m, k in zip(METHODS, ("single", "finetune", "remap", "dat"))),
    claims=(C2, C3), data=data))

#: how many times longer the length diagnosis trains every model
LONG = 4

LENGTH = register(Experiment(
    id="cdcl/length", paper=PAPER, notebook="04_cdcl", method="cdcl",
    reference=f"diagnosis of C2/C3 (not in the paper): the main table with every model trained {LONG}x longer "
              "(iters and ft_iters), the notebook's section 8b",
    cells=tuple(method_cell(m, k, LONG) for m, k in zip(METHODS, ("single", "finetune", "remap", "dat"))),
    claims=(C2, C3), data=data, decides=False))
