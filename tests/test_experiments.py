"""The experiments registry (kit.experiments) and `kit reproduce`: the registry's contract, the
helpers over result tables, and RIPU Table 4's claim on small synthetic tables."""
import json

import pandas as pd
import pytest

from kit import experiments
from kit.cli import main
from kit.experiments import Cell, Claim, Experiment, by_cell, paired, summary


def table(values: dict[str, list[float]]) -> pd.DataFrame:
    """{cell: [mIoU per seed]} -> the registry's result table."""
    return pd.DataFrame([{"cell": c, "seed": s, "miou": v} for c, vs in values.items() for s, v in enumerate(vs)])


def test_every_registered_experiment_is_well_formed():
    assert experiments.ids(), "no experiment registered"
    for i in experiments.ids():
        e = experiments.get(i)
        assert e.id == i and "/" in i
        assert e.cells and len({c.name for c in e.cells}) == len(e.cells)
        assert e.notebook[:2].isdigit(), e.notebook
        for c in e.claims:
            assert c.id and c.text and c.paper and callable(c.effects)
        e.config("smoke")   # the method and its overrides resolve


def test_unknown_experiment_suggests_the_closest():
    with pytest.raises(ValueError, match="did you mean ripu/table4"):
        experiments.get("ripu/tabel4")


def test_register_rejects_bad_ids_and_repeated_cells():
    run = lambda cfg, seed, data: {"miou": 1.0}  # noqa: E731
    with pytest.raises(ValueError, match="<paper>/<table>"):
        experiments.register(Experiment("nopaper", "P", "T", "00_x", "intro", (Cell("a", run),)))
    with pytest.raises(ValueError, match="repeat"):
        experiments.register(Experiment("p/t", "P", "T", "00_x", "intro", (Cell("a", run), Cell("a", run))))


def test_by_cell_paired_and_summary():
    t = table({"a": [3.0, 4.0, 5.0], "b": [1.0, 1.5, 2.5]})
    assert list(by_cell(t, "a")) == [3.0, 4.0, 5.0]
    e = paired(t, "a", "b")
    assert e.paired and e.n == 3 and e.mean == pytest.approx(7 / 3)
    with pytest.raises(ValueError, match="no rows for cell 'c'"):
        by_cell(t, "c")
    assert by_cell(t, "c", missing_ok=True).empty
    e0 = paired(t, "a", "c", missing_ok=True)   # a cell this run left out: no seed, undecided
    assert e0.n == 0 and e0.verdict == "undecided"
    rows = summary(t, {"a": 9.9}, ["b", "a", "missing"])
    assert [r["cell"] for r in rows] == ["b", "a"]
    assert rows[1]["paper"] == 9.9 and rows[1]["here mIoU"] == 4.0 and rows[1]["seeds"] == 3


def test_run_builds_the_table_and_rejects_a_cell_without_miou():
    calls = []

    def cell(name, value):
        def run(cfg, seed, data):
            calls.append((name, seed, data))
            return {"miou": value + seed, "extra": 1}
        return Cell(name, run)

    e = Experiment("t/x", "P", "T", "00_x", "intro", (cell("a", 10.0), cell("b", 0.0)), data=lambda cfg: "D")
    t = e.run(e.config("smoke"), seeds=[0, 1])
    assert list(t.columns[:3]) == ["cell", "seed", "miou"] and len(t) == 4
    assert calls == [("a", 0, "D"), ("b", 0, "D"), ("a", 1, "D"), ("b", 1, "D")]
    bad = Experiment("t/y", "P", "T", "00_x", "intro", (Cell("a", lambda c, s, d: {"x": 1}),))
    with pytest.raises(ValueError, match="returned no 'miou'"):
        bad.run(bad.config("smoke"))


def test_reproduce_writes_the_notebook_schema(tmp_path, monkeypatch):
    from kit.results import load_metrics

    vals = {"a": [5.0, 6.0, 7.0], "b": [1.0, 1.2, 0.9]}
    cells = tuple(Cell(c, lambda cfg, seed, data, c=c: {"miou": vals[c][seed]}, paper=1.0) for c in vals)
    e = Experiment("test/fake", "P", "Table 9", "00_x", "intro", cells,
                   claims=(Claim("C1", "a beats b", "Table 9", lambda t: {"a − b": paired(t, "a", "b")}),))
    monkeypatch.setitem(experiments._REGISTRY, e.id, e)
    path = experiments.reproduce("test/fake", "smoke", {"seeds": [0, 1, 2]}, runs_dir=tmp_path, log=None)
    assert path == tmp_path / "smoke" / "reproduce" / "test" / "fake" / "metrics.json"
    m = load_metrics(path)
    assert m["claims"][0]["verdict"] == "holds" and "a − b" in m["claims"][0]["effects"]
    assert len(m["results"]["table"]) == 6 and m["results"]["paper_vs_here"][0]["paper"] == 1.0
    assert m["config"]["experiment"] == "test/fake"


def test_cli_reproduce_lists_and_rejects(capsys):
    assert main(["reproduce", "--list"]) == 0
    assert "ripu/table4" in capsys.readouterr().out
    assert main(["reproduce", "ripu/nope"]) != 0
    assert "unknown experiment" in capsys.readouterr().err
    assert main(["reproduce"]) != 0
    assert main(["reproduce", "ripu/table4", "-p", "no_such_field=1", "--profile", "smoke"]) != 0
    assert "no_such_field" in capsys.readouterr().err


@pytest.mark.parametrize("ripu_vals, verdict", [
    ([40, 41, 42], "holds"),          # RI×PU above every other acquisition on every seed
    ([20, 21, 22], "does not hold"),  # below every other
    ([30, 36, 31], "undecided"),      # straddles
])
def test_ripu_table4_c1_on_synthetic_tables(ripu_vals, verdict):
    from kit.results import all_hold

    t = table({"ripu": ripu_vals, "impurity": [30, 31, 32], "uncertainty": [30.5, 31, 32.5], "random": [31, 30, 32]})
    effects = experiments.get("ripu/table4").claim("C1").effects(t)
    assert set(effects) == {"RI×PU − impurity", "RI×PU − uncertainty", "RI×PU − random"}
    assert all(e.paired and e.n == 3 for e in effects.values())
    assert all_hold(effects.values()) == verdict


@pytest.mark.parametrize("so, verdict", [([20, 22, 21], "holds"), ([50, 52, 51], "does not hold"),
                                         ([30, 40, 34], "undecided")])
def test_intro_baselines_c1(so, verdict):
    t = table({"source-only": so, "target oracle": [60, 60, 60], "source-only (source val)": [70, 71, 69]})
    effects = experiments.get("intro/baselines").claim("C1").effects(t)
    (e,) = effects.values()
    assert e.paired and e.verdict == verdict
    assert e.mean == pytest.approx(36 - sum(so) / 3)


def test_intro_baselines_c2_and_a_dataset_without_source_val(tmp_path, monkeypatch):
    exp = experiments.get("intro/baselines")
    t = table({"source-only": [20, 22, 21], "target oracle": [60, 60, 60], "source-only (source val)": [70, 71, 69]})
    (e,) = exp.claim("C2").effects(t).values()
    assert e.mean == pytest.approx(70 - 15 - 21) and e.verdict == "holds"
    nan = table({"source-only": [20.0], "target oracle": [60.0], "source-only (source val)": [float("nan")]})
    with pytest.raises(ValueError, match="no source val split"):
        exp.claim("C2").effects(nan)
    # reproduce records such a claim as not run, with the reason, instead of failing
    from kit.results import load_metrics

    cells = tuple(Cell(c.name, lambda cfg, seed, data, n=c.name: {"miou": float(nan[nan.cell == n].miou.iloc[0])})
                  for c in exp.cells)
    fake = Experiment("test/nosrc", exp.paper, exp.reference, exp.notebook, exp.method, cells, exp.claims)
    monkeypatch.setitem(experiments._REGISTRY, fake.id, fake)
    m = load_metrics(experiments.reproduce(fake.id, "smoke", {"seeds": [0]}, runs_dir=tmp_path, log=None))
    c2 = next(c for c in m["claims"] if c["id"] == "C2")
    assert c2["holds"] is None and c2.get("not_run") and "no source val split" in c2["here"]


def test_results_page_lists_the_reproduced_experiments(tmp_path, monkeypatch):
    from kit.report import results_page

    vals = {"a": [5.0, 6.0, 7.0], "b": [1.0, 1.2, 0.9]}
    cells = tuple(Cell(c, lambda cfg, seed, data, c=c: {"miou": vals[c][seed]}, paper=2.5) for c in vals)
    e = Experiment("test/page", "Paper X", "Table 7", "00_x", "intro", cells,
                   claims=(Claim("C1", "a beats b", "Table 7", lambda t: {"a − b": paired(t, "a", "b")}),))
    monkeypatch.setitem(experiments._REGISTRY, e.id, e)
    experiments.reproduce(e.id, "full", {"seeds": [0, 1, 2]}, runs_dir=tmp_path, log=None)
    page = results_page("full", tmp_path)
    assert "## Experiments run by `kit reproduce`" in page
    assert "### `test/page` · Paper X: Table 7" in page
    assert "| C1 | a beats b | a − b: +5.0" in page and "| holds |" in page
    assert "| a | 2.5 | 6 | 1 | 3 |" in page
    assert "| holds | 0 |" in page   # the notebooks' tally does not count the registry's claims twice


def test_summary_leaves_out_the_seeds_a_cell_did_not_run():
    t = table({"a": [3.0, float("nan"), 5.0], "b": [float("nan")] * 3})
    rows = summary(t, {}, ["a", "b"])
    assert rows == [{"cell": "a", "paper": None, "here mIoU": 4.0, "sd": 1.41, "seeds": 2}]


def test_results_page_shows_the_recipe_check(tmp_path):
    from kit.report import results_page

    d = tmp_path / "full" / "01_adaptsegnet"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({
        "notebook": "01_adaptsegnet", "profile": "full", "seeds": [0], "runtime_s": 1.0, "claims": [],
        "results": {"recipe_check": [{"parameter": "lambda_adv", "default": 0.01, "chosen on the tuning split": 0.04,
                                      "agrees with the default": False}]}}))
    page = results_page("full", tmp_path)
    assert "**Recipe check on a tuning split**" in page and "| lambda_adv | 0.01 | 0.04 | False |" in page
    one = json.loads((d / "metrics.json").read_text())
    one["results"]["recipe_check"] = one["results"]["recipe_check"][0]   # recorded as one row (a dict)
    (d / "metrics.json").write_text(json.dumps(one))
    assert "| lambda_adv | 0.01 | 0.04 | False |" in results_page("full", tmp_path)


def test_a_grid_builds_the_cells_from_the_config():
    """``grid(cfg)``: rows that depend on the profile (DDeP's inits x label_fractions); the
    summary then follows the order the cells ran."""
    def grid(cfg):
        return tuple(Cell(f"n={n}", lambda c, s, d, n=n: {"miou": float(n)}) for n in cfg["seeds"])

    e = Experiment("t/g", "P", "T", "00_x", "intro", (), grid=grid)
    t = e.run(e.config("smoke", seeds=[2, 1]), seeds=[0])
    assert list(t["cell"]) == ["n=2", "n=1"] and list(t["miou"]) == [2.0, 1.0]
    assert [r["cell"] for r in e.summary(t)] == ["n=2", "n=1"]
    assert list(e.run(e.config("smoke", seeds=[2, 1]), seeds=[0], cells=["n=1"])["cell"]) == ["n=1"]
    with pytest.raises(ValueError, match="has no cell 'n=3'"):
        e.run(e.config("smoke", seeds=[2, 1]), seeds=[0], cells=["n=3"])
