"""AdaptSegNet's experiments (Tsai et al., CVPR 2018), as reproduced by ``notebooks/01_adaptsegnet.ipynb``.

``adaptseg/main``: the main GTA5 → Cityscapes ResNet-101 table (source-only, feature-level,
single-level, multi-level, oracle), with the toy world's λ_adv = 0 control and the official
code's LS-GAN row; claims C1, C2 and C4. ``adaptseg/lambda_sweep``: the sensitivity figure
(λ_adv sweep, output vs feature space) on the sweep seeds; claim C3 over each space's range.
``adaptseg/lambda_wide``: C3's diagnosis, the same sweep continued over ``cfg.lambda_wide``
(empty at quick, so there its claim is recorded as not run).

    >>> from kit import experiments
    >>> [c.name for c in experiments.get("adaptseg/main").cells][:3]
    ['source-only', 'λ_adv = 0 (control)', 'feature-level']
    >>> import pandas as pd
    >>> t = pd.DataFrame({"cell": ["single-level", "multi-level"], "seed": [0, 0], "miou": [40.0, 41.5]})
    >>> experiments.get("adaptseg/main").claim("C2").effects(t)["multi − single"].mean
    1.5
"""
from __future__ import annotations

from ..config import variant
from . import Cell, Claim, Experiment, paired, register

PAPER = "AdaptSegNet (Tsai et al., CVPR 2018)"
CONTROL = "λ_adv = 0 (control)"
SPACES = {"output space (single-level)": "single", "feature space": "feature"}   #: the sweep's two spaces


def data(cfg):
    from ..data import make_da_datasets

    return make_da_datasets(cfg)


def baseline(kind: str, paper: float) -> Cell:
    """The cached source-only model or target oracle, evaluated as the notebook does (whole
    target val split, no flip)."""
    def run(cfg, seed, ds):
        from ..evaluation import evaluate
        from ..fit import fit
        from ..methods.supervised import baseline_config

        model = fit(kind, baseline_config(cfg), seed, ds).model
        return {"miou": evaluate(model, ds["target_val"], batch_size=cfg.eval_batch_size, amp=cfg.amp).miou}
    return Cell("source-only" if kind == "source_only" else "target oracle", run, paper)


def adapted(name: str, paper: float | None = None, **changes) -> Cell:
    """One adapted model (``changes`` to the config): its final evaluation on the whole target val split."""
    def run(cfg, seed, ds):
        from ..fit import fit

        meta = fit("adaptseg", variant(cfg, "adaptseg", **changes), seed, ds).meta
        return {"miou": meta["target_eval"]["miou"]}
    return Cell(name, run, paper)


def sweep_space(name: str, level: str, wide: bool = False) -> Cell:
    """One space of the sweep: ``miou`` is the mean over ``cfg.lambda_sweep`` (and, with
    ``wide``, ``cfg.lambda_wide`` after it), ``range`` max − min, ``wide`` how many values
    beyond the sweep there were."""
    def run(cfg, seed, ds):
        from ..fit import fit

        lams = list(cfg.lambda_sweep) + (list(cfg.lambda_wide) if wide else [])
        v = [fit("adaptseg", variant(cfg, "adaptseg", level=level, lambda_adv=lam), seed, ds).meta["target_eval"]["miou"]
             for lam in lams]
        return {"miou": sum(v) / len(v), "range": max(v) - min(v), "wide": len(lams) - len(cfg.lambda_sweep)}
    return Cell(name, run)


def sweep_seeds(cfg) -> list[int]:
    """The notebook's sweep seeds: ``cfg.sweep_seeds``, else the first seed."""
    return list(cfg.sweep_seeds) if cfg.sweep_seeds else list(cfg.seeds[:1])


def c1_effects(table):
    return {f"{m} − source-only": paired(table, m, "source-only") for m in ("single-level", "multi-level")}


def c2_effects(table):
    return {"multi − single": paired(table, "multi-level", "single-level")}


def c3_effects(table):
    return {"range over the sweep, feature − output": paired(table, "feature space", "output space (single-level)",
                                                              "range")}


def c3_wide_effects(table):
    if not (table["wide"] > 0).all():
        raise ValueError("no λ_adv beyond the sweep at this profile (lambda_wide is empty; the full profile has it)")
    return {"range over the widened sweep, feature − output": c3_effects(table)["range over the sweep, feature − output"]}


def c4_effects(table):
    return {"single-level − control (λ_adv = 0, same schedule)": paired(table, "single-level", CONTROL)}


C1 = Claim("C1", "Output-space adaptation beats the source-only model",
           "GTA5→CS: 41.4 (single) and 42.4 (multi) vs 36.6", c1_effects)
C2 = Claim("C2", "Multi-level adaptation beats single-level adaptation", "GTA5→CS: 42.4 vs 41.4", c2_effects)
C3 = Claim("C3", "Output-space adaptation is less sensitive to λ_adv than feature-space adaptation",
           "sensitivity figure, λ_adv ∈ {0.0005 … 0.004}: feature adaptation degrades as λ_adv grows", c3_effects)
C4 = Claim("C4", "(toy-world check) The gain comes from the adversarial term, not from the fine-tuning alone",
           "not tested in the paper (its baseline is trained once, not fine-tuned further)", c4_effects)

MAIN = register(Experiment(
    id="adaptseg/main", paper=PAPER, notebook="01_adaptsegnet", method="adaptseg",
    reference="main table (GTA5 → Cityscapes, ResNet-101 rows), with the oracle, a λ_adv = 0 control and LS-GAN",
    cells=(baseline("source_only", 36.6),
           adapted(CONTROL, None, level="single", lambda_adv=0.0),
           adapted("feature-level", 39.3, level="feature"),
           adapted("single-level", 41.4, level="single"),
           adapted("multi-level", 42.4, level="multi"),
           baseline("oracle", 65.1),
           adapted("single-level LS-GAN", 44.1, level="single", gan="lsgan")),
    claims=(C1, C2, C4), data=data))

LAMBDA_SWEEP = register(Experiment(
    id="adaptseg/lambda_sweep", paper=PAPER, notebook="01_adaptsegnet", method="adaptseg",
    reference="sensitivity figure (λ_adv sweep: single-level output space vs feature space)",
    cells=tuple(sweep_space(name, level) for name, level in SPACES.items()),
    claims=(C3,), data=data, seeds=sweep_seeds))

C3_WIDE = Claim("C3", "Output-space adaptation is less sensitive to λ_adv than feature-space adaptation, over a "
                "sweep continued to 8x its largest weight (a diagnosis: where does each space break down?)",
                C3.paper, c3_wide_effects)

LAMBDA_WIDE = register(Experiment(
    id="adaptseg/lambda_wide", paper=PAPER, notebook="01_adaptsegnet", method="adaptseg",
    in_notebook=lambda cfg: bool(cfg["lambda_wide"]),   # empty at quick: the notebook skips it
    reference="C3's diagnosis: the sensitivity sweep continued beyond its largest λ_adv (lambda_wide)",
    cells=tuple(sweep_space(name, level, wide=True) for name, level in SPACES.items()),
    claims=(C3_WIDE,), data=data, seeds=sweep_seeds, decides=False))
