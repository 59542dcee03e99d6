"""The baselines every paper is measured against (``notebooks/00_introduction.ipynb``): the
source-only model and the target oracle of the toy world (or of GTA5 -> Cityscapes at the
paper profile): the first and last rows of AdaptSegNet's GTA5 -> Cityscapes table."""
from __future__ import annotations

from ..results import effect
from . import Cell, Claim, Experiment, by_cell, register

PAPER = "AdaptSegNet (Tsai et al., CVPR 2018)"


def data(cfg):
    from ..data import make_da_datasets

    return make_da_datasets(cfg)


def baseline(kind: str, name: str, where: str, paper: float | None) -> Cell:
    """The cached ``kind`` model evaluated on ``where``'s val split, as 00 evaluates it."""
    def run(cfg, seed, ds):
        from ..evaluation import evaluate
        from ..fit import fit

        val = ds[f"{where}_val"]
        if val is None:   # e.g. GTA5 has no val split: the claims that need this cell are not run
            return {"miou": float("nan")}
        model = fit(kind, cfg, seed, ds).model
        return {"miou": evaluate(model, val, batch_size=cfg.eval_batch_size, flip=cfg.flip_eval, amp=cfg.amp).miou}
    return Cell(name, run, paper)


def c1_effects(table):
    """C1: source-only reaches at most 60% of the oracle's target mIoU (paired by seed)."""
    return {"0.6 × oracle − source-only (mIoU)": effect(0.6 * by_cell(table, "target oracle"),
                                                       paired_with=by_cell(table, "source-only"))}


def c2_effects(table):
    """C2: the source model does well on its own domain (15 mIoU above its target score)."""
    if by_cell(table, "source-only (source val)").isna().any():
        raise ValueError("no source val split: C2 needs the source model's score on its own domain")
    return {"source val − target val − 15 (mIoU)": effect(by_cell(table, "source-only (source val)") - 15,
                                                         paired_with=by_cell(table, "source-only"))}


C1 = Claim("C1", "Source-only falls well below the target oracle (at most 60% of its mIoU)",
           "GTA5→CS: 36.6 vs 65.1 (56%)", c1_effects)
C2 = Claim("C2", "The gap is a domain shift, not a capacity limit: the source model does well on its own domain",
           "premise of the DA papers (no number)", c2_effects)

BASELINES = register(Experiment(
    id="intro/baselines", paper=PAPER, notebook="00_introduction", method="intro",
    reference="AdaptSegNet's GTA5 -> Cityscapes table: the source-only and target oracle rows",
    cells=(baseline("source_only", "source-only", "target", 36.6),
           baseline("oracle", "target oracle", "target", 65.1),
           baseline("source_only", "source-only (source val)", "source", None)),
    claims=(C1, C2), data=data))
