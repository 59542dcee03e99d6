"""DDeP's other experiments, as reproduced by ``notebooks/05_ddep.ipynb`` (the label-fraction
table is ``ddep/fig1`` in :mod:`kit.experiments.ddep`):

* ``ddep/noise`` -- section 4, the noise ablations: DDeP pretrained with each σ of the sweep
  (``cfg.sweep_sigmas``), with σ sampled per example (``sigma_mode="sampled"``) and predicting the
  image (``denoise_target="image"``), each fine-tuned on ``cfg.fraction`` of the labels, on the
  notebook's ``sweep_seeds``. Claims C4 (best σ near 0.2), C5 (fixed ≥ sampled σ), C6 (noise >
  image). Each row carries the notebook's ``group`` and ``sigma`` columns and the config's
  ``default σ`` (the sweep's row at that σ is "fixed σ, predict noise"); the claims select on
  those columns, as the notebook does, never on cell names.
* ``ddep/finetune_curves`` -- section 5: the four inits at ``cfg.fraction`` (the label-fraction
  table's models), with the training cross-entropy at the last logged step and the first point
  of the validation curve (recorded on the first seed only). Claims C7 and C8.

The notebook runs section 4 only with ``extended`` on (``full``, ``smoke``); ``kit reproduce
ddep/noise`` runs it at any profile. The notebook states no paper numbers, so every ``paper`` is None.

    >>> from kit import experiments
    >>> e = experiments.get("ddep/noise")
    >>> [c.name for c in e.grid(e.config("smoke"))]
    ['σ = 0.1', 'σ = 0.2', 'sampled σ ~ U(0.05, 0.8)', 'predict image (σ = 0.2)']
"""
from __future__ import annotations

import math

from ..results import effect
from . import Cell, Claim, Experiment, extended, register
from .ddep import INIT_NAMES, PAPER, data

SIGMAS = (0.05, 0.1, 0.2, 0.4, 0.8)   #: every profile's sweep_sigmas
N = INIT_NAMES


def eval_every(cfg, fraction: float, seed: int) -> int:
    """The notebook's ``eval_every``: curves at ``cfg.fraction`` on the first seed (part of the cache key)."""
    return int(cfg.curve_every) if (float(fraction) == float(cfg.fraction) and seed == cfg.seeds[0]) else 0


# --- ddep/noise -------------------------------------------------------------------------------

def variants(cfg) -> list[tuple[dict, str, str]]:
    """``(pretraining overrides, name, group)`` of section 4, in the notebook's order."""
    out = [({"sigma": float(s)}, f"σ = {float(s):g}", "sweep") for s in cfg["sweep_sigmas"]]
    out += [({"sigma_mode": "sampled"}, f"sampled σ ~ U{tuple(cfg['sigma_range'])}", "fixed vs sampled"),
            ({"denoise_target": "image"}, f"predict image (σ = {cfg['sigma']:g})", "noise vs image")]
    return out


def noise_cell(ov: dict, name: str, group: str) -> Cell:
    """DDeP pretrained with ``ov``, fine-tuned on ``cfg.fraction``: the notebook's section-4 call
    (the default σ, fixed, predicting noise, is the label-fraction table's model: same cache key)."""
    def run(cfg, seed, ds):
        from ..fit import fit

        f0 = float(cfg.fraction)
        ov_eff = {} if ov == {"sigma": float(cfg.sigma)} else ov
        meta = fit("ddep", cfg, seed, ds, init="ddep", fraction=f0, eval_every=eval_every(cfg, f0, seed),
                   overrides=ov_eff).meta
        pmeta = fit("ddep_pretrain", cfg, seed, ds, kind="ddep", overrides=ov_eff).meta
        return {"miou": meta["miou"], "group": group, "sigma": ov.get("sigma", cfg.sigma),
                "default σ": float(cfg.sigma), "final denoising loss": pmeta["history"]["train"][-1]["denoise"]}
    return Cell(name, run)


def noise_grid(cfg) -> tuple[Cell, ...]:
    return tuple(noise_cell(*v) for v in variants(cfg))


def _by(table, group: str, sigma: float | None = None):
    """Per-seed mean mIoU of ``group`` (at ``sigma`` when given): the notebook's ``by``."""
    import numpy as np

    sel = table[table["group"] == group]
    sel = sel if sigma is None else sel[np.isclose(sel["sigma"].astype(float), sigma)]
    return sel.groupby("seed")["miou"].mean()


def _fixed(table):
    """Per-seed mIoU of the sweep at the default σ (fixed σ, predict noise)."""
    return _by(table, "sweep", sigma=float(table["default σ"].iloc[0]))


def c4_effects(table):
    """C4: per seed, the best σ in [0.1, 0.4] − the best σ outside (undecided when none is outside)."""
    sw = table[table["group"] == "sweep"].pivot_table(index="seed", columns="sigma", values="miou")
    band = [c for c in sw.columns if 0.1 <= c <= 0.4]
    rest = [c for c in sw.columns if c not in band]
    if band and rest:
        return {"best σ in [0.1, 0.4] − best σ outside": effect(sw[band].max(axis=1), paired_with=sw[rest].max(axis=1))}
    return {"(no σ outside [0.1, 0.4] swept)": effect([])}


def c5_effects(table):
    """C5: fixed (default) σ − σ sampled per example, paired by seed."""
    return {"fixed − sampled": effect(_fixed(table), paired_with=_by(table, "fixed vs sampled"))}


def c6_effects(table):
    """C6: predicting the noise − predicting the image (both at the default σ), paired by seed."""
    return {"predict noise − predict image": effect(_fixed(table), paired_with=_by(table, "noise vs image"))}


C4 = Claim("C4", "The best σ is near 0.2 (0.1 ≤ σ* ≤ 0.4)", "σ = 0.2 chosen by the paper's sweep", c4_effects)
C5 = Claim("C5", "A fixed σ is as good as or better than a per-example sampled σ", "fixed σ ≥ sampled (paper ablation)",
           c5_effects)
C6 = Claim("C6", "Predicting the noise beats predicting the image", "paper ablation", c6_effects)

NOISE = register(Experiment(
    id="ddep/noise", paper=PAPER, notebook="05_ddep", in_notebook=extended, method="ddep",
    reference="the noise-magnitude (σ sweep), fixed vs sampled σ and noise vs image ablations (notebook section 4)",
    cells=tuple(noise_cell({"sigma": s}, f"σ = {s:g}", "sweep") for s in SIGMAS)
    + (noise_cell({"sigma_mode": "sampled"}, "sampled σ ~ U(0.05, 0.8)", "fixed vs sampled"),
       noise_cell({"denoise_target": "image"}, "predict image (σ = 0.2)", "noise vs image")),
    claims=(C4, C5, C6), data=data, seeds=lambda cfg: cfg["sweep_seeds"], grid=noise_grid))


# --- ddep/finetune_curves ---------------------------------------------------------------------

def curve_columns(meta, first_seed: bool) -> dict:
    """A fine-tuning run's curve columns: the last logged training step and its CE, and (on the
    first seed, where the notebook plots the validation curve) the curve's first point."""
    train, val = meta["history"]["train"], meta["history"]["val"]
    return {"last iter": train[-1]["iter"], "final CE": train[-1]["seg"],
            "first val iter": val[0]["iter"] if first_seed else math.nan,
            "first val mIoU": val[0]["miou"] if first_seed else math.nan}


def curve_cell(init: str) -> Cell:
    """``init`` fine-tuned on ``cfg.fraction``: the label-fraction table's model (same cache key)."""
    def run(cfg, seed, ds):
        from ..fit import fit

        f0 = float(cfg.fraction)
        meta = fit("ddep", cfg, seed, ds, init=init, fraction=f0, eval_every=eval_every(cfg, f0, seed)).meta
        return {"miou": meta["miou"], "init": N[init], **curve_columns(meta, seed == cfg.seeds[0])}
    return Cell(N[init], run)


def c7_effects(table):
    """C7: the training CE at the last logged step, random − DDeP and random − DeP, paired by seed."""
    last = table["last iter"].max()
    ce = table[table["last iter"] == last].pivot_table(index="seed", columns="init", values="final CE")
    return {f"training CE after {int(last)} steps, random − {N[k]}": effect(ce[N["random"]], paired_with=ce[N[k]])
            for k in ("ddep", "dep")}


def c8_effects(table):
    """C8: the first point of the validation curve (first seed only: one sample), DDeP − random."""
    sel = table.dropna(subset=["first val mIoU"])
    first = sel.groupby("init")["first val mIoU"].first()
    it = int(sel["first val iter"].min()) if len(sel) else 0
    return {f"val mIoU after {it} steps, DDeP − random": effect([first.get(N["ddep"], math.nan)],
                                                                paired_with=[first.get(N["random"], math.nan)])}


C7 = Claim("C7", "Denoising pretraining converges faster in fine-tuning (training loss)",
           "faster convergence from denoising pretraining", c7_effects)
C8 = Claim("C8", "... and reaches a good validation mIoU sooner", "faster convergence from denoising pretraining",
           c8_effects)

CURVES = register(Experiment(
    id="ddep/finetune_curves", paper=PAPER, notebook="05_ddep", method="ddep",
    reference="fine-tuning curves at cfg.fraction of the labels: training CE and validation mIoU (notebook section 5)",
    cells=tuple(curve_cell(i) for i in INIT_NAMES), claims=(C7, C8), data=data,
    grid=lambda cfg: tuple(curve_cell(i) for i in cfg["inits"])))
