"""Models trained concurrently (kit.jobs, `kit reproduce --jobs`): the same keys and the same
weights as one after the other at the same thread count, parents before children, no model
lost or trained twice, failures reported."""
from __future__ import annotations

import pytest
import torch

from kit import experiments
from kit.cache import load_checkpoint
from kit.jobs import JobError, Task, resolve_jobs, run_tasks


def _checkpoints(root):
    return {p.name: p for p in root.glob("*.pt")}


def test_two_jobs_train_the_same_models_as_one(tmp_path):
    """adaptseg/main at smoke: the source-only and oracle baselines and the adapted models that
    start from the source-only one. Two workers with one thread each give the same cache keys as
    one process with one thread, and every weight equal."""
    exp = experiments.get("adaptseg/main")
    one, two = tmp_path / "one", tmp_path / "two"
    cfg1 = exp.config("smoke", cache_dir=str(one), seeds=[0])
    cfg2 = exp.config("smoke", cache_dir=str(two), seeds=[0])
    exp.prefetch(cfg2, jobs=2, threads=2, log=None)          # 2 workers x 1 thread
    trained = _checkpoints(two)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        table1 = exp.run(cfg1)
    finally:
        torch.set_num_threads(before)
    assert sorted(trained) == sorted(_checkpoints(one)) and len(trained) >= 3
    for name, path in trained.items():
        a, _ = load_checkpoint(path)
        b, _ = load_checkpoint(one / name)
        for part in a:
            for k, v in a[part].items():
                assert torch.equal(v, b[part][k]), f"{name}: {part}.{k} differs"
    # the run after a prefetch trains nothing and gives the same table
    mtimes = {n: p.stat().st_mtime_ns for n, p in trained.items()}
    table2 = exp.run(cfg2)
    assert {n: p.stat().st_mtime_ns for n, p in _checkpoints(two).items()} == mtimes
    assert table1["miou"].tolist() == pytest.approx(table2["miou"].tolist(), abs=1e-9)


def _fail_on(x):
    if x == 2:
        raise ValueError("task two fails")


def test_a_failed_task_is_reported_and_the_others_finish():
    with pytest.raises(JobError, match="(?s)1 of 3 task.*task two fails"):
        run_tasks([Task(_fail_on, (i,)) for i in range(3)], jobs=2, log=None)


def test_jobs_are_validated():
    assert resolve_jobs("auto", tasks=1) == 1
    for bad in (0, -1, "x", 1.5, True):
        with pytest.raises(ValueError, match="positive integer or 'auto'"):
            resolve_jobs(bad)


def _ask_for_shared_model(cache_dir: str, log: str) -> None:
    import time as _time

    from kit.cache import load_or_train

    def train():
        with open(log, "a") as f:
            f.write("trained\n")
        _time.sleep(0.5)
        return {"w": torch.arange(4)}, {}

    state, _ = load_or_train("shared", {"k": 1}, train, cache_dir=cache_dir, verbose=False)
    assert torch.equal(state["w"], torch.arange(4))


def test_workers_asking_for_one_model_train_it_once(tmp_path):
    log = tmp_path / "log.txt"
    run_tasks([Task(_ask_for_shared_model, (str(tmp_path / "cache"), str(log))) for _ in range(4)], jobs=2, log=None)
    assert log.read_text() == "trained\n"


def test_cli_reproduce_several_experiments_with_one_pool(tmp_path, monkeypatch):
    """`kit reproduce A B --jobs 2`: one pool trains both experiments' models, then each table is
    written from the cache; the baselines both use train once."""
    from kit.cli import main

    monkeypatch.setenv("KIT_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("KIT_CACHE", str(tmp_path / "cache"))
    assert main(["reproduce", "intro/baselines", "adaptseg/main", "--profile", "smoke", "--jobs", "2",
                 "-p", "seeds=[0]"]) == 0
    for i in ("intro/baselines", "adaptseg/main"):
        assert (tmp_path / "runs" / "smoke" / "reproduce" / i / "metrics.json").is_file()
    names = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "cache").glob("*.pt"))
    assert names.count("source_only") == 1 and names.count("oracle") == 1
