"""DAS3's experiments (Wang et al., arXiv 2106.11653, 2021), as reproduced by
``notebooks/02_das3.ipynb``: the stage-wise table and its claims C1 (each stage improves on
the previous one), C1a (stage 1 beats re-estimating BN statistics alone) and C1b (stage 3
beats a stage 2 run as long as stages 2 and 3).

Every stage starts from the cached model of the previous one (``fit("das3", cfg, seed, ds, stage=s)``),
so a cell runs the chain up to its stage and the cache makes the earlier stages free.

    >>> from kit import experiments
    >>> [c.name for c in experiments.get("das3/stagewise").cells][:3]
    ['source model', 'BN statistics only (reference)', '+ alignment (stage 1)']
"""
from __future__ import annotations

from itertools import pairwise

from . import Cell, Claim, Experiment, paired, register

PAPER = "DAS3 (Wang et al., arXiv 2106.11653, 2021)"
STAGES = ("+ alignment (stage 1)", "+ self-training (stage 2)", "+ propagation (stage 3)")
BN = "BN statistics only (reference)"
CONTROL = "stage 2 as long as stages 2+3 (control)"


def data(cfg):
    from ..data import make_da_datasets

    return make_da_datasets(cfg)


def _chain(cfg, seed, ds, upto, **over):
    """The notebook's ``chain``: the source model (``upto=0``) or the model after stages 1..upto
    with config fields ``over``; ``(model, meta)``."""
    from ..fit import fit
    from ..methods import das3

    c = dict(cfg, **over)
    p = das3.source_parent(c) if upto == 0 else None
    f = fit(p.method, p.cfg, seed, ds, **p.spec) if p is not None else fit("das3", c, seed, ds, stage=upto)
    return f.model, f.meta


def source(cfg, seed, ds):
    from ..methods import das3

    return {"miou": das3.eval_record(_chain(cfg, seed, ds, 0)[0], ds["target_val"], cfg)["miou"]}


def bn_only(cfg, seed, ds):
    """AdaBN: the source model with its BN statistics re-estimated on 256 target images (NaN where
    the notebook has no such row: frozen BN, or a network without BatchNorm)."""
    import torch

    from ..methods import das3
    from ..models.utils import reestimate_bn

    if cfg["frozen_bn"]:
        return {"miou": float("nan")}
    model = _chain(cfg, seed, ds, 0)[0]
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return {"miou": float("nan")}
    bn = reestimate_bn(model, ds["target_train"], n_images=256, batch_size=cfg["eval_batch_size"])
    return {"miou": das3.eval_record(bn, ds["target_val"], cfg)["miou"]}


def stage(s: int, paper: float | None) -> Cell:
    return Cell(STAGES[s - 1], lambda cfg, seed, ds: {"miou": _chain(cfg, seed, ds, s)[1]["eval"]["miou"]}, paper)


def control(cfg, seed, ds):
    """Stage 2 run for ``stage2_iters + stage3_iters``, on the sweep seeds only (NaN on the others)."""
    if seed not in list(cfg["sweep_seeds"] or cfg["seeds"][:1]):
        return {"miou": float("nan")}
    over = {"stage2_iters": cfg["stage2_iters"] + cfg["stage3_iters"]}
    return {"miou": _chain(cfg, seed, ds, 2, **over)[1]["eval"]["miou"]}


def oracle(cfg, seed, ds):
    """The target oracle of the toy world (the introduction's cached model), the table's last row
    as in the notebook (NaN on real data or from a given source checkpoint, where it has none)."""
    from ..fit import fit
    from ..methods import das3

    if cfg["data_root"] is not None or cfg["source_checkpoint"]:
        return {"miou": float("nan")}
    model = fit("oracle", cfg, seed, ds).model
    return {"miou": das3.eval_record(model, ds["target_val"], cfg)["miou"]}


def c1_effects(table):
    """C1: each stage minus the previous one (the source model before stage 1), paired by seed."""
    chain = ("source model", *STAGES)
    return {b.split(" (")[0]: paired(table, b, a) for a, b in pairwise(chain)}


C1 = Claim("C1", "Each stage improves on the previous one",
           "ATP GTA5→CS: 54.0 → 62.4 → 64.0; SYNTHIA→CS: 56.5 → 64.9 → 66.6", c1_effects)
C1A = Claim("C1a", "Stage 1's losses add to what re-estimating BN statistics alone gives (toy-world check, not in the paper)",
            "not reported (the paper does not separate the two)",
            lambda t: {"stage 1 − BN statistics only": paired(t, STAGES[0], BN, missing_ok=True)})
C1B = Claim("C1b", "Stage 3 adds more than running stage 2 for as many iterations (toy-world check, not in the paper)",
            "not reported", lambda t: {"stage 3 − longer stage 2": paired(t, STAGES[2], CONTROL, missing_ok=True)})


STAGEWISE = register(Experiment(
    id="das3/stagewise", paper=PAPER, notebook="02_das3", method="das3",
    reference="Stage-wise table (source → + alignment → + self-training → + propagation; paper card: "
              "ATP's stage-wise table, GTA5→Cityscapes numbers)",
    cells=(Cell("source model", source), Cell(BN, bn_only), stage(1, 54.0), stage(2, 62.4),
           Cell(CONTROL, control), stage(3, 64.0), Cell("target oracle", oracle)),
    claims=(C1, C1A, C1B), data=data))
