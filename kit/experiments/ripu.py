"""RIPU's experiments (Xie et al., CVPR 2022), as reproduced by ``notebooks/03_ripu.ipynb``."""
from __future__ import annotations

from ..config import variant
from . import Cell, Claim, Experiment, paired, register

PAPER = "RIPU (Xie et al., CVPR 2022)"
ACQUISITIONS = ("ripu", "impurity", "uncertainty", "random")   #: kit.active.ACQUISITIONS, in its order


def data(cfg):
    from ..data import make_da_datasets

    return make_da_datasets(cfg)


def baseline(kind: str) -> Cell:
    """The cached source-only model or target oracle, evaluated as RIPU's models are (flip
    averaging and ``eval_items`` as the config says)."""
    def run(cfg, seed, ds):
        from ..evaluation import evaluate
        from ..fit import fit
        from ..methods.supervised import baseline_config

        model = fit(kind, baseline_config(cfg), seed, ds).model
        val = ds["target_val"]
        return {"miou": evaluate(model, val, val.num_classes, cfg.eval_batch_size, amp=cfg.amp,
                                 flip=cfg.flip_eval, max_items=cfg.eval_items).miou}
    return Cell("source-only" if kind == "source_only" else "oracle", run)


def active_run(name: str, paper: float | None = None, **changes) -> Cell:
    """One RIPU training run with ``changes`` to the config (acquisition, mode, budget, ...)."""
    def run(cfg, seed, ds):
        from ..fit import fit

        meta = fit("ripu", variant(cfg, "ripu", **changes), seed, ds).meta
        return {"miou": meta["miou"], "labeled_%": 100 * meta["labeled_fraction"]}
    return Cell(name, run, paper)


def c1_effects(table):
    """C1: RI×PU − each single-term or random acquisition, paired by seed."""
    return {f"RI×PU − {a}": paired(table, "ripu", a) for a in ACQUISITIONS if a != "ripu"}


C1 = Claim("C1", "At equal budget, RI x PU beats random regions, uncertainty only and impurity only (RA)",
           "Table 4: RA 2.2% RIPU above RAND, ENT, and the single terms", c1_effects)

TABLE4 = register(Experiment(
    id="ripu/table4", paper=PAPER, notebook="03_ripu", method="ripu",
    reference="Table 4 (acquisition functions, region-based annotation at 2.2%)",
    cells=(baseline("source_only"),
           *(active_run(a, 69.6 if a == "ripu" else None, acquisition=a, mode="region") for a in ACQUISITIONS),
           baseline("oracle")),
    claims=(C1,), data=data))
