"""CDCL's ablations in the experiments registry (kit/experiments/cdcl_tables.py: ``cdcl/interval``,
``cdcl/update_rule``): their cells and what they ask of kit.fit.fit and kit.methods.cdcl (fit and
evaluate_cdcl replaced: no training), and the claims C4, C5, C5b on small synthetic tables."""
import types
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from kit import experiments
from kit.config import PROFILES, resolve
from kit.experiments import cdcl_tables as X
from kit.experiments.cdcl import PER, registry_table
from kit.results import all_hold, effect

INTERVAL, UPDATE = experiments.get("cdcl/interval"), experiments.get("cdcl/update_rule")
PAIR = ["city_a", "city_b"]


def table(values: dict[str, list[float]], rough: dict[str, list[float]] | None = None) -> pd.DataFrame:
    """{cell: [mean mIoU per seed]} (+ {cell: [loss roughness per seed]}) -> the registry's table."""
    rows = []
    for s in range(len(next(iter(values.values())))):
        for c, vs in values.items():
            rows.append({"cell": c, "seed": s, "miou": vs[s], PER + PAIR[0]: vs[s] + 1, PER + PAIR[1]: vs[s] - 1,
                         **({X.ROUGH: rough[c][s]} if rough else {})})
    return pd.DataFrame(rows)


def test_cells_seeds_claims():
    for e in (INTERVAL, UPDATE):
        assert e.notebook == "04_cdcl" and e.method == "cdcl" and e.decides and all(c.paper is None for c in e.cells)
    assert [c.name for c in INTERVAL.cells] == ["t=1", "t=2", "t=4"] and [c.id for c in INTERVAL.claims] == ["C4"]
    assert [c.name for c in UPDATE.cells] == ["sum", "alternate"] and [c.id for c in UPDATE.claims] == ["C5", "C5b"]
    for p in PROFILES:
        cfg = resolve(p, "cdcl")
        assert [c.name for c in INTERVAL.grid(cfg)] == [f"t={t}" for t in cfg.intervals]
        assert {c.name for c in INTERVAL.grid(cfg)} <= {c.name for c in INTERVAL.cells}
        assert list(INTERVAL.seeds(cfg)) == list(cfg.ablation_seeds or cfg.seeds[:1]) == list(UPDATE.seeds(cfg))
    assert X.ablation_seeds(resolve("full", "cdcl")) == [0, 1, 2, 3, 4] and X.ablation_seeds(resolve("quick", "cdcl")) == [0]


def test_cells_call_the_notebooks_models(monkeypatch):
    import kit.fit
    from kit import methods
    from kit.methods import cdcl
    from kit.methods.base import Fitted

    seen = []

    def load(method, cfg, seed=0, data=None, verbose=False, **spec):
        assert method == "cdcl" and set(spec) <= set(methods.get(method).spec)
        spec = {**methods.get(method).spec, **spec}
        seen.append((spec["kind"], list(spec["names"]), seed, cfg["interval"], cfg["dat_mode"]))
        assert data == "DS" and spec["init"] is None and verbose is False
        hist = [{"iter": i, "seg_city_a": 2.0 - 0.1 * i, "seg_city_b": 2.0 + (0.5 if i % 2 else 0)} for i in range(4)]
        return Fitted(method, cfg["dat_mode"], {"history": {"train": hist}})

    def evaluate(model, kind, names, datasets, cfg):
        assert kind == "dat" and list(names) == PAIR
        return {n: types.SimpleNamespace(miou=10.0 * (i + 1)) for i, n in enumerate(names)}

    monkeypatch.setattr(kit.fit, "fit", load)
    monkeypatch.setattr(cdcl, "evaluate_cdcl", evaluate)
    cfg = INTERVAL.config("smoke", ablation_seeds=[0, 1])
    t = replace(INTERVAL, data=lambda cfg: "DS").run(cfg)
    assert seen == [("dat", PAIR, s, t_, "sum") for s in (0, 1) for t_ in (1, 2, 4)]
    assert list(t["cell"][:3]) == ["t=1", "t=2", "t=4"] and set(t["miou"]) == {15.0}
    assert set(t[PER + "city_b"]) == {20.0}
    seen.clear()
    u = replace(UPDATE, data=lambda cfg: "DS").run(cfg, seeds=[3])
    assert seen == [("dat", PAIR, 3, 1, "sum"), ("dat", PAIR, 3, 1, "alternate")]
    # roughness: city_a 0.1 per step, city_b 0.5 per step -> mean 0.3
    assert u[X.ROUGH].tolist() == pytest.approx([0.3, 0.3])


@pytest.mark.parametrize("t1, verdict", [([30, 31, 32], "holds"), ([20, 21, 22], "does not hold"),
                                         ([30, 22, 26], "undecided")])
def test_c4_on_synthetic_tables(t1, verdict):
    t = table({"t=1": t1, "t=2": [25, 26, 27], "t=4": [24, 25.5, 26]})
    effects = INTERVAL.claim("C4").effects(t)
    assert list(effects) == ["t=1 − t=2", "t=1 − t=4"] and all(e.paired and e.n == 3 for e in effects.values())
    assert all_hold(effects.values()) == verdict


@pytest.mark.parametrize("sum_, rough_alt, verdict", [
    ([30, 31, 32], [0.5, 0.6, 0.7], "holds"),          # sum trains better, alternate is rougher
    ([20, 21, 22], [0.05, 0.06, 0.07], "does not hold"),
    ([30, 22, 26], [0.3, 0.1, 0.2], "undecided"),
])
def test_c5_c5b_on_synthetic_tables(sum_, rough_alt, verdict):
    t = table({"sum": sum_, "alternate": [25, 26, 27]}, {"sum": [0.2, 0.15, 0.18], "alternate": rough_alt})
    c5, c5b = UPDATE.claim("C5").effects(t), UPDATE.claim("C5b").effects(t)
    assert list(c5) == ["roughness alternate − sum"] and list(c5b) == ["mIoU sum − alternate"]
    assert all_hold(c5.values()) == verdict and all_hold(c5b.values()) == verdict


def test_claims_equal_the_notebooks_former_formulas():
    """The notebook's own computation (before it called the registry) on noisy ablation records."""
    rng = np.random.default_rng(0)
    seeds, intervals = [0, 1, 2], [1, 2, 4]
    abl = pd.DataFrame([{"ablation": a, "variant": v, "dataset": n, "seed": s, "miou": 25 + rng.normal(0, 3)}
                        for s in seeds for a, vs in (("interval t", [f"t={t}" for t in intervals]), ("update", ["sum", "alternate"]))
                        for v in vs for n in PAIR])
    curves = pd.DataFrame([{"mode": m, "seed": s, "iter": i, "dataset": n, "loss": 2 - 0.1 * i + rng.normal(0, 0.2)}
                           for m in ("sum", "alternate") for s in seeds for i in range(6) for n in PAIR])
    per_seed = abl.groupby(["ablation", "variant", "seed"])["miou"].mean()
    it_means = abl[abl.ablation == "interval t"].groupby("variant")["miou"].mean()
    t1 = per_seed["interval t", "t=1"]
    rough_seed = {m: pd.Series({s: X.roughness(g) for s, g in curves[curves["mode"] == m].groupby("seed")})
                  for m in ("sum", "alternate")}
    expected = {"C4": {f"t=1 − {v}": effect(t1, paired_with=per_seed["interval t", v]) for v in it_means.index if v != "t=1"},
                "C5": {"roughness alternate − sum": effect(rough_seed["alternate"], paired_with=rough_seed["sum"])},
                "C5b": {"mIoU sum − alternate": effect(per_seed["update", "sum"], paired_with=per_seed["update", "alternate"])}}
    interval_tbl = registry_table(abl[abl.ablation == "interval t"].rename(columns={"variant": "method"}))
    update_tbl = registry_table(abl[abl.ablation == "update"].rename(columns={"variant": "method"}))
    update_tbl[X.ROUGH] = [float(rough_seed[m][s]) for m, s in zip(update_tbl["cell"], update_tbl["seed"])]
    got = {"C4": INTERVAL.claim("C4").effects(interval_tbl), "C5": UPDATE.claim("C5").effects(update_tbl),
           "C5b": UPDATE.claim("C5b").effects(update_tbl)}
    for cid, exp in expected.items():
        assert list(got[cid]) == list(exp), cid
        for k, e in exp.items():
            g = got[cid][k]
            assert (g.mean, g.low, g.high, g.verdict) == pytest.approx((e.mean, e.low, e.high, e.verdict), abs=1e-12), (cid, k)
    # the cells' roughness is the notebook's, from one model's history
    one = curves[(curves["mode"] == "sum") & (curves.seed == 1)]
    hist = {"history": {"train": [{"iter": i, **{f"seg_{n}": g[g.dataset == n]["loss"].iloc[0] for n in PAIR}}
                                  for i, g in one.groupby("iter")]}}
    assert X.roughness(X.loss_curves(hist, PAIR, 1)) == rough_seed["sum"][1]
