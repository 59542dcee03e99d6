"""AdaptSegNet's registered experiments (kit.experiments.adaptseg): the main table's cells and
paper numbers, and claims C1-C4 on small synthetic tables (no training)."""
import pandas as pd
import pytest

from kit import experiments
from kit.results import all_hold

T1, SWEEP = "adaptseg/main", "adaptseg/lambda_sweep"


def table(values: dict[str, list[float]], value: str = "miou") -> pd.DataFrame:
    """{cell: [value per seed]} -> the registry's result table (``miou`` mirrors ``value``)."""
    return pd.DataFrame([{"cell": c, "seed": s, "miou": v, value: v} for c, vs in values.items() for s, v in enumerate(vs)])


def test_table1_cells_paper_numbers_and_claims():
    e = experiments.get(T1)
    assert e.notebook == "01_adaptsegnet" and e.method == "adaptseg"
    assert {c.name: c.paper for c in e.cells} == {
        "source-only": 36.6, "λ_adv = 0 (control)": None, "feature-level": 39.3, "single-level": 41.4,
        "multi-level": 42.4, "target oracle": 65.1, "single-level LS-GAN": 44.1}
    assert [c.id for c in e.claims] == ["C1", "C2", "C4"]
    s = experiments.get(SWEEP)
    assert [c.name for c in s.cells] == ["output space (single-level)", "feature space"]
    assert [c.id for c in s.claims] == ["C3"] and all(c.paper is None for c in s.cells)


def test_sweep_runs_on_the_sweep_seeds():
    from kit.experiments.adaptseg import sweep_seeds

    seen = []
    e = experiments.Experiment("t/sweep", "P", "T", "01_x", "adaptseg",
                               (experiments.Cell("x", lambda cfg, seed, d: seen.append(seed) or {"miou": 0.0}),),
                               seeds=sweep_seeds)
    assert experiments.get("adaptseg/lambda_sweep").seeds is sweep_seeds
    e.run(e.config("smoke", seeds=[3, 4]))                      # no sweep_seeds: the first seed
    e.run(e.config("smoke", seeds=[3, 4], sweep_seeds=[4, 5]))
    e.run(e.config("smoke", seeds=[3, 4]), seeds=[7])           # explicit seeds win
    assert seen == [3, 4, 5, 7]


@pytest.mark.parametrize("adapted, verdict", [
    ([40, 41, 42], "holds"),          # single and multi above source-only on every seed
    ([20, 21, 22], "does not hold"),  # below
    ([30, 36, 31], "undecided"),      # straddles
])
def test_table1_c1_on_synthetic_tables(adapted, verdict):
    t = table({"source-only": [30, 31, 32], "single-level": adapted, "multi-level": [a + 0.5 for a in adapted]})
    effects = experiments.get(T1).claim("C1").effects(t)
    assert set(effects) == {"single-level − source-only", "multi-level − source-only"}
    assert all(e.paired and e.n == 3 for e in effects.values())
    assert all_hold(effects.values()) == verdict


@pytest.mark.parametrize("multi, verdict", [
    ([41, 42, 43], "holds"), ([38, 39, 40], "does not hold"), ([45, 36, 41], "undecided")])
def test_table1_c2_on_synthetic_tables(multi, verdict):
    t = table({"single-level": [40, 41, 42], "multi-level": multi})
    effects = experiments.get(T1).claim("C2").effects(t)
    assert list(effects) == ["multi − single"] and effects["multi − single"].mean == pytest.approx(sum(multi) / 3 - 41)
    assert all_hold(effects.values()) == verdict


@pytest.mark.parametrize("single, verdict", [
    ([41, 42, 43], "holds"), ([38, 39, 40], "does not hold"), ([45, 36, 41], "undecided")])
def test_table1_c4_on_synthetic_tables(single, verdict):
    t = table({"single-level": single, "λ_adv = 0 (control)": [40, 41, 42], "source-only": [30, 30, 30]})
    effects = experiments.get(T1).claim("C4").effects(t)
    assert list(effects) == ["single-level − control (λ_adv = 0, same schedule)"]
    assert all_hold(effects.values()) == verdict


@pytest.mark.parametrize("feature_range, verdict", [
    ([3.0, 4.0, 5.0], "holds"),        # feature space varies more over the sweep than output space
    ([0.0, 0.4, 0.9], "does not hold"),
    ([1.0, 6.0, 0.5], "undecided"),
])
def test_sweep_c3_compares_the_ranges(feature_range, verdict):
    t = table({"output space (single-level)": [1.0, 1.5, 2.0], "feature space": feature_range}, value="range")
    t["miou"] = 40.0   # the mean over the sweep does not enter C3
    effects = experiments.get(SWEEP).claim("C3").effects(t)
    assert list(effects) == ["range over the sweep, feature − output"]
    assert all_hold(effects.values()) == verdict


def test_one_seed_is_undecided():
    t = table({"source-only": [30], "single-level": [40], "multi-level": [41]})
    effects = experiments.get(T1).claim("C1").effects(t)
    assert all(e.n == 1 for e in effects.values()) and all_hold(effects.values()) == "undecided"


def test_wide_sweep_trains_the_sweep_and_its_continuation(monkeypatch):
    """adaptseg/lambda_wide (C3's diagnosis): every λ of lambda_sweep then lambda_wide, in both
    spaces, on the sweep seeds; a diagnosis, so the notebook's own C3 stays the sweep's."""
    import kit.fit
    from kit.methods.base import Fitted

    seen = []

    def fake(method, cfg, seed=0, data=None, verbose=False, **spec):
        assert method == "adaptseg" and spec == {}
        seen.append((cfg["level"], cfg["lambda_adv"], seed))
        return Fitted(method, None, {"target_eval": {"miou": 100 * cfg["lambda_adv"]}})

    monkeypatch.setattr(kit.fit, "fit", fake)
    exp = experiments.get("adaptseg/lambda_wide")
    cfg = exp.config("smoke", lambda_sweep=[0.01, 0.02], lambda_wide=[0.04, 0.08])
    t = exp.run(cfg, seeds=[0])
    assert seen == [(lv, lam, 0) for lv in ("single", "feature") for lam in (0.01, 0.02, 0.04, 0.08)]
    assert t.set_index("cell").loc["feature space", "range"] == pytest.approx(7.0)
    assert (t["wide"] == 2).all() and not exp.decides and experiments.get(SWEEP).decides


def test_wide_sweep_claim_is_not_run_without_a_continuation():
    t = table({"output space (single-level)": [1.0, 1.5], "feature space": [3.0, 4.0]}, value="range")
    t["wide"] = 0
    with pytest.raises(ValueError, match="lambda_wide is empty"):
        experiments.get("adaptseg/lambda_wide").claim("C3").effects(t)
    t["wide"] = 3
    effects = experiments.get("adaptseg/lambda_wide").claim("C3").effects(t)
    assert list(effects) == ["range over the widened sweep, feature − output"]
    assert effects["range over the widened sweep, feature − output"].mean == pytest.approx(2.25)
