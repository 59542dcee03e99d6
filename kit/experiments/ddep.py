"""DeP / DDeP's experiments (Brempong et al., CVPR-W / TMLR 2022), as reproduced by
``notebooks/05_ddep.ipynb``: the label-fraction table (the paper's Fig. 1).

One cell per (init, label fraction), named ``"<init> | <fraction>%"`` (``"DDeP | 5%"``); each
row also carries ``init`` (the notebook's label, e.g. ``"random init"``) and ``fraction (%)``
as columns, so the claims pivot on those two columns, exactly as the notebook's
``curve.pivot_table`` does, and never parse cell names. The fractions differ by profile
(smoke: 10/100%, quick and full: 1/5/25/100%, paper: six), so the grid run is the config's
``inits × label_fractions`` (the experiment's ``grid``), in the notebook's loop order; ``cells``
lists every profile's fractions. The notebook states no paper numbers, so every ``paper`` is None.

    >>> from kit import experiments
    >>> e = experiments.get("ddep/fig1")
    >>> [c.name for c in e.grid(e.config("smoke"))][:3]
    ['random init | 10%', 'supervised encoder | 10%', 'DeP | 10%']
"""
from __future__ import annotations


from ..results import effect
from . import Cell, Claim, Experiment, register

PAPER = "DDeP (Brempong et al., CVPR-W 2022 / TMLR 2022)"
INIT_NAMES = {"random": "random init", "supervised": "supervised encoder", "dep": "DeP", "ddep": "DDeP"}
FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.25, 1.0)   #: every profile's label_fractions (smoke, quick, full, paper)


def data(cfg):
    from ..data import make_da_datasets

    return make_da_datasets(cfg)


def cell(init: str, fraction: float) -> Cell:
    """Fine-tune ``init`` on ``fraction`` of the target labels (``fit("ddep", ...)``, cached).
    The run at ``cfg.fraction`` on the first seed records validation curves (``eval_every``, part
    of the cache key), as in the notebook."""
    def run(cfg, seed, ds):
        from ..fit import fit

        every = int(cfg.curve_every) if (fraction == float(cfg.fraction) and seed == cfg.seeds[0]) else 0
        meta = fit("ddep", cfg, seed, ds, init=init, fraction=fraction, eval_every=every).meta
        return {"miou": meta["miou"], "init": INIT_NAMES[init], "fraction (%)": 100 * fraction,
                "labeled images": meta["n_labeled"]}
    return Cell(f"{INIT_NAMES[init]} | {100 * fraction:g}%", run)


def grid(cfg) -> tuple[Cell, ...]:
    """The run's cells: the config's ``inits × label_fractions``, fraction-major (the notebook's loop order)."""
    return tuple(cell(i, float(f)) for f in cfg["label_fractions"] for i in cfg["inits"])


def per_seed(table):
    """mIoU with rows (seed, fraction (%)) and one column per init label (the notebook's pivot)."""
    return table.pivot_table(index=["seed", "fraction (%)"], columns="init", values="miou")


def fractions(table) -> list[float]:
    """The fractions (%) in the order they were run (the config's ``label_fractions``)."""
    return list(dict.fromkeys(float(f) for f in table["fraction (%)"]))


N = INIT_NAMES


def c1_effects(table):
    """C1: averaged per seed over the fractions ≤ 5% (or the first), supervised − random and DDeP − supervised."""
    p, fr = per_seed(table), fractions(table)
    low = [f for f in fr if f <= 5] or fr[:1]
    s = p[p.index.get_level_values(1).isin(low)].groupby("seed").mean()
    return {"supervised − random": effect(s[N["supervised"]], paired_with=s[N["random"]]),
            "DDeP − supervised": effect(s[N["ddep"]], paired_with=s[N["supervised"]])}


def c2_effects(table):
    """C2: averaged per seed over every fraction, DDeP − each other init."""
    s = per_seed(table).groupby("seed").mean()
    return {f"DDeP − {N[k]}": effect(s[N["ddep"]], paired_with=s[N[k]]) for k in ("random", "supervised", "dep")}


def c3_effects(table):
    """C3: DDeP − random at the first fraction (one sample), and that gain − the gain at the last fraction."""
    p, fr = per_seed(table), fractions(table)
    gap = p[N["ddep"]] - p[N["random"]]
    lo, hi = gap.xs(fr[0], level=1), gap.xs(fr[-1], level=1)
    return {f"DDeP − random at {fr[0]:g}%": effect(lo), f"that gain − the gain at {fr[-1]:g}%": effect(lo, paired_with=hi)}


def p1_effects(table):
    """P1 (premise): random init, last fraction − first fraction."""
    r, fr = per_seed(table)[N["random"]], fractions(table)
    return {f"random init, {fr[-1]:g}% − {fr[0]:g}% of the labels": effect(r.xs(fr[-1], level=1), paired_with=r.xs(fr[0], level=1))}


C1 = Claim("C1", "At few labels, pretraining helps: random < supervised encoder < DeP/DDeP",
           "DDeP paper, Cityscapes label fractions (Fig. 1)", c1_effects)
C2 = Claim("C2", "DDeP is the best initialisation overall", "DDeP beats DeP and supervised at every fraction", c2_effects)
C3 = Claim("C3", "Denoising pretraining gains at few labels, and the gain shrinks as labels grow",
           "largest gains below ~5% labels", c3_effects)
P1 = Claim("P1", "(premise) More labels help a randomly initialised model: the label-fraction curve rises",
           "Fig. 1: every curve rises steeply from 1% to 100% of the labels", p1_effects)

FIG1 = register(Experiment(
    id="ddep/fig1", paper=PAPER, notebook="05_ddep", method="ddep",
    reference="Fig. 1 / the Cityscapes label-fraction table (random init, supervised encoder, DeP, DDeP)",
    cells=tuple(cell(i, f) for f in FRACTIONS for i in INIT_NAMES), claims=(C1, C2, C3, P1), data=data, grid=grid))
