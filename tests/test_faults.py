"""Faults that were silent or lost work, each as a test: the model cache under concurrent
writers, unwritable and misplaced caches, stale and malformed checkpoints, resumable runs of
another configuration, leftovers of killed writes, and modules that cannot be imported alone.

Every test here failed on the code before these faults were fixed; each name starts with the
fault it pins (the numbers of the issue that listed them): 1 real data's identity, 2 an empty
results page, 3 a RIPU run resumed across configs, 4 all-void labels, 5 a failed rerun, 6
concurrent saves, 7 an unwritable cache, 8 stale checkpoints, 9 NaN in the config, 10 malformed
files, 11 imports, 12 leftovers and permissions.
"""
from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

import kit.data.real as real
from kit import cache, experiments
from kit.cache import CheckpointError, load_checkpoint, load_or_train, save_checkpoint
from kit.cli import main, summary_rows
from kit.config import resolve, variant
from kit.data.real import Cityscapes
from kit.data.wrappers import Unlabeled
from kit.engine import Engine, make_optimizer
from kit.evaluation import evaluate
from kit.experiments import Cell, Experiment
from kit.methods.supervised import build_model, supervised_step
from kit.report import results_page, write_results_page
from kit.results import load_metrics, load_result

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# 6. concurrent writers and readers of one checkpoint
# ---------------------------------------------------------------------------------------------
def _writer(path: str, value: int, seconds: float, report) -> None:
    torch.set_num_threads(1)
    end = time.monotonic() + seconds
    n, errors = 0, []
    while time.monotonic() < end:
        try:
            save_checkpoint(path, {"w": torch.full((256,), float(value))}, {"writer": value, "n": n})
        except Exception as e:  # noqa: BLE001 - every failure of a save is a lost model
            errors.append(f"writer {value}: {type(e).__name__}: {e}")
        n += 1
    report.put((f"writer {value}", n, len(errors), errors[:3]))


def _reader(root: str, seconds: float, report) -> None:
    torch.set_num_threads(1)
    end = time.monotonic() + seconds

    def must_not_train():
        raise AssertionError("trained although another process had saved the model")

    n, errors = 0, []
    while time.monotonic() < end:
        try:
            state, meta = load_or_train("m", {"a": 1}, must_not_train, cache_dir=root, verbose=False)
            if float(state["w"][0]) != meta["writer"]:
                errors.append(f"reader: weights of writer {float(state['w'][0])} with the meta of {meta['writer']}")
        except Exception as e:  # noqa: BLE001
            errors.append(f"reader: {type(e).__name__}: {e}")
        n += 1
    report.put(("reader", n, len(errors), errors[:3]))


def test_fault6_concurrent_saves_and_a_reader_lose_nothing(tmp_path):
    """Two processes save the same checkpoint over and over while a third loads it through
    load_or_train: no save fails, the reader never sees a mixed or partial pair, never sets a
    file aside and never retrains. (Before: ~0.5% of saves raised FileNotFoundError, and a reader
    could quarantine the writers' fresh files.)"""
    path = tmp_path / f"{cache.cache_name('m', {'a': 1})}.pt"
    save_checkpoint(path, {"w": torch.full((256,), 0.0)}, {"writer": 0})
    ctx = mp.get_context("fork")
    report = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(path), v, 3.0, report)) for v in (1, 2)]
    procs.append(ctx.Process(target=_reader, args=(str(tmp_path), 3.0, report)))
    for p in procs:
        p.start()
    reports = [report.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    assert all(n > 10 for _, n, _, _ in reports), reports          # every process did work
    assert all(bad == 0 for _, _, bad, _ in reports), reports
    assert not list(tmp_path.glob("*.corrupt")) and not list(tmp_path.glob("*.tmp"))
    state, meta = load_checkpoint(path)
    assert float(state["w"][0]) == meta["writer"] in (1, 2)


def test_fault6_reader_waits_for_a_writer_instead_of_quarantining(tmp_path):
    """A reader that meets a pair mid-write (the .pt replaced, its .json not yet) waits for the
    writer's lock and loads the result; it neither sets the files aside nor trains."""
    key = cache.cache_name("m", {"a": 1})
    path = tmp_path / f"{key}.pt"
    save_checkpoint(path, {"w": torch.zeros(3)}, {"v": 0})
    released = threading.Event()

    def writer():
        with cache.key_lock(path):
            path.with_suffix(".json").unlink()          # the state inside a save: .pt written, .json not yet
            path.write_bytes(b"half of a new file")
            released.wait(5)
            save_checkpoint(path, {"w": torch.ones(3)}, {"v": 1})

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(0.2)
    trained = []
    threading.Timer(0.5, released.set).start()
    state, meta = load_or_train("m", {"a": 1}, lambda: trained.append(1) or ({}, {}), cache_dir=tmp_path,
                                verbose=False)
    t.join()
    assert not trained and meta["v"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert not list(tmp_path.glob("*.corrupt"))


def test_fault6_one_process_trains_a_key_the_others_wait_and_load(tmp_path):
    """Threads (standing in for workers) ask for the same key at once: it trains once."""
    calls = []

    def train():
        calls.append(1)
        time.sleep(0.3)
        return {"w": torch.arange(3)}, {"n": 1}

    out = []
    threads = [threading.Thread(target=lambda: out.append(load_or_train("m", {"b": 2}, train, cache_dir=tmp_path,
                                                                        verbose=False)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(out) == 3
    assert sorted(m["cached"] for _, m in out) == [False, True, True]


# ---------------------------------------------------------------------------------------------
# 7. a cache that cannot be written is found before training
# ---------------------------------------------------------------------------------------------
def _read_only(monkeypatch, root: Path) -> None:
    """Make ``root`` look unwritable to the kit (the suite may run as root, whom modes do not stop)."""
    real = os.access

    def access(p, mode, *a, **k):
        if Path(p).resolve() == root.resolve() and mode & os.W_OK:
            return False
        return real(p, mode, *a, **k)

    monkeypatch.setattr(os, "access", access)


def test_fault7_unwritable_cache_fails_before_training(tmp_path, monkeypatch):
    _read_only(monkeypatch, tmp_path)
    trained = []
    with pytest.raises(OSError, match="not writable"):
        load_or_train("m", {"a": 1}, lambda: trained.append(1) or ({}, {}), cache_dir=tmp_path, verbose=False)
    assert not trained


def test_fault7_unwritable_cache_still_serves_cached_models_and_names_corrupt_ones(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / f"{cache.cache_name('m', {'a': 1})}.pt", {"w": torch.ones(2)}, {"v": 1})
    bad = tmp_path / f"{cache.cache_name('m', {'a': 2})}.pt"
    save_checkpoint(bad, {"w": torch.ones(2)})
    bad.write_bytes(b"garbage")
    _read_only(monkeypatch, tmp_path)
    state, meta = load_or_train("m", {"a": 1}, lambda: pytest.fail("trained"), cache_dir=tmp_path, verbose=False)
    assert meta["cached"] and meta["v"] == 1
    with pytest.raises(OSError, match=f"{bad.name}.*not writable"):
        load_or_train("m", {"a": 2}, lambda: pytest.fail("trained"), cache_dir=tmp_path, verbose=False)
    assert bad.exists() and not list(tmp_path.glob("*.corrupt"))


# ---------------------------------------------------------------------------------------------
# 8. a checkpoint that no longer fits the network
# ---------------------------------------------------------------------------------------------
def test_fault8_every_key_holds_the_code_version():

    key = cache.model_key(resolve("smoke"), "supervised", seed=0)
    assert key["version"] == cache.KEY_VERSION


def test_fault8_a_checkpoint_of_another_layout_is_set_aside_and_retrained(tmp_path, capsys):
    """The cached weights of a key no longer fit the network the code builds (a layout change
    without a new key): the entry is kept aside as .stale, with what changed, and trained again
    -- not a raw load_state_dict error."""
    from kit.fit import fit

    cfg = resolve("smoke", cache_dir=str(tmp_path), iters=2)
    first = fit("source_only", cfg, 0)
    path = tmp_path / f"{first.meta['key']}.pt"
    state, meta = load_checkpoint(path)
    state["model"] = {k + "_renamed": v for k, v in state["model"].items()}
    save_checkpoint(path, state, meta)
    again = fit("source_only", cfg, 0, verbose=True)
    assert again.meta["cached"] is False
    assert "do not fit the network" in capsys.readouterr().out
    assert (tmp_path / f"{path.name}.stale").exists()
    assert fit("source_only", cfg, 0).meta["cached"] is True


def test_fault8_a_resume_checkpoint_of_another_layout_names_what_changed(tmp_path):
    """An Engine resumed from a checkpoint of another network: a CheckpointError that names the
    checkpoint and the parameters that differ, not a raw load_state_dict error."""
    def engine(width):
        net = torch.nn.Sequential(torch.nn.Conv2d(3, width, 1), torch.nn.Conv2d(width, 11, 1))
        opt = make_optimizer("sgd", net, 0.01)
        data = {"train": torch.utils.data.TensorDataset(torch.rand(4, 3, 8, 8), torch.randint(0, 11, (4, 8, 8)))}
        step = lambda batch, e: {"loss": torch.nn.functional.cross_entropy(  # noqa: E731
            e.modules["model"](batch["train"][0]), batch["train"][1])}
        return Engine({"model": net}, {"model": opt}, step, data, 2, 2, amp="off", progress=False, device="cpu",
                      checkpoint=tmp_path / "ck.pt", checkpoint_every=1)

    engine(4).run()
    with pytest.raises(CheckpointError, match=r"ck\.pt.*do not fit.*other shapes"):
        engine(5).load(tmp_path / "ck.pt")


# ---------------------------------------------------------------------------------------------
# 10. malformed cache entries and a misplaced cache get clear errors
# ---------------------------------------------------------------------------------------------
def test_fault10_metadata_that_is_not_an_object_is_a_checkpoint_error(tmp_path):
    p = save_checkpoint(tmp_path / "a.pt", {"w": torch.ones(2)})
    p.with_suffix(".json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="a.json is unreadable"):
        load_checkpoint(p)
    state, meta = load_or_train("x", {}, lambda: ({"w": torch.zeros(1)}, {}), cache_dir=tmp_path, verbose=False)
    assert meta["cached"] is False


def test_fault10_a_checkpoint_that_is_a_directory_is_a_checkpoint_error(tmp_path):
    key = cache.cache_name("x", {"a": 1})
    (tmp_path / f"{key}.pt").mkdir()
    (tmp_path / f"{key}.json").write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint(tmp_path / f"{key}.pt")
    state, meta = load_or_train("x", {"a": 1}, lambda: ({"w": torch.zeros(1)}, {}), cache_dir=tmp_path,
                                verbose=False)
    assert meta["cached"] is False and (tmp_path / f"{key}.pt.corrupt").is_dir()


def test_fault10_cache_folder_that_is_a_file_is_named(tmp_path, monkeypatch):
    f = tmp_path / "cachefile"
    f.write_text("x")
    monkeypatch.setenv("KIT_CACHE", str(f))
    with pytest.raises(OSError, match=f"{f}.*is a file"):
        load_or_train("x", {}, lambda: ({}, {}), verbose=False)


# ---------------------------------------------------------------------------------------------
# 12. leftovers of killed writes; files others can read
# ---------------------------------------------------------------------------------------------
def test_fault12_a_save_removes_the_temporary_files_of_killed_writers(tmp_path):
    path = tmp_path / "m-abc.pt"
    for name in (".m-abc.pt.k1ll3d.tmp", ".m-abc.json.k1ll3d.tmp"):
        (tmp_path / name).write_bytes(b"partial")
    (tmp_path / ".other.pt.x.tmp").write_bytes(b"another key's, maybe being written")
    save_checkpoint(path, {"w": torch.ones(1)})
    assert sorted(p.name for p in tmp_path.glob("*.tmp")) == [".other.pt.x.tmp"]


def test_fault12_cache_files_and_pages_get_the_usual_permissions(tmp_path):
    from kit.results import Run

    old = os.umask(0o022)
    try:
        p = save_checkpoint(tmp_path / "a.pt", {"w": torch.ones(1)})
        run = Run("demo", {"profile": "smoke", "seeds": [0], "run_dir": str(tmp_path / "run")})
        metrics = run.save()
    finally:
        os.umask(old)
    for f in (p, p.with_suffix(".json"), metrics):
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


# ---------------------------------------------------------------------------------------------
# 3. a resumable RIPU run folder belongs to one configuration
# ---------------------------------------------------------------------------------------------
def test_fault3_ripu_refuses_to_resume_a_run_of_another_config(tmp_path):
    from kit.data import make_da_datasets
    from kit.methods import ripu

    cfg = resolve("smoke", "ripu", cache_dir=str(tmp_path / "cache"), init="pretrained", iters=2, select_at=[0, 1])
    ds = make_da_datasets(cfg)
    run = tmp_path / "run"
    ripu.train_ripu(cfg, 0, ds, run_dir=run, checkpoint_every=1)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in run.rglob("*") if p.is_file())
    other = resolve("smoke", "ripu", cache_dir=str(tmp_path / "cache"), init="pretrained", iters=2, select_at=[0, 1],
                    lr=0.05, acquisition="random")
    with pytest.raises(CheckpointError, match="another configuration"):
        ripu.train_ripu(other, 0, ds, run_dir=run, checkpoint_every=1)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in run.rglob("*") if p.is_file()) == before
    ripu.train_ripu(cfg, 0, ds, run_dir=run, checkpoint_every=1)      # the same config resumes


# ---------------------------------------------------------------------------------------------
# 11. every module of kit imports alone, in a fresh interpreter
# ---------------------------------------------------------------------------------------------
_IMPORT_EACH = textwrap.dedent("""
    import os, pkgutil, sys, traceback
    # third-party libraries once (they are not what can go round in a circle); each kit module
    # then in its own forked child, whose sys.modules holds no module of kit
    import numpy, torch, pandas, scipy.stats, matplotlib, PIL.Image
    import kit as _k
    names = sorted(m.name for m in pkgutil.walk_packages(_k.__path__, "kit."))
    for m in [n for n in sys.modules if n == "kit" or n.startswith("kit.")]:
        del sys.modules[m]
    bad = []
    for name in names:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                __import__(name)
                os._exit(0)
            except BaseException:
                os.write(w, traceback.format_exc().splitlines()[-1].encode()[:2000])
                os._exit(1)
        os.close(w)
        msg = os.read(r, 4000).decode()
        os.close(r)
        _, status = os.waitpid(pid, 0)
        if status:
            bad.append(f"{name}: {msg}")
    print(len(names), "modules")
    print("\\n".join(bad))
    sys.exit(1 if bad else 0)
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fault11_every_kit_module_imports_alone_in_a_fresh_interpreter():
    """``import kit.data.folders`` failed in a fresh interpreter (a circular import that the
    suite hid because the tests import ``kit`` first). Every module of kit is imported alone."""
    res = subprocess.run([sys.executable, "-c", _IMPORT_EACH], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "MPLBACKEND": "Agg"}, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert int(res.stdout.split()[0]) > 50


def test_fault11_the_folder_readers_import_first():
    res = subprocess.run([sys.executable, "-c", "import kit.data.folders"], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# 9 (part). NaN and infinity have no stable identity: refused where a key is built
# ---------------------------------------------------------------------------------------------
def test_fault9_hashing_refuses_nan_with_the_fields_name():
    from kit.hashing import config_hash

    with pytest.raises(ValueError, match=r"optim\.lr = nan"):
        config_hash({"optim": {"lr": float("nan")}})
    assert config_hash({"a": 1.0}) == config_hash({"a": 1.0})


# =============================================================================================
# Runs, records and pages (faults 2, 5, 9, 10)
# =============================================================================================
PAGE_WITH_RESULTS = "# Results at the `quick` profile\n\n## 00_introduction\n\nRun 2026-01-01, seeds [0, 1, 2]\n" * 20


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder with its own runs/ and cache; the working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KIT_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("KIT_CACHE", str(tmp_path / "cache"))
    return tmp_path


def _record(path: Path, notebook: str, profile: str = "quick", holds: bool = True) -> Path:
    """A metrics.json as a notebook writes it, with one claim and one paper-vs-here row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "notebook": notebook, "profile": profile, "seeds": [0, 1], "runtime_s": 12.0, "date": "2026-01-01T07:00+00:00",
        "results": {"paper_vs_here": [{"setting": "old setting", "paper": 1.0, "here": 2.0}],
                    "main_summary": [{"method": "multi-level", "here mIoU": 30.0}]},
        "claims": [{"id": "C1", "claim": "the old claim", "paper": "p", "here": "+1.0", "holds": holds}]}))
    return path


# --- 2: a results page without results does not replace one with results -----------------------------

def _refused_page(project, capsys) -> str:
    """`kit results-page --profile quick` over a committed page with results: exit 1, the page as
    it was; returns what it printed on stderr."""
    page = project / "docs" / "results-quick.md"
    page.parent.mkdir()
    page.write_text(PAGE_WITH_RESULTS)
    assert main(["results-page", "--profile", "quick"]) == 1
    assert page.read_text() == PAGE_WITH_RESULTS
    return capsys.readouterr().err


def test_fault2_results_page_without_metrics_does_not_overwrite_the_page(project, capsys):
    (project / "runs" / "quick" / "train").mkdir(parents=True)       # after `kit train` only
    err = _refused_page(project, capsys)
    assert "kit: error: not writing docs/results-quick.md: no run at profile 'quick' has results" in err
    assert "docs/results-quick.md is left as it was" in err and "kit run-all --profile quick" in err


def test_fault2_results_page_without_results_is_not_written_where_none_exists(project):
    (project / "runs" / "quick").mkdir(parents=True)
    out = project / "docs" / "results-quick.md"
    with pytest.raises(ValueError, match=r"not writing .*results-quick\.md: no run at profile 'quick' has results"):
        write_results_page("quick", out, project / "runs")
    assert not out.exists()
    # one run with results is enough, and the other notebooks are listed as missing
    _record(project / "runs" / "quick" / "02_das3" / "metrics.json", "02_das3")
    assert write_results_page("quick", out, project / "runs") == out
    assert "the old claim" in out.read_text() and "No run at profile `quick`" in out.read_text()


# --- 5: a failed rerun marks the record of the run before it -------------------------------------------

def _notebook(path: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    params = nbformat.v4.new_code_cell('PROFILE = "quick"\nITERS = None\nRUN_DIR = None')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(c) for c in cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def test_fault5_failed_notebook_rerun_marks_the_previous_metrics(project, capsys):
    from kit.notebook_runner import run_notebook

    # the notebook's config cell rejects ITERS=abc, as kit's notebooks do (`kit run 00 -p ITERS abc`)
    _notebook(project / "notebooks" / "00_introduction.ipynb",
              "from kit.config import resolve\ncfg = resolve(PROFILE, iters=ITERS)")
    metrics = _record(project / "runs" / "smoke" / "00_introduction" / "metrics.json", "00_introduction", "smoke")
    old = json.loads(metrics.read_text())
    assert run_notebook("00", "smoke", {"ITERS": "abc"}) == 1
    out = capsys.readouterr().out
    assert "FAILED 00_introduction" in out and f"marked {metrics} as failed" in out

    m = load_metrics(metrics)
    assert m["status"] == "failed" and m["claims"] == [] and m["results"] == {}
    assert "TypeError: iters expects an integer, got 'abc'" in m["error"]
    assert m["previous"] == old                                       # nothing lost
    # the summary shows the failure, not the old claim
    (row,) = summary_rows(project / "runs" / "smoke")
    assert row["status"] == "failed" and row["claims"] == 0 and "LAST RUN FAILED" in row["headline"]
    assert main(["summary", "--profile", "smoke"]) == 0
    assert "C1 yes" not in capsys.readouterr().out
    # the results page says the last run failed and shows none of the old results
    page = results_page("smoke")
    assert "**The last run at profile `smoke` failed**" in page and "iters expects an integer" in page
    assert "the old claim" not in page and "old setting" not in page
    assert "| holds | 0 |" in page
    with pytest.raises(ValueError, match="the last run of 00_introduction failed"):
        write_results_page("smoke", project / "docs" / "results-smoke.md")
    # a notebook reading another's table gets None (with a warning), not the stale table
    with pytest.warns(UserWarning, match="last run of 00_introduction failed"):
        assert load_result(metrics, "main_summary") is None


def test_fault5_interrupted_rerun_marks_and_rejected_command_does_not(project, monkeypatch):
    import papermill

    from kit.notebook_runner import CliError, run_notebook

    _notebook(project / "notebooks" / "01_adaptsegnet.ipynb", "pass")
    metrics = _record(project / "runs" / "quick" / "01_adaptsegnet" / "metrics.json", "01_adaptsegnet")
    before = metrics.read_text()
    # a command rejected before any kernel starts runs nothing and leaves the record alone
    with pytest.raises(CliError, match="does not declare parameter"):
        run_notebook("01", "quick", {"ITRES": 5})
    assert metrics.read_text() == before

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(papermill, "execute_notebook", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_notebook("01", "quick")
    m = load_metrics(metrics)
    assert m["status"] == "failed" and "interrupted" in m["error"]
    assert m["previous"]["claims"][0]["claim"] == "the old claim"
    # a second failure keeps the last completed run as `previous`
    from kit.results import mark_failed

    mark_failed(metrics, "again")
    m = load_metrics(metrics)
    assert m["error"] == "again" and m["previous"] == json.loads(before)


def test_fault5_failed_reproduce_marks_the_previous_metrics(project, monkeypatch, capsys):
    def boom(cfg, seed, data):
        raise RuntimeError("training diverged")

    e = Experiment("test/failing", "P", "Table 9", "00_x", "intro", (Cell("a", boom),))
    monkeypatch.setitem(experiments._REGISTRY, e.id, e)
    monkeypatch.setattr(experiments, "_LOADED", True)
    metrics = _record(project / "runs" / "smoke" / "reproduce" / "test" / "failing" / "metrics.json",
                      "test/failing", "smoke")
    before = metrics.read_text()
    # an unknown parameter name is a usage error: nothing is marked
    assert main(["reproduce", "test/failing", "--profile", "smoke", "-p", "itres=2"]) == 2
    assert metrics.read_text() == before
    with pytest.raises(RuntimeError, match="training diverged"):
        experiments.reproduce("test/failing", "smoke", log=None)
    m = load_metrics(metrics)
    assert m["status"] == "failed" and "RuntimeError: training diverged" in m["error"]
    assert m["previous"] == json.loads(before)
    page = results_page("smoke")
    assert "### `test/failing`" in page and "**The last run at profile `smoke` failed**" in page
    assert "the old claim" not in page


# --- 9: NaN and infinity are refused by the config, naming the field --------------------------------

@pytest.mark.parametrize("field, value", [("lr", float("nan")), ("lr", "nan"), ("lr", float("inf")), ("lr", "-inf"),
                                          ("iters", "nan"), ("iters", float("inf")), ("seeds", [0, float("nan")])])
def test_fault9_config_refuses_nan_and_inf(field, value):
    with pytest.raises(ValueError, match=rf"^{field} must (be a finite number|hold finite numbers), got .*(nan|inf)"):
        resolve("smoke", **{field: value})


def test_fault9_variant_refuses_nan_in_a_field_without_a_default():
    cfg = resolve("smoke", "das3")
    assert cfg.atp_lr is None                                      # a field _coerce takes as given
    with pytest.raises(ValueError, match=r"atp_lr must be a finite number, got inf"):
        variant(cfg, "das3", atp_lr=math.inf)


@pytest.mark.parametrize("param", [["lr=nan"], ["LR", "inf"], ["iters=-inf"]])
def test_fault9_cli_refuses_nan_and_inf_parameters(project, capsys, param):
    assert main(["train", "source_only", "--profile", "smoke", "-p", *param]) == 2
    err = capsys.readouterr().err
    assert "kit: error: " in err and "must be a finite number, got" in err and param[0].split("=")[0].lower() in err
    assert not (project / "runs" / "smoke" / "train").exists()     # nothing trained


def test_fault9_cli_reproduce_refuses_nan_naming_the_field(project, capsys):
    assert main(["reproduce", "ripu/table4", "--profile", "smoke", "-p", "lr=nan"]) == 2
    assert "kit: error: ripu/table4: lr must be a finite number, got nan" in capsys.readouterr().err


# --- 10: a corrupt metrics.json is named, and nothing is overwritten ----------------------------------

@pytest.mark.parametrize("text, what", [('{"notebook": "00_introduction", "results": {', "is not valid JSON"),
                                        ("", "is not valid JSON"), (b"\xff\xfe{", "is not valid JSON"),
                                        ('[{"notebook": "00_introduction"}]', "holds an array, not the JSON object"),
                                        ('"metrics"', "holds a string, not the JSON object")])
def test_fault10_load_metrics_names_a_corrupt_file(tmp_path, text, what):
    path = tmp_path / "00_introduction" / "metrics.json"
    path.parent.mkdir()
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError, match="^" + str(path).replace("\\", "\\\\") + " " + what):
        load_metrics(path)
    with pytest.raises(ValueError, match=what):
        load_result(path, "main_summary")


def test_fault10_summary_and_results_page_report_a_corrupt_file(project, capsys):
    _record(project / "runs" / "quick" / "00_introduction" / "metrics.json", "00_introduction")
    bad = project / "runs" / "quick" / "01_adaptsegnet" / "metrics.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"notebook": "01_adaptsegnet", "seeds": [0, 1')          # a run cut off while writing
    assert main(["summary", "--profile", "quick"]) == 0
    out = capsys.readouterr().out
    assert f"unreadable metrics.json: {bad} is not valid JSON" in out
    assert "C1 yes" in out and "(1 unreadable)" in out
    err = _refused_page(project, capsys)
    assert "kit: error: not writing docs/results-quick.md: " in err
    assert f"{bad} is not valid JSON" in err
    assert "Traceback" not in err
    # a failed rerun leaves a corrupt file as it is, for inspection
    from kit.results import mark_failed

    assert mark_failed(bad, "boom") is None and bad.read_text().endswith("[0, 1")


# =============================================================================================
# Real data and labels (faults 1, 4, 11)
# =============================================================================================
H, W = 16, 32


@pytest.fixture(autouse=True)
def _hash_store(tmp_path, monkeypatch):
    """File hashes are remembered in a store under tmp_path, never in the user's home."""
    monkeypatch.setenv("KIT_HASH_STORE", str(tmp_path / "hash_store.json"))


def _save_png(arr: np.ndarray, path: Path) -> None:
    # uncompressed: the file's byte size depends on the image size only, never on its pixels
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="PNG", compress_level=0)


def _label(seed: int) -> np.ndarray:
    """Cityscapes label ids (0..33) at random: train ids and 255 mixed."""
    return np.random.default_rng(seed).integers(0, 34, (H, W), dtype=np.uint8)


def _cityscapes(root: Path, labels=None, split: str = "train") -> Path:
    """A fake Cityscapes split: two cities of two images each, ``labels[k]`` the label ids of item k."""
    k = 0
    for city in ("aachen", "bochum"):
        for j in range(2):
            name = f"{city}_{j:06d}_000019"
            img = np.random.default_rng(100 + k).integers(0, 256, (H, W, 3), dtype=np.uint8)
            _save_png(img, root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png")
            lbl = _label(k) if labels is None else labels[k]
            _save_png(lbl, root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png")
            k += 1
    return root


# --------------------------------------------------------------------------- fault 1: content identity


def test_fault1_fingerprint_is_the_content_not_the_byte_size(tmp_path):
    a = Cityscapes(_cityscapes(tmp_path / "a"))
    changed = [_label(k) for k in range(4)]
    changed[2] = _label(77)                       # other pixels, same byte size
    b = Cityscapes(_cityscapes(tmp_path / "b", changed))
    assert [p.stat().st_size for p in a.label_paths] == [p.stat().st_size for p in b.label_paths]
    assert a.fingerprint != b.fingerprint
    # the same content in another folder is the same dataset
    shutil.copytree(tmp_path / "a", tmp_path / "moved" / "cityscapes")
    assert Cityscapes(tmp_path / "moved" / "cityscapes").fingerprint == a.fingerprint
    assert (tmp_path / "hash_store.json").is_file()   # kept for the next process


def _rewrite(path: Path, seed: int) -> None:
    """New pixels at the same byte size. The mtime is moved on by a second: a rewrite within the
    file system's timestamp tick would otherwise keep it, and an unchanged (size, mtime, inode)
    is by design taken for an unchanged file."""
    size = path.stat().st_size
    _save_png(_label(seed), path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert path.stat().st_size == size


def test_fault1_fingerprint_sees_a_label_rewritten_in_place(tmp_path):
    ds = Cityscapes(_cityscapes(tmp_path / "cs"))
    before = ds.fingerprint
    _rewrite(ds.label_paths[1], 55)
    after = ds.fingerprint                         # the same reader sees it
    assert after != before
    assert Cityscapes(tmp_path / "cs").fingerprint == after


def test_fault1_fingerprint_reads_unchanged_files_once(tmp_path, monkeypatch):
    ds = Cityscapes(_cityscapes(tmp_path / "cs"))
    before = ds.fingerprint
    calls = []
    hash_file = real.file_sha256
    monkeypatch.setattr(real, "file_sha256", lambda p: calls.append(p) or hash_file(p))
    assert ds.fingerprint == before and not calls  # the same reader: only stat-ed


def test_fault1_oracle_is_retrained_when_a_label_changes_at_the_same_size(tmp_path):
    from kit.fit import fit

    root = _cityscapes(tmp_path / "cs")
    cfg = resolve("smoke", cache_dir=str(tmp_path / "cache"), iters=1, batch_size=2)
    first = fit("oracle", cfg, 0, {"target_train": Cityscapes(root)})
    assert fit("oracle", cfg, 0, {"target_train": Cityscapes(root)}).meta["cached"]
    _rewrite(Cityscapes(root).label_paths[0], 42)
    again = fit("oracle", cfg, 0, {"target_train": Cityscapes(root)})
    assert not again.meta["cached"] and again.meta["key"] != first.meta["key"]


# --------------------------------------------------------------------------- fault 4: all-void labels


def _void_and_labelled(n: int = 8):
    x = torch.rand(n, 3, H, W)
    void = torch.full((n, H, W), 255, dtype=torch.long)
    some = void.clone()
    some[n - 1, 0, 0] = 3                          # one labelled pixel in the whole set
    return TensorDataset(x, void), TensorDataset(x, some)


def _engine(data, iters=3, **kw):
    torch.manual_seed(0)
    model = build_model(resolve("smoke"), 11)
    opt = make_optimizer("sgd", model, 0.01)
    return Engine({"model": model}, {"model": opt}, supervised_step, data, 2, iters, amp="off",
                  progress=False, device="cpu", **kw)


def test_fault4_evaluation_of_all_void_labels_raises_naming_the_dataset():
    void, some = _void_and_labelled()
    model = build_model(resolve("smoke"), 11)
    with pytest.raises(ValueError, match=r"no labelled pixel in the 8 evaluated item\(s\) of TensorDataset of "
                                         r"8 items: every label pixel is 255"):
        evaluate(model, void, 11, batch_size=4, amp="off")
    with pytest.raises(ValueError, match=r"the 7 evaluated item\(s\) of TensorDataset of 8 items"):
        evaluate(model, some, 11, batch_size=4, amp="off", max_items=7)
    res = evaluate(model, some, 11, batch_size=4, amp="off")
    assert not np.isnan(res.miou)


def test_fault4_training_on_all_void_labels_raises_naming_the_dataset():
    void, some = _void_and_labelled()
    eng = _engine({"train": void}, iters=30)
    with pytest.raises(ValueError, match=r"training stream 'train' .* no labelled pixel in its first 20 batch\(es\) "
                                         r"\(40 items\) of TensorDataset of 8 items"):
        eng.run()
    assert eng.it == 19                            # stopped before the 20th step
    with pytest.raises(ValueError, match=r"first 3 batch\(es\)"):   # a shorter run: checked at its end
        _engine({"train": void}).run()


def test_fault4_labelled_and_unlabelled_streams_do_not_raise():
    void, some = _void_and_labelled()
    assert _engine({"train": some}, iters=8).run().train   # one labelled item of eight: legitimate
    # the domain-adaptation target and index-only streams may be void by design
    assert _engine({"train": some, "target": void}, iters=8).run().train
    assert _engine({"train": some, "images": Unlabeled(void)}, iters=8).run().train
    assert _engine({"train": some, "pool": void}, iters=8, unlabelled=("pool",)).run().train


def test_fault4_oracle_on_all_void_cityscapes_labels_raises(tmp_path):
    from kit.fit import fit

    root = _cityscapes(tmp_path / "cs", [np.zeros((H, W), np.uint8)] * 4)   # id 0 = unlabeled -> 255
    cfg = resolve("smoke", cache_dir=str(tmp_path / "cache"), iters=2, batch_size=2)
    with pytest.raises(ValueError, match=r"stream 'train' .* of Cityscapes of 4 items: Cityscapes\(.*labels in "
                                         r".*gtFine.train"):
        fit("oracle", cfg, 0, {"target_train": Cityscapes(root)})


# --------------------------------------------------------------------------- fault 11: imports


@pytest.mark.parametrize("module", ["kit.data.folders", "kit.data.real"])
def test_fault11_data_modules_import_alone(module):
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_fault11_folder_readers_have_one_home():
    import kit.data.folders as folders

    assert folders.FolderSegmentation.__module__ == "kit.data.folders"
    assert not hasattr(real, "FolderSegmentation") and not hasattr(real, "BDD100K")
