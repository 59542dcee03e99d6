"""DDeP's label-fraction experiment (kit.experiments.ddep, ``ddep/fig1``): its grid, its cells'
calls to the cache, and its claims on small synthetic tables. No training."""
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from kit import experiments
from kit.config import PROFILES, resolve
from kit.experiments import ddep as X
from kit.results import all_hold, effect

FIG1 = experiments.get("ddep/fig1")
INITS = ("random", "supervised", "dep", "ddep")


def table(values: dict[str, dict[float, list[float]]]) -> pd.DataFrame:
    """{init key: {fraction: [mIoU per seed]}} -> the result table, rows in the grid's run order."""
    fracs = list(next(iter(values.values())))
    n = len(next(iter(next(iter(values.values())).values())))
    return pd.DataFrame([{"cell": X.cell(i, f).name, "seed": s, "miou": float(values[i][f][s]),
                          "init": X.INIT_NAMES[i], "fraction (%)": 100 * f}
                         for s in range(n) for f in fracs for i in values])


def grid(ddep_vals, base=(20.0, 21.0, 22.0)):
    """random < supervised < DeP on every seed, DDeP = ``ddep_vals(fraction)`` per seed."""
    fr = (0.01, 0.05, 0.25, 1.0)
    out = {"random": {f: [b + 10 * f for b in base] for f in fr}}
    out["supervised"] = {f: [v + 2 for v in out["random"][f]] for f in fr}
    out["dep"] = {f: [v + 1 for v in out["supervised"][f]] for f in fr}
    out["ddep"] = {f: ddep_vals(f) for f in fr}
    return table(out)


def test_cells_cover_every_profile_and_state_no_paper_numbers():
    assert FIG1.method == "ddep" and FIG1.notebook == "05_ddep" and FIG1.paper.startswith("DDeP")
    assert [c.id for c in FIG1.claims] == ["C1", "C2", "C3", "P1"]
    assert len(FIG1.cells) == 4 * 6 and all(c.paper is None for c in FIG1.cells)
    assert FIG1.cells[3].name == "DDeP | 1%" and FIG1.cells[-1].name == "DDeP | 100%"
    for p in PROFILES:
        cfg = resolve(p, "ddep")
        assert {float(f) for f in cfg.label_fractions} <= set(X.FRACTIONS), p
        names = [c.name for c in FIG1.grid(cfg)]
        assert names[:4] == [f"{X.INIT_NAMES[i]} | {100 * float(cfg.label_fractions[0]):g}%" for i in INITS]
        assert set(names) <= {c.name for c in FIG1.cells}


def test_run_follows_the_notebook_loop_and_its_cache_keys(monkeypatch):
    import kit.fit
    from kit import methods
    from kit.methods.base import REQUIRED, Fitted

    calls = []

    def fake(method, cfg, seed=0, data=None, verbose=False, **spec):
        declared = methods.get(method).spec
        assert method == "ddep" and set(spec) <= set(declared)
        assert all(k in spec for k, v in declared.items() if v is REQUIRED)
        spec = {**declared, **spec}
        assert spec["overrides"] is None
        calls.append((seed, spec["fraction"], spec["init"], spec["eval_every"]))
        return Fitted(method, None, {"miou": 10.0 + seed, "n_labeled": int(spec["fraction"] * 40)})

    monkeypatch.setattr(kit.fit, "fit", fake)
    cfg = FIG1.config("smoke", seeds=[0, 1])
    t = replace(FIG1, data=lambda cfg: None).run(cfg)
    # seed-major, then fraction, then init, as the notebook; only (cfg.fraction, first seed) records curves
    assert calls == [(s, f, i, 2 if (f == 0.1 and s == 0) else 0) for s in (0, 1) for f in (0.1, 1.0) for i in INITS]
    assert list(t["cell"][:2]) == ["random init | 10%", "supervised encoder | 10%"]
    assert set(t.columns) >= {"cell", "seed", "miou", "init", "fraction (%)", "labeled images"}
    rows = FIG1.summary(t)
    assert [r["cell"] for r in rows] == list(dict.fromkeys(t["cell"])) and rows[0]["seeds"] == 2


@pytest.mark.parametrize("ddep_vals, verdict", [
    (lambda f: [35 + 10 * f, 36 + 10 * f, 37.5 + 10 * f], "holds"),        # DDeP above every other init on every seed
    (lambda f: [10, 11, 12], "does not hold"),                               # DDeP below every other init
    (lambda f: [20 + 10 * f, 35 + 10 * f, 17 + 10 * f], "undecided"),        # straddles
])
def test_c2_on_synthetic_tables(ddep_vals, verdict):
    effects = FIG1.claim("C2").effects(grid(ddep_vals))
    assert set(effects) == {"DDeP − random init", "DDeP − supervised encoder", "DDeP − DeP"}
    assert all(e.paired and e.n == 3 for e in effects.values())
    assert all_hold(effects.values()) == verdict


def test_c1_c3_p1_on_synthetic_tables():
    t = grid(lambda f: [40 - 10 * f, 41 - 10 * f, 42.5 - 10 * f])   # DDeP best, and best at few labels
    c1 = FIG1.claim("C1").effects(t)
    assert set(c1) == {"supervised − random", "DDeP − supervised"} and all_hold(c1.values()) == "holds"
    assert c1["supervised − random"].mean == pytest.approx(2.0)
    c3 = FIG1.claim("C3").effects(t)
    assert set(c3) == {"DDeP − random at 1%", "that gain − the gain at 100%"}
    assert not c3["DDeP − random at 1%"].paired and all_hold(c3.values()) == "holds"
    assert c3["that gain − the gain at 100%"].mean == pytest.approx(19.8)
    p1 = FIG1.claim("P1").effects(t)
    assert list(p1) == ["random init, 100% − 1% of the labels"] and all_hold(p1.values()) == "holds"
    flat = grid(lambda f: [20, 21, 22])                 # DDeP below supervised and DeP: C1 fails
    assert all_hold(FIG1.claim("C1").effects(flat).values()) == "does not hold"


def test_claims_equal_the_notebooks_former_formulas():
    """The notebook's own computation (before it called the registry) on a noisy table."""
    rng = np.random.default_rng(0)
    t = grid(lambda f: list(25 + rng.normal(0, 5, 3)))
    t["miou"] += rng.normal(0, 2, len(t))
    FRACS, N = [0.01, 0.05, 0.25, 1.0], X.INIT_NAMES
    per_seed = t.pivot_table(index=["seed", "fraction (%)"], columns="init", values="miou")
    low = [100 * f for f in FRACS if f <= 0.05]
    low_seed = per_seed[per_seed.index.get_level_values(1).isin(low)].groupby("seed").mean()
    all_seed = per_seed.groupby("seed").mean()
    gap = per_seed[N["ddep"]] - per_seed[N["random"]]
    lo, hi = gap.xs(100 * FRACS[0], level=1), gap.xs(100 * FRACS[-1], level=1)
    expected = {
        "C1": {"supervised − random": effect(low_seed[N["supervised"]], paired_with=low_seed[N["random"]]),
               "DDeP − supervised": effect(low_seed[N["ddep"]], paired_with=low_seed[N["supervised"]])},
        "C2": {f"DDeP − {N[k]}": effect(all_seed[N["ddep"]], paired_with=all_seed[N[k]]) for k in ("random", "supervised", "dep")},
        "C3": {"DDeP − random at 1%": effect(lo), "that gain − the gain at 100%": effect(lo, paired_with=hi)},
        "P1": {"random init, 100% − 1% of the labels": effect(per_seed[N["random"]].xs(100.0, level=1),
                                                               paired_with=per_seed[N["random"]].xs(1.0, level=1))},
    }
    for cid, exp in expected.items():
        got = FIG1.claim(cid).effects(t)
        assert list(got) == list(exp), cid
        for k, e in exp.items():
            assert (got[k].mean, got[k].low, got[k].high, got[k].verdict) == (e.mean, e.low, e.high, e.verdict), (cid, k)
