"""DAS3's other tables (Wang et al., arXiv 2106.11653, 2021), as reproduced by
``notebooks/02_das3.ipynb`` beside its stage-wise table (:mod:`kit.experiments.das3`):

* ``das3/ablations`` -- section 4: one stage's component changed, compared after that stage
  with the same stage's default; claims C2 (negative pseudo-labels), C3 (class-wise
  thresholds, on the small classes' IoU), C4 (focal entropic vs plain entropy) and C5
  (diversity loss: class-distribution KL and mIoU).
* ``das3/sweeps`` -- section 5, the parameter plots: γ, α (stage 1), negative threshold,
  top-K (stage 2), easy ratio (stage 3), one at a time, on the sweep seeds. The rows follow
  the config as in the notebook (``extended`` off: γ only; smoke: each first value), so the
  run's cells are ``grid(cfg)``; no claim is decided on them.
* ``das3/stage3_variants`` -- section 4b: the kit's stage 3 and the authors' later recipe
  (ATP) from the same stage-2 model; claim C6. The notebook runs it with ``extended`` on;
  ``kit reproduce`` runs it at any profile.

Every cell is the notebook's ``chain(seed, stage, **changes)`` (:func:`kit.experiments.das3._chain`),
so it loads the notebook's cached models.

    >>> from kit import experiments
    >>> [c.name for c in experiments.get("das3/sweeps").grid(experiments.get("das3/sweeps").config("smoke"))]
    ['gamma = 0', 'alpha = 0', 'neg_threshold = 0.01', 'top_k = 0.2', 'easy_ratio = 0.1']
"""
from __future__ import annotations

from . import Cell, Claim, Experiment, extended, paired, register
from .das3 import PAPER, _chain, data

KL = "KL(true || predicted)"
DEFAULT_S1, PLAIN, NO_DIV = "focal entropic + diversity (default)", "plain entropy + diversity", "focal entropic, no diversity"
DETACHED = "focal factor as a weight (detached)"
POS_NEG, POS_ONLY = "positive + negative (default)", "positive only"
CLASSWISE, GLOBAL = "class-wise thresholds (default)", "one global threshold"
ABLATIONS = (  # the notebook's ABLATIONS: (name, stage, config changes)
    (DEFAULT_S1, 1, {}), (PLAIN, 1, {"stage1_loss": "entropy"}), (NO_DIV, 1, {"div_weight": 0.0}),
    (DETACHED, 1, {"focal_grad": "detached"}), (POS_NEG, 2, {}), (POS_ONLY, 2, {"neg_weight": 0.0}),
    (CLASSWISE, 2, {}), (GLOBAL, 2, {"threshold_mode": "global"}),
)
SWEEP = {  # the notebook's SWEEP: parameter -> (stage, values)
    "gamma": (1, (0.0, 1.0, 3.0, 5.0, 8.0)), "alpha": (1, (0.0, 1.0, 3.0, 6.0)),
    "neg_threshold": (2, (0.01, 0.05, 0.2)), "top_k": (2, (0.2, 0.5, 0.8)), "easy_ratio": (3, (0.1, 0.3, 0.6)),
}
STAGE2 = "stage 2"
VARIANTS = {"kit": "stage 3, kit (frozen teacher, thresholds)", "atp": "stage 3, ATP (EMA teacher, argmax, DACS weight)"}


def sweep_seeds(cfg) -> list[int]:
    """The notebook's ``sweep_seeds``: ``cfg.sweep_seeds``, else the first seed."""
    return list(cfg["sweep_seeds"] or cfg["seeds"][:1])


def kl_true_predicted(true_share, pred_share, classes) -> float:
    """KL(true ‖ predicted) of two class distributions (``{class: share}``, e.g. an ``eval_record``'s
    ``true_share`` and ``pred_share``); the notebook's class-distribution figure uses it too."""
    import numpy as np

    t = np.array([true_share[c] for c in classes]) + 1e-8
    q = np.array([pred_share[c] for c in classes]) + 1e-8
    return float(np.sum(t * np.log(t / q)))


def small_classes(classes) -> list[str]:
    """The notebook's ``small``: the toy world's small classes among ``classes``, in that order."""
    from ..data.world_spec import SMALL_CLASSES

    return [c for c in SMALL_CLASSES if c in classes]


# --- das3/ablations ----------------------------------------------------------------------------

def ablation(name: str, s: int, over: dict) -> Cell:
    """The model after stage ``s`` with config changes ``over``; the notebook's ``record`` columns
    (per-class IoU, predicted / true pixel share) and the KL of section 4. The ``detached`` row
    runs on the sweep seeds only (NaN on the others), as in the notebook."""
    def run(cfg, seed, ds):
        if name == DETACHED and seed not in sweep_seeds(cfg):
            return {"miou": float("nan")}
        ev, classes = _chain(cfg, seed, ds, s, **over)[1]["eval"], list(ds["target_val"].classes)
        return {"miou": ev["miou"], "stage": s, **{f"IoU {c}": v for c, v in ev["iou"].items()},
                **{f"share {c}": ev["pred_share"][c] for c in classes},
                **{f"true {c}": ev["true_share"][c] for c in classes}, KL: kl_true_predicted(ev["true_share"], ev["pred_share"], classes)}
    return Cell(name, run)


def small_iou(table, cell: str):
    """Mean IoU over the small classes (the table's ``IoU <class>`` columns) of ``cell``, per seed."""
    cols = [f"IoU {c}" for c in small_classes([c[4:] for c in table.columns if c.startswith("IoU ")])]
    sel = table[table["cell"] == cell]
    return sel.assign(_small=sel[cols].astype(float).mean(axis=1)).groupby("seed")["_small"].mean()


def c3_effects(table):
    """C3: small-class IoU, class-wise − global thresholds, paired by seed (after stage 2)."""
    from ..results import effect

    small = small_classes([c[4:] for c in table.columns if c.startswith("IoU ")])
    return {f"small-class IoU ({', '.join(small)}), class-wise − global":
            effect(small_iou(table, CLASSWISE), paired_with=small_iou(table, GLOBAL))}


C2 = Claim("C2", "Negative pseudo-labels add to positive ones", "paper ablation (stage 2: positive + negative > positive)",
           lambda t: {"positive + negative − positive only, after stage 2": paired(t, POS_NEG, POS_ONLY)})
C3 = Claim("C3", "Class-wise thresholds help rare classes over one global threshold",
           "paper ablation (class-wise > global; rare classes keep labels)", c3_effects)
C4 = Claim("C4", "The focal entropic loss beats plain entropy minimization", "paper ablation (stage 1)",
           lambda t: {"focal − plain entropy, after stage 1": paired(t, DEFAULT_S1, PLAIN)})
C5 = Claim("C5", "The diversity loss prevents collapse onto a few classes", "paper: class-distribution plot",
           lambda t: {"KL(true || predicted) without − with": paired(t, NO_DIV, DEFAULT_S1, value=KL),
                      "mIoU with − without": paired(t, DEFAULT_S1, NO_DIV)})

ABLATION_TABLE = register(Experiment(
    id="das3/ablations", paper=PAPER, notebook="02_das3", method="das3",
    reference="Ablations (section 4): focal entropic vs plain entropy, the focal factor's reading, the diversity "
              "loss (stage 1); negative pseudo-labels, class-wise vs global thresholds (stage 2)",
    cells=tuple(ablation(*a) for a in ABLATIONS), claims=(C2, C3, C4, C5), data=data))


# --- das3/sweeps ------------------------------------------------------------------------------

def sweep_cell(param: str, s: int, value: float) -> Cell:
    """``param = value`` after stage ``s`` (γ = 0 is the plain-entropy run: the same loss, one run fewer)."""
    over = {"stage1_loss": "entropy"} if param == "gamma" and value == 0.0 else {param: value}

    def run(cfg, seed, ds):
        import numpy as np

        ev = _chain(cfg, seed, ds, s, **over)[1]["eval"]
        small = small_classes(list(ds["target_val"].classes))
        return {"miou": ev["miou"], "parameter": param, "value": value, "stage": s,
                "small-class IoU": float(np.nanmean([ev["iou"][c] for c in small if ev["iou"][c] is not None]))}
    return Cell(f"{param} = {value:g}", run)


def sweep_grid(cfg) -> tuple[Cell, ...]:
    """The notebook's sweep rows: every parameter with ``extended`` (else γ only), each first value at smoke."""
    params = SWEEP if cfg["extended"] else {"gamma": SWEEP["gamma"]}
    return tuple(sweep_cell(p, s, v) for p, (s, values) in params.items()
                 for v in (values[:1] if cfg["profile"] == "smoke" else values))


SWEEPS = register(Experiment(
    id="das3/sweeps", paper=PAPER, notebook="02_das3", method="das3",
    reference="Parameter plots (section 5): gamma, alpha (stage 1), neg_threshold, top_k (stage 2), "
              "easy_ratio (stage 3), one at a time on the sweep seeds",
    cells=tuple(sweep_cell(p, s, v) for p, (s, values) in SWEEP.items() for v in values),
    data=data, seeds=sweep_seeds, grid=sweep_grid))


# --- das3/stage3_variants ---------------------------------------------------------------------

def variant(name: str, **over) -> Cell:
    """After stage 3 with ``stage3`` set (the kit's or ATP's), or the stage-2 model they both start from."""
    def run(cfg, seed, ds):
        if not over:
            return {"miou": _chain(cfg, seed, ds, 2)[1]["eval"]["miou"]}
        meta = _chain(cfg, seed, ds, 3, **over)[1]
        last = meta["history"]["train"][-1] if meta["history"]["train"] else {}
        return {"miou": meta["eval"]["miou"], "hard_weight": last.get("hard_weight")}
    return Cell(name, run, {STAGE2: 62.4, VARIANTS["atp"]: 64.0}.get(name))


C6 = Claim("C6", "Stage 3 as in the authors' later code (EMA teacher, argmax labels, DACS weight) improves on stage 2",
           "ATP GTA5→CS: 62.4 → 64.0; SYNTHIA→CS: 64.9 → 66.6",
           lambda t: {"ATP stage 3 − stage 2": paired(t, VARIANTS["atp"], STAGE2)})

STAGE3_VARIANTS = register(Experiment(
    id="das3/stage3_variants", paper=PAPER, notebook="02_das3", in_notebook=extended, method="das3",
    reference="Stage 3 variants (section 4b): the kit's reading of v1 vs the authors' later code (ATP), "
              "from the same stage-2 model; paper numbers: ATP GTA5→Cityscapes stage 2 and stage 3",
    cells=(variant(STAGE2), *(variant(n, stage3=v) for v, n in VARIANTS.items())), claims=(C6,), data=data))
