"""The ``kit`` command: notebooks run headless with checked parameters, failures give a
non-zero exit code, the summary reads the runs folder, ``kit train`` trains a method."""
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from kit import methods
from kit.cli import CliError, find_notebook, main, parse_params, parse_value


def _notebook(path: Path, *cells: str, params: str = 'PROFILE = "quick"\nX = 1\nSEEDS = [0]\n') -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    p = nbformat.v4.new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), p] + [nbformat.v4.new_code_cell(c) for c in cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


# writes runs/<PROFILE>/<stem>/metrics.json as the kit's notebooks do (relative to the kernel's cwd)
_METRICS = '''
import json, os, pathlib
d = pathlib.Path("runs") / PROFILE / "ok"
d.mkdir(parents=True, exist_ok=True)
rec = {"notebook": "ok", "profile": PROFILE, "seeds": SEEDS, "runtime_s": 1.5,
       "results": {"x": X, "headless": os.environ.get("KIT_HEADLESS")},
       "claims": [{"id": "C1", "claim": "x is positive", "paper": "-", "here": str(X), "holds": X > 0}]}
(d / "metrics.json").write_text(json.dumps(rec))
'''


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    nbs = tmp_path / "notebooks"
    _notebook(nbs / "00_ok.ipynb", _METRICS)
    _notebook(nbs / "01_boom.ipynb", "raise ValueError('boom in cell')", "print('never')")
    _notebook(nbs / "02_exit.ipynb", "import sys\nsys.exit(0)", "print('never')")
    return tmp_path


def test_parse_value_like_papermill():
    assert parse_value("True") is True and parse_value("False") is False and parse_value("None") is None
    assert parse_value("3") == 3 and isinstance(parse_value("3"), int)
    assert parse_value("2.5e-4") == 2.5e-4 and parse_value("-1") == -1
    assert parse_value("[0,1,2]") == [0, 1, 2] and parse_value('{"a": [1]}') == {"a": [1]}
    assert parse_value("[64, 128]") == [64, 128] and parse_value("(64, 128)") == "(64, 128)"
    assert parse_value("paper") == "paper" and parse_value("/data/x=1") == "/data/x=1"
    assert parse_value("true") == "true"  # as papermill: only True/False are booleans
    with pytest.raises(CliError, match="JSON"):
        parse_value("[1, 2")


def test_parse_params_forms():
    params, rest = parse_params([["X", "2"], ["SEEDS=[0,1]"], ["PATH", "a=b"], ["Y=1", "00_intro"]])
    assert params == {"X": 2, "SEEDS": [0, 1], "PATH": "a=b", "Y": 1} and rest == ["00_intro"]
    with pytest.raises(CliError, match="not a parameter name"):
        parse_params([["1X=2"]])


def test_find_notebook(project):
    assert find_notebook("00").name == "00_ok.ipynb"
    assert find_notebook("01_boom").name == "01_boom.ipynb"
    assert find_notebook("notebooks/02_exit.ipynb").name == "02_exit.ipynb"
    with pytest.raises(CliError, match="00_ok, 01_boom, 02_exit"):
        find_notebook("99")


def test_unknown_parameter_rejected_before_running(project, capsys):
    assert main(["run", "00_ok", "-p", "Y", "3"]) == 2
    err = capsys.readouterr().err
    assert "does not declare parameter(s) Y" in err and "PROFILE, X, SEEDS" in err
    assert not (project / "runs").exists()  # nothing was executed
    assert main(["run", "00_ok", "--profile", "smoke", "-p", "PROFILE", "paper"]) == 2


def test_params_lists_declared_parameters(project, capsys):
    assert main(["params", "00"]) == 0
    out = capsys.readouterr().out
    assert "PROFILE" in out and '"quick"' in out and "SEEDS" in out and "list" in out and "int" in out


def test_run_writes_output_and_summary(project, capsys):
    # lower-case names map onto the declared ones; -p may come before the notebook
    assert main(["run", "-p", "x=4", "-p", "seeds", "[0,1,2]", "00", "--profile", "smoke", "--cell-timeout", "60"]) == 0
    out_nb = project / "runs" / "smoke" / "00_ok.ipynb"
    assert out_nb.is_file()
    metrics = json.loads((project / "runs" / "smoke" / "ok" / "metrics.json").read_text())
    assert metrics["profile"] == "smoke" and metrics["seeds"] == [0, 1, 2]
    assert metrics["results"] == {"x": 4, "headless": "1"}
    capsys.readouterr()
    assert main(["summary", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "ok" in out and "1.5" in out and "C1 yes" in out and "1 of 1 claims hold" in out


@pytest.mark.parametrize("nb, error", [("01_boom", "ValueError: boom in cell"), ("02_exit", "SystemExit: 0")])
def test_failing_notebook_exits_nonzero(project, capsys, nb, error):
    assert main(["run", nb, "--profile", "smoke"]) == 1
    out = capsys.readouterr().out
    assert f"FAILED {nb}" in out and error in out and "cell 3" in out
    assert (project / "runs" / "smoke" / f"{nb}.ipynb").is_file()  # kept for inspection


def test_summary_reads_fake_runs_and_reports_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["summary", "--profile", "paper"]) == 1
    assert "no runs for profile 'paper'" in capsys.readouterr().out
    for name, claims in [("00_introduction", [True, True]), ("01_adaptsegnet", [True, False, None])]:
        d = tmp_path / "runs" / "paper" / name
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({
            "notebook": name, "profile": "paper", "seeds": [0], "runtime_s": 12.0, "results": {},
            "claims": [{"id": f"C{i + 1}", "claim": f"claim {i}", "paper": "p", "here": "h", "holds": h}
                       for i, h in enumerate(claims)]}))
    (tmp_path / "runs" / "paper" / "bad").mkdir()
    (tmp_path / "runs" / "paper" / "bad" / "metrics.json").write_text('{"notebook": "bad"}')
    assert main(["summary", "--profile", "paper"]) == 0
    out = capsys.readouterr().out
    assert "00_introduction" in out and "C1 yes; C2 yes" in out
    assert "C1 yes; C2 no; C3 undecided" in out
    assert "unreadable metrics.json" in out and "3 of 5 claims hold" in out


def test_run_all_continues_past_failures(project, capsys):
    (project / "notebooks" / "02_exit.ipynb").unlink()
    assert main(["run-all", "--profile", "smoke", "--jobs", "0"]) == 2
    assert "jobs must be a positive integer or 'auto', got '0'" in capsys.readouterr().err
    assert main(["run-all", "--profile", "smoke", "--jobs", "2"]) == 1   # notebooks without JOBS run without it
    out = capsys.readouterr().out
    assert "ok 00_ok" in out and "FAILED 01_boom" in out and "1 of 2 notebooks ran; failed: 01_boom" in out
    assert "1 of 1 claims hold" in out  # the summary follows


def test_registry():
    from kit.methods.base import Method

    assert {"source_only", "oracle", "adaptseg", "das3", "ripu", "cdcl", "ddep"} <= set(methods.names())
    with pytest.raises(ValueError, match="registered methods: .*source_only"):
        methods.get("nope")
    with pytest.raises(TypeError, match="Method instance"):
        methods.register(main)

    class Dummy(Method):
        name = "dummy_for_test"

    d = methods.register(Dummy())
    try:
        assert methods.get("dummy_for_test") is d and d.config == "supervised"
    finally:
        methods._REGISTRY.pop("dummy_for_test")


def test_train_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "nope"]) == 2
    assert main(["train", "source_only", "--profile", "smoke", "-p", "ITRES=2"]) == 2
    assert "Did you mean ['iters']" in capsys.readouterr().err
    assert main(["train", "source_only", "--profile", "smoke", "-p", "ITERS=2", "-p", "n_train", "8"]) == 0
    ck = tmp_path / "runs" / "smoke" / "train" / "source_only.pt"
    assert ck.is_file() and ck.with_suffix(".json").is_file()
    from kit.cache import load_checkpoint

    state, meta = load_checkpoint(ck)
    assert meta["method"] == "source_only" and meta["world_size"] == 1 and len(meta["history"]["train"]) == 2
    assert not any(k.startswith("module.") for k in state["model"])


def test_python_dash_m_kit(tmp_path):
    r = subprocess.run([sys.executable, "-m", "kit", "summary", "--profile", "quick"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "no runs for profile 'quick'" in r.stdout


def test_info_command(capsys):
    before = torch.get_num_threads()
    try:
        assert main(["info", "--no-measure"]) == 0
        out = capsys.readouterr().out
        assert "CPU" in out and "amp 'auto' =" in out and "threads" in out
        assert main(["info", "--no-measure", "--json"]) == 0
        d = json.loads(capsys.readouterr().out)
        assert d["auto_precision"] in ("fp32", "bf16") and d["threads"] >= 1
    finally:
        torch.set_num_threads(before)


def test_results_page_from_fake_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["results-page", "--profile", "full"]) == 2
    assert "no runs for profile 'full'" in capsys.readouterr().err
    assert main(["results-page", "--profile", "nope"]) == 2
    d = tmp_path / "runs" / "full" / "03_ripu"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({
        "notebook": "03_ripu", "profile": "full", "seeds": [0, 1], "runtime_s": 42.0, "date": "2026-11-29T07:00+00:00",
        "machine": {"cpu": "Test CPU", "threads": 2, "torch": "2.13.0", "cpu_capability": "AVX2", "precision": "fp32"},
        "results": {"paper_vs_here": [{"setting": "RA 2.2%", "paper": 69.6, "here": "33.8 ± 1.0"}],
                    "label_geometry": [{"unit": "point", "seed": 0, "blocks_touched": 30.0},
                                       {"unit": "point", "seed": 1, "blocks_touched": 32.0}]},
        "claims": [
            {"id": "C1", "claim": "a | b", "paper": "p", "here": "+1.0 [+0.5, +1.5]", "holds": True, "verdict": "holds"},
            {"id": "C2", "claim": "c", "paper": "p", "here": "h", "holds": None, "verdict": "undecided",
             "effects": {"x − y": {"mean": 1.0, "sd": 1.0, "n": 3, "confidence": 0.95, "verdict": "undecided"},
                         "one seed": {"mean": 2.0, "sd": None, "n": 1, "confidence": 0.95, "verdict": "undecided"},
                         "decided": {"mean": 3.0, "sd": 0.1, "n": 3, "confidence": 0.95, "verdict": "holds"}}},
            {"id": "C4", "claim": "d", "paper": "p", "here": "runs at full", "holds": None,
             "verdict": "not run at quick", "not_run": True}]}))
    assert main(["results-page", "--profile", "full"]) == 0
    page = (tmp_path / "docs" / "results-full.md").read_text()
    assert page.startswith("# Results at the `full` profile")
    assert "| holds | 1 |" in page and "| undecided | 1 |" in page and "| not run | 1 |" in page
    assert "Test CPU, 2 threads" in page and "| C1 | a \\| b | p | +1.0 [+0.5, +1.5] | holds |" in page
    assert "| RA 2.2% | 69.6 | 33.8 ± 1.0 |" in page
    assert "**Diagnosis: C2: what each annotation unit's labels cover" in page   # a diagnosis, mean over seeds
    assert "| point | 31 | 2 |" in page
    # each undecided effect with the seeds that would decide it (the decided one is not listed)
    assert "| C2 | x − y | +1 | 1 | 3 | 10 |" in page and "| C2 | one seed | 2 |  | 1 | no estimate" in page
    assert "| C2 | decided |" not in page
    assert "No run at profile `full`" in page       # the other notebooks are listed as missing


def test_results_page_shows_a_per_seed_table_over_seeds(tmp_path):
    from kit.report import results_page

    d = tmp_path / "full" / "05_ddep"
    d.mkdir(parents=True)
    rows = [{"init": i, "fraction (%)": 1.0, "seed": s, "mIoU": v}
            for i, vals in (("random init", (10.0, 12.0, 14.0)), ("DDeP", (20.0, 20.0, float("nan")))) for s, v in enumerate(vals)]
    (d / "metrics.json").write_text(json.dumps({
        "notebook": "05_ddep", "profile": "full", "seeds": [0, 1, 2], "runtime_s": 1.0, "claims": [],
        "results": {"label_fraction_curve": rows}}).replace("NaN", "null"))
    page = results_page("full", tmp_path)
    assert "(`label_fraction_curve`, mean ± sd over seeds)" in page
    assert "| random init | 1 | 12 | 2 | 3 |" in page and "| DDeP | 1 | 20 | 0 | 2 |" in page  # a missing value is left out
