"""RIPU's other tables (kit.experiments.ripu_tables: ``ripu/annotation_unit``, ``ripu/budget``,
``ripu/losses``, ``ripu/region_size``): their cells and grids, the configs their cells ask the
cache for (the notebook's), and claims C2-C4 on small synthetic tables. No training."""
from dataclasses import replace

import pandas as pd
import pytest

from kit import experiments
from kit.config import resolve
from kit.experiments import ripu_tables as X
from kit.results import all_hold

UNIT, BUDGET, LOSSES, K = (experiments.get(f"ripu/{t}") for t in ("annotation_unit", "budget", "losses", "region_size"))


def table(values: dict[str, list[float]], **extra: dict[str, object]) -> pd.DataFrame:
    """{cell: [mIoU per seed]} -> the result table; ``extra[column][cell]`` adds a column."""
    return pd.DataFrame([{"cell": c, "seed": s, "miou": float(v), **{k: m.get(c) for k, m in extra.items()}}
                         for c, vs in values.items() for s, v in enumerate(vs)])


def names(e, profile="smoke"):
    return [c.name for c in (e.grid(e.config(profile)) if e.grid else e.cells)]


def test_cells_grids_seeds_and_paper_numbers():
    for e in (UNIT, BUDGET, LOSSES, K):
        assert e.notebook == "03_ripu" and e.method == "ripu" and e.decides and e.paper.startswith("RIPU")
    assert [c.id for c in UNIT.claims] == ["C2"] and [c.id for c in BUDGET.claims] == ["C3"]
    assert [c.id for c in LOSSES.claims] == ["C4"] and K.claims == ()
    assert names(UNIT) == ["region (RA)", "point", "image"]
    assert names(BUDGET) == ["source-only", "RA 1%", "RA 5%", "oracle"]
    assert names(BUDGET, "quick") == ["source-only", "RA 0.5%", "RA 1%", "RA 2.2%", "RA 5%", "oracle"]
    assert {c.name: c.paper for c in BUDGET.cells if c.paper is not None} == {"RA 2.2%": 69.6}
    assert all(c.paper is None for e in (UNIT, LOSSES, K) for c in e.cells)
    assert names(LOSSES) == list(X.LOSSES) == ["CE + L_cr + L_nl", "CE + L_nl", "CE + L_cr", "CE"]
    assert names(LOSSES, "quick") == ["CE + L_cr + L_nl"]            # extended off: the cached full loss only
    assert names(K) == ["3x3", "5x5"] and names(K, "quick") == ["3x3", "5x5", "7x7"]
    # the notebook's seeds: every seed for the unit table, the sweep seeds (first two) for the others
    assert UNIT.seeds is None
    for e in (BUDGET, LOSSES, K):
        assert e.seeds(e.config("quick")) == [0, 1] and e.seeds(e.config("full")) == [0, 1, 2, 3, 4]
        assert e.seeds(e.config("quick", sweep_seeds=[2])) == [2]


@pytest.mark.parametrize("e, profile, expected", [
    (UNIT, "smoke", [{"acquisition": "ripu", "mode": m} for m in ("region", "point", "image")]),
    (BUDGET, "smoke", [{"budget": b} for b in (0.01, 0.05)]),
    (LOSSES, "smoke", [{"lambda_cr": cr, "lambda_nl": nl} for cr, nl in ((0.1, 1.0), (0.0, 1.0), (0.1, 0.0), (0.0, 0.0))]),
    (LOSSES, "quick", [{"lambda_cr": 0.1, "lambda_nl": 1.0}]),
    (K, "smoke", [{"radius_k": k} for k in (1, 2)]),
])
def test_cells_ask_the_cache_for_the_notebooks_configs(monkeypatch, e, profile, expected):
    """Each RIPU cell's config is the notebook's ``resolve(PROFILE, "ripu", **changes)`` (same cache key)."""
    import kit.fit
    from kit.methods.base import Fitted

    calls, baselines = [], []

    def fake(method, cfg, seed=0, data=None, verbose=False, **spec):
        assert spec == {}                                   # neither RIPU nor the baselines take a spec
        if method in ("source_only", "oracle"):
            baselines.append((method, seed))
            return Fitted(method, None, {})
        assert method == "ripu"
        calls.append((dict(cfg), seed))
        return Fitted(method, None, {"miou": 30.0 + seed, "labeled_fraction": float(cfg["budget"])})

    monkeypatch.setattr(kit.fit, "fit", fake)
    monkeypatch.setattr("kit.evaluation.evaluate", lambda *a, **k: type("E", (), {"miou": 50.0})())
    cfg = e.config(profile)
    t = replace(e, data=lambda cfg: {"target_val": type("V", (), {"num_classes": 3})()}).run(cfg, seeds=[0])
    assert [c for c, _ in calls] == [dict(resolve(profile, "ripu", **ch)) for ch in expected]
    assert {s for _, s in calls} == {0} and list(t["cell"]) == names(e, profile)
    assert baselines == ([("source_only", 0), ("oracle", 0)] if e is BUDGET else [])
    if e is BUDGET:   # each budget row carries its fraction; the baselines none
        assert t["budget"].tolist()[1:-1] == [0.01, 0.05] and t["budget"].iloc[[0, -1]].isna().all()
        assert t["miou"].iloc[-1] == 50.0
    if e is K:
        assert t["k"].tolist() == [1, 2]


@pytest.mark.parametrize("region, verdict", [
    ([40, 41, 42], "holds"), ([20, 21, 22], "does not hold"), ([30, 37, 31], "undecided")])
def test_c2_on_synthetic_tables(region, verdict):
    effects = UNIT.claim("C2").effects(table({"region (RA)": region, "point": [30, 31, 32], "image": [29, 31, 33]}))
    assert set(effects) == {"region − image", "region − point"}
    assert all(e.paired and e.n == 3 for e in effects.values())
    assert all_hold(effects.values()) == verdict


@pytest.mark.parametrize("top, verdict", [
    ([56, 56.5, 57], "holds"), ([30, 31, 32], "does not hold"), ([50, 58, 52], "undecided")])
def test_c3_takes_the_largest_budget_against_0_9_oracle(top, verdict):
    t = table({"source-only": [20, 21, 22], "RA 1%": [10, 10, 10], "RA 5%": top, "oracle": [60, 60, 60]},
              budget={"RA 1%": 0.01, "RA 5%": 0.05})
    (label, e), = BUDGET.claim("C3").effects(t).items()
    assert label == "5.0% − 0.9 × oracle" and e.paired and e.n == 3
    assert e.mean == pytest.approx(sum(top) / 3 - 54) and e.verdict == verdict


def test_c3_pairs_on_the_shared_seeds():
    """The notebook's oracle runs on every seed, the budget curve on the sweep seeds: pairs on those."""
    t = pd.concat([table({"RA 5%": [55, 56]}, budget={"RA 5%": 0.05}), table({"oracle": [60, 60, 10]})])
    (e,) = BUDGET.claim("C3").effects(t).values()
    assert e.paired and e.n == 2 and e.mean == pytest.approx(1.5)


@pytest.mark.parametrize("full, verdict", [
    ([40, 41, 42], "holds"), ([20, 21, 22], "does not hold"), ([30, 36, 31], "undecided")])
def test_c4_on_synthetic_tables(full, verdict):
    t = table({"CE + L_cr + L_nl": full, "CE + L_nl": [30, 31, 32], "CE + L_cr": [31, 30, 32], "CE": [29, 30, 31]})
    effects = LOSSES.claim("C4").effects(t)
    assert set(effects) == {"full − (CE + L_nl)", "full − (CE + L_cr)"}
    assert all(e.paired and e.n == 3 for e in effects.values())
    assert all_hold(effects.values()) == verdict


def test_c4_without_the_ablation_is_not_testable():
    """Extended off (quick): the grid is the full loss alone, and C4 says where it runs."""
    with pytest.raises(ValueError, match="extended"):
        LOSSES.claim("C4").effects(table({"CE + L_cr + L_nl": [40, 41]}))
