"""Notebook hygiene and papermill smoke runs.

Every notebook is committed without outputs, with kernelspec ``python3`` and one tagged
``parameters`` cell; each runs top to bottom at ``PROFILE="smoke"`` and writes a
``metrics.json`` in the common schema. Passing a parameter the notebook does not
declare is an error here (papermill itself only warns).
"""
from __future__ import annotations

from pathlib import Path

import nbformat
import papermill as pm
import pytest

from kit.results import load_metrics

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def run_notebook(path: Path, out: Path, **params):
    """Execute a notebook with papermill after checking every parameter is declared."""
    declared = pm.inspect_notebook(str(path))
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ValueError(f"{path.name} does not declare parameters {unknown}; it declares {sorted(declared)}")
    return pm.execute_notebook(str(path), str(out), parameters=params, kernel_name="python3",
                               progress_bar=False, cwd=str(out.parent))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"
    assert NOTEBOOKS[0].name.startswith("00_")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_clean(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs, f"{path.name}: committed with outputs"
            assert cell.execution_count is None
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    declared = pm.inspect_notebook(str(path))
    assert "PROFILE" in declared
    assert any(c.cell_type == "markdown" and "Exercises" in c.source for c in nb.cells)


def test_unknown_parameter_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="does not declare parameters"):
        run_notebook(NOTEBOOKS[0], tmp_path / "x.ipynb", PROFILE="smoke", NO_SUCH_PARAMETER=1)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_smoke_run_writes_metrics(path, tmp_path):
    """One job, then two: with JOBS=2 the registry's tables of the notebook are trained by two
    workers before its cells run, and the cache ends with the same models (keys) as with one."""
    run_dir = tmp_path / "run"
    run_notebook(path, tmp_path / f"{path.stem}.ipynb", PROFILE="smoke", JOBS=1, CACHE_DIR=str(tmp_path / "cache"),
                 RUN_DIR=str(run_dir))
    data = load_metrics(run_dir / "metrics.json")
    assert data["notebook"] == path.stem and data["profile"] == "smoke"
    assert data["results"] and data["claims"]
    for c in data["claims"]:
        assert c["holds"] in (True, False, None)
    one = _models(tmp_path / "cache")
    assert data["models"] == {"loaded": 0, "trained": len(one)}, "an empty cache: the run trained every model in it"
    check_model_keys(path.stem, one)
    check_reproduce_agrees(path.stem, data, tmp_path / "cache", tmp_path / "reproduce")

    run_notebook(path, tmp_path / f"{path.stem}-jobs.ipynb", PROFILE="smoke", JOBS=2, CACHE_DIR=str(tmp_path / "c2"),
                 RUN_DIR=str(tmp_path / "run2"))
    two = load_metrics(tmp_path / "run2" / "metrics.json")
    assert _models(tmp_path / "c2") == one
    assert two["models"]["loaded"] > 0 and two["models"]["trained"] < len(one), two["models"]
    if "EXTENDED" not in pm.inspect_notebook(str(path)):   # no diagnosis outside the registry: the cells train none
        assert two["models"]["trained"] == 0, two["models"]


def _models(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.glob("*.pt"))


#: every model each notebook trains at smoke, by cache key: a refactor must not retrain a model
KEYS = Path(__file__).parent / "data" / "smoke_model_keys.json"


def check_model_keys(notebook: str, names: list[str]) -> None:
    """The notebook's models at smoke have the keys recorded in :data:`KEYS`. A change that is
    meant to change a model (a default, a method's computation) rewrites its entry with
    ``KIT_UPDATE_KEYS=1`` and says in its commit why those models train again."""
    import json
    import os

    known = json.loads(KEYS.read_text()) if KEYS.exists() else {}
    if os.environ.get("KIT_UPDATE_KEYS") == "1":
        known[notebook] = names
        KEYS.parent.mkdir(exist_ok=True)
        KEYS.write_text(json.dumps(dict(sorted(known.items())), indent=1) + "\n")
        return
    assert notebook in known, f"no recorded keys for {notebook}: run with KIT_UPDATE_KEYS=1 once"
    assert names == known[notebook], (f"{notebook} trains other models at smoke than recorded in {KEYS.name}: "
                                      f"new {sorted(set(names) - set(known[notebook]))}, "
                                      f"gone {sorted(set(known[notebook]) - set(names))}")


def check_reproduce_agrees(notebook: str, data: dict, cache: Path, runs: Path) -> None:
    """`kit reproduce` of the notebook's registered experiments, on the notebook's cache:
    it trains nothing (same cache keys) and decides each claim with the same effects."""
    from kit import experiments

    before = sorted(p.name for p in cache.glob("*.pt"))
    nb_claims = {c["id"]: c for c in data["claims"]}
    for i in experiments.ids():
        e = experiments.get(i)
        if e.notebook != notebook or not e.decides:   # a diagnosis (e.g. cdcl/length) runs outside the notebook
            continue
        m = load_metrics(experiments.reproduce(i, "smoke", {"cache_dir": str(cache)}, runs_dir=runs, log=None))
        for c in m["claims"]:
            mine = nb_claims[c["id"]]
            assert mine.get("verdict") == c["verdict"], (i, c["id"])
            assert set(mine["effects"]) == set(c["effects"]), (i, c["id"])
            for label, eff in c["effects"].items():
                assert eff["mean"] == pytest.approx(mine["effects"][label]["mean"], abs=1e-9), (i, c["id"], label)
    assert sorted(p.name for p in cache.glob("*.pt")) == before, "reproduce trained a model the notebook had cached"


EXTENDABLE = [p for p in NOTEBOOKS if "EXTENDED" in pm.inspect_notebook(str(p))]


def test_the_paper_notebooks_declare_extended():
    assert {p.stem[:2] for p in EXTENDABLE} >= {"02", "03", "04", "05"}


@pytest.mark.slow
@pytest.mark.parametrize("path", EXTENDABLE, ids=[p.stem for p in EXTENDABLE])
def test_without_extended_the_skipped_claims_say_not_run(path, tmp_path):
    """The quick profile's path (extended off) at smoke size: the comparisons left to the
    full profile are skipped, and their claims are recorded as not run -- never as failing.
    With JOBS=2, as at quick by default on two cores: the workers train every model the cells
    need, so the cells train none."""
    run_dir = tmp_path / "run"
    run_notebook(path, tmp_path / f"{path.stem}.ipynb", PROFILE="smoke", EXTENDED=False, JOBS=2,
                 CACHE_DIR=str(tmp_path / "cache"), RUN_DIR=str(run_dir))
    data = load_metrics(run_dir / "metrics.json")
    assert data["models"]["trained"] == 0 and data["models"]["loaded"] > 0, data["models"]
    claims = data["claims"]
    skipped = [c for c in claims if c.get("verdict") == "not run at smoke"]
    assert skipped, f"{path.stem}: no claim was left to the full profile"
    assert all(c["holds"] is None and "full" in c["here"] for c in skipped)
    assert len(skipped) < len(claims)
