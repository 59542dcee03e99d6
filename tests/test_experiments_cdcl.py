"""CDCL's main table in the experiments registry (kit/experiments/cdcl.py): its cells, the claims
C2 and C3 on small synthetic tables, the notebook-to-registry table, and what each cell asks of
kit.fit.fit / kit.methods.cdcl (with fit / evaluate_cdcl replaced: no training here)."""
import types

import pandas as pd
import pytest

from kit import experiments
from kit.experiments.cdcl import PER, datasets_of, registry_table
from kit.methods.base import Fitted
from kit.results import all_hold

NAMES = ["city_a", "city_b", "city_c"]


def table(values: dict[str, dict[str, list[float]]]) -> pd.DataFrame:
    """{cell: {dataset: [mIoU per seed]}} -> the registry's table (per-dataset columns)."""
    rows = []
    for cell, per in values.items():
        for s in range(len(next(iter(per.values())))):
            cols = {PER + n: vs[s] for n, vs in per.items()}
            rows.append({"cell": cell, "seed": s, "miou": sum(cols.values()) / len(cols), **cols})
    return pd.DataFrame(rows)


BASE = {n: [30.0, 31.0, 32.0] for n in NAMES}


def test_cells_claims_and_paper_numbers():
    e = experiments.get("cdcl/main")
    assert e.notebook == "04_cdcl" and e.method == "cdcl"
    assert [c.name for c in e.cells] == ["single-dataset", "fine-tuning", "label remapping", "DAT + DAB"]
    assert all(c.paper is None for c in e.cells)   # the notebook states gains (in C2's text), not rows
    assert [c.id for c in e.claims] == ["C2", "C3"]
    assert "+5.65 / +6.57 / +5.79" in e.claim("C2").paper


@pytest.mark.parametrize("dat, verdict", [
    ([40, 41, 42], "holds"),          # DAT above every baseline on every dataset and seed
    ([20, 21, 22], "does not hold"),  # below every one
    ([30, 36, 31], "undecided"),      # straddles
])
def test_c2_c3_on_synthetic_tables(dat, verdict):
    t = table({"single-dataset": BASE, "fine-tuning": {n: [30.5, 31, 32.5] for n in NAMES},
               "label remapping": {n: [31, 30, 32] for n in NAMES}, "DAT + DAB": {n: dat for n in NAMES}})
    e = experiments.get("cdcl/main")
    c2, c3 = e.claim("C2").effects(t), e.claim("C3").effects(t)
    assert list(c2) == [f"{n}: DAT − single" for n in NAMES]
    assert list(c3) == [f"{n}: DAT − {b}" for b in ("fine-tuning", "label remapping") for n in NAMES]
    assert all(x.paired and x.n == 3 for x in [*c2.values(), *c3.values()])
    assert all_hold(c2.values()) == verdict and all_hold(c3.values()) == verdict


def test_c2_needs_every_dataset():
    dat = {**{n: [40, 41, 42] for n in NAMES}, "city_c": [20, 21, 22]}   # worse on one dataset
    t = table({"single-dataset": BASE, "DAT + DAB": dat})
    effects = experiments.get("cdcl/main").claim("C2").effects(t)
    assert effects["city_a: DAT − single"].mean == pytest.approx(10.0)
    assert all_hold(effects.values()) == "does not hold"
    with pytest.raises(ValueError, match="per-dataset columns"):
        datasets_of(t[["cell", "seed", "miou"]])


def test_registry_table_from_the_notebook_records():
    long = pd.DataFrame([{"setting": "three datasets", "method": m, "dataset": n, "seed": s, "miou": 10 * k + i + s}
                         for s in (0, 1) for k, m in enumerate(("single-dataset", "DAT + DAB"))
                         for i, n in enumerate(["city_b", "city_a"])])
    t = registry_table(long)
    assert list(t.columns) == ["cell", "seed", "miou", "miou:city_b", "miou:city_a"]
    assert datasets_of(t) == ["city_b", "city_a"]   # the notebook's order, not sorted
    row = t[(t.cell == "DAT + DAB") & (t.seed == 1)].iloc[0]
    assert row["miou:city_a"] == 12 and row["miou"] == 11.5


@pytest.mark.parametrize("cell, calls", [
    ("single-dataset", [("single", ["city_a"], None), ("single", ["city_b"], None), ("single", ["city_c"], None)]),
    ("fine-tuning", [("finetune", ["city_a"], "city_b"), ("finetune", ["city_b"], "city_a"),
                     ("finetune", ["city_c"], "city_a")]),
    ("label remapping", [("remap", NAMES, None)]),
    ("DAT + DAB", [("dat", NAMES, None)]),
])
def test_cells_call_the_notebooks_models(monkeypatch, cell, calls):
    import kit.fit
    from kit import methods
    from kit.methods import cdcl

    seen = []

    def load(method, cfg, seed=0, data=None, verbose=False, **spec):
        assert method == "cdcl" and set(spec) <= set(methods.get(method).spec)
        spec = {**methods.get(method).spec, **spec}
        seen.append((spec["kind"], list(spec["names"]), spec["init"]))
        assert seed == 1 and data == "DS" and verbose is False
        return Fitted(method, spec["kind"], {})

    def evaluate(model, kind, names, datasets, cfg):
        assert model == kind and datasets == "DS"
        return {n: types.SimpleNamespace(miou=10.0 * (NAMES.index(n) + 1)) for n in names}

    monkeypatch.setattr(kit.fit, "fit", load)
    monkeypatch.setattr(cdcl, "evaluate_cdcl", evaluate)
    e = experiments.get("cdcl/main")
    rec = e.cell(cell).run(e.config("smoke"), 1, "DS")
    assert seen == calls
    assert rec == {"miou": 20.0, "miou:city_a": 10.0, "miou:city_b": 20.0, "miou:city_c": 30.0}


def test_data_rejects_one_dataset():
    e = experiments.get("cdcl/main")
    with pytest.raises(ValueError, match="two or three"):
        e.data(e.config("smoke", datasets=["city_a"]))


def test_length_experiment_trains_every_model_longer(monkeypatch):
    """cdcl/length: the main table's cells with iters and ft_iters times LONG (the notebook's 8b)."""
    import kit.fit
    from kit import methods
    from kit.experiments import cdcl as ex
    from kit.methods import cdcl as m

    seen = []

    class R:
        miou = 1.0

    def load(method, cfg, seed=0, data=None, verbose=False, **spec):
        assert method == "cdcl" and set(spec) <= set(methods.get(method).spec)
        seen.append((spec["kind"], cfg["iters"], cfg["ft_iters"]))
        return Fitted(method, "model", {})

    monkeypatch.setattr(kit.fit, "fit", load)
    monkeypatch.setattr(m, "evaluate_cdcl", lambda model, kind, names, ds, cfg: {n: R() for n in names})
    exp = experiments.get("cdcl/length")
    cfg = exp.config("smoke")
    exp.run(cfg, seeds=[0])
    assert {k for k, _, _ in seen} == {"single", "finetune", "remap", "dat"}
    assert all(it == ex.LONG * cfg.iters and ft == ex.LONG * cfg.ft_iters for _, it, ft in seen)
    assert [c.id for c in exp.claims] == ["C2", "C3"]
    assert not exp.decides and experiments.get("cdcl/main").decides   # a diagnosis, not the notebook's C2/C3
