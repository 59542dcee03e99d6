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


def _children(pid: int) -> set[int]:
    import os

    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()   # after "pid (comm) "
            if int(fields[1]) == pid and fields[0] != "Z":
                out.add(int(d))
    return out


@pytest.mark.skipif(not __import__("os").path.isdir("/proc"), reason="reads /proc")
def test_workers_end_when_their_parent_is_killed():
    """A killed `kit reproduce` leaves no worker training on: each worker watches its parent."""
    import os
    import signal
    import subprocess
    import sys
    import time

    code = ("import time; from kit.jobs import Task, run_tasks; "
            "run_tasks([Task(time.sleep, (120,)), Task(time.sleep, (120,))], jobs=2, threads=2, log=None)")
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 60
        workers: set[int] = set()
        while time.time() < deadline and len(workers) < 2:
            workers = {p for p in _children(parent.pid) if b"kit.jobs" in open(f"/proc/{p}/cmdline", "rb").read()
                       or b"spawn_main" in open(f"/proc/{p}/cmdline", "rb").read()}
            time.sleep(0.2)
        assert len(workers) >= 2, "the workers did not start"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 15
        while time.time() < deadline and any(os.path.exists(f"/proc/{p}") and _alive(p) for p in workers):
            time.sleep(0.2)
        assert not any(os.path.exists(f"/proc/{p}") and _alive(p) for p in workers), "a worker outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"


def test_prefetch_notebook_checks_its_arguments():
    """A notebook's JOBS prefetch names its notebook and takes that notebook's config."""
    from kit.config import resolve

    with pytest.raises(ValueError, match="no experiment of the registry belongs to notebook 'nope'"):
        experiments.prefetch_notebook("nope", resolve("smoke", "adaptseg"), jobs=2)
    with pytest.raises(ValueError, match="fields the notebook's lacks"):
        experiments.prefetch_notebook("03_ripu", resolve("smoke", "adaptseg"), jobs=2)
    assert experiments.prefetch_notebook("03_ripu", resolve("smoke", "ripu"), jobs=1) == 0   # one job: the cells train
