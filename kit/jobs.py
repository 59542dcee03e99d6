"""Train independent models at the same time: ``run_tasks(tasks, jobs)``.

The kit's networks are small: one training does not keep many cores busy (two source-only
trainings at once with one thread each against one after the other with two threads each, on
two cores of an AMD EPYC: 1.32x the models per hour in fp32 on AVX2, 1.46x in native bf16;
``benchmarks/bench_pair.py``, results in ``benchmarks/RESULTS.md``). So the models an experiment
needs are trained by ``jobs`` worker processes, each with its share of the cores, through the
very same code path as one after the other: a worker calls the task's function, which loads its
model from the cache or trains and saves it (:func:`kit.cache.load_or_train`). Afterwards the
caller reads every model from the cache as it always does, so ``jobs`` changes neither a key nor
a weight: a model trained by a worker with ``t`` threads equals the one trained alone with ``t``
threads (threads change only the order of floating-point sums).

Parents before children: a task whose model starts from another (a DAS3 stage from the previous
one, AdaptSegNet from the source-only model) waits for the worker that trains that parent on the
parent's cache lock (:func:`kit.cache.key_lock`) and then loads it; tasks are handed out in the
order given, so list parents first. Workers are started with ``spawn`` (no state is inherited:
safe with OpenMP thread pools and CUDA), so a task is a module-level function and picklable
arguments (:class:`Task`).

:func:`auto_jobs` is the default a user need not tune: one worker per free core (the cores other
processes do not keep busy now), at most one per task, and no more than the memory available
holds at :data:`WORKER_MEMORY` bytes each.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

__all__ = ["Task", "run_tasks", "run_ahead", "auto_jobs", "resolve_jobs", "threads_per_job", "WORKER_MEMORY", "JobError"]

#: memory one worker may need at the toy profiles (a process with torch and the kit ~0.4 GB, the
#: toy world's uint8 image cache and one small network in training); a conservative bound
WORKER_MEMORY = 1.5 * 2**30


class JobError(RuntimeError):
    """One or more tasks failed in their workers (the message holds each one's traceback)."""


@dataclass(frozen=True)
class Task:
    """``fn(*args, **kwargs)`` in a worker: ``fn`` a module-level function (it is sent by name)."""

    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    name: str = ""

    def __str__(self) -> str:
        return self.name or f"{self.fn.__module__}.{self.fn.__qualname__}{self.args}"


def _available_memory() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def auto_jobs(tasks: int | None = None) -> int:
    """Workers for ``jobs="auto"``: the free cores (:func:`kit.machine.default_threads`), at most
    ``tasks``, and at most what the available memory holds at :data:`WORKER_MEMORY` each; >= 1."""
    from .machine import default_threads

    n = default_threads()
    mem = _available_memory()
    if mem is not None:
        n = min(n, max(1, int(mem // WORKER_MEMORY)))
    if tasks is not None:
        n = min(n, max(1, int(tasks)))
    return max(1, n)


def resolve_jobs(jobs: int | str | None, tasks: int | None = None) -> int:
    """``jobs`` as a number of workers: an int >= 1 as given, ``"auto"`` / None :func:`auto_jobs`.

    >>> resolve_jobs(3), resolve_jobs("2")
    (3, 2)
    >>> resolve_jobs(0)
    Traceback (most recent call last):
    ...
    ValueError: jobs must be a positive integer or 'auto', got 0
    """
    if jobs is None or (isinstance(jobs, str) and jobs.strip().lower() == "auto"):
        return auto_jobs(tasks)
    try:
        n = int(jobs)
    except (TypeError, ValueError):
        n = 0
    if isinstance(jobs, bool) or n < 1 or (isinstance(jobs, float) and jobs != n):
        raise ValueError(f"jobs must be a positive integer or 'auto', got {jobs!r}")
    return n


def threads_per_job(jobs: int, threads: int | None = None) -> int:
    """Each worker's share of ``threads`` (default: the free cores), at least one."""
    from .machine import default_threads

    total = default_threads() if threads is None else int(threads)
    return max(1, total // max(1, int(jobs)))


def _exit_with_parent(parent: int, every: float = 1.0) -> None:
    """In a worker: end the process once the process that started it is gone (killed, say), so
    that no orphan goes on training. A daemon thread that polls the parent's pid."""
    import threading

    def watch():
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, name="kit-jobs-parent-watch", daemon=True).start()


def _worker(tasks: Sequence[Task], queue, results, threads: int, parent: int | None = None) -> None:
    import torch

    if parent is not None:
        _exit_with_parent(parent)
    torch.set_num_threads(threads)
    while True:
        i = queue.get()
        if i is None:
            return
        t0 = time.perf_counter()
        try:
            tasks[i].fn(*tasks[i].args, **tasks[i].kwargs)
            results.put((i, None, time.perf_counter() - t0))
        except BaseException as e:  # noqa: BLE001 - reported to the parent with its traceback
            results.put((i, f"{type(e).__name__}: {e}\n{traceback.format_exc()}", time.perf_counter() - t0))
            if isinstance(e, KeyboardInterrupt):
                return


def run_tasks(tasks: Sequence[Task], jobs: int | str | None = 1, threads: int | None = None,
              log: Callable[[str], None] | None = print) -> list[float]:
    """Run every task, ``jobs`` at a time, each worker with :func:`threads_per_job` threads; returns
    each task's seconds. ``jobs=1`` runs them here, one after the other (with ``threads`` threads
    when given). A failed task does not stop the others; :class:`JobError` then lists every
    failure. A worker that dies (killed, out of memory) is an error naming its task."""
    tasks = list(tasks)
    n = resolve_jobs(jobs, len(tasks))
    if not tasks:
        return []
    if n == 1:
        import torch

        before = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(int(threads))
        times = []
        try:
            for t in tasks:
                t0 = time.perf_counter()
                t.fn(*t.args, **t.kwargs)
                times.append(time.perf_counter() - t0)
        finally:
            torch.set_num_threads(before)
        return times
    each = threads_per_job(n, threads)
    if log:
        log(f"[jobs] {len(tasks)} tasks in {n} workers, {each} thread(s) each")
    ctx = mp.get_context("spawn")
    queue, results = ctx.Queue(), ctx.Queue()
    for i in range(len(tasks)):
        queue.put(i)
    for _ in range(n):
        queue.put(None)
    workers = [ctx.Process(target=_worker, args=(tasks, queue, results, each, os.getpid()), daemon=True)
               for _ in range(n)]
    for w in workers:
        w.start()
    times: list[float] = [float("nan")] * len(tasks)
    errors: list[str] = []
    done = 0
    try:
        while done < len(tasks):
            try:
                i, err, secs = results.get(timeout=1.0)
            except Exception:  # noqa: BLE001 - queue.Empty: check that the workers are alive
                if all(not w.is_alive() for w in workers):
                    missing = [str(tasks[i]) for i in range(len(tasks)) if times[i] != times[i]]
                    raise JobError(f"every worker stopped with {len(missing)} task(s) unfinished ({missing[:5]}); "
                                   f"exit codes {[w.exitcode for w in workers]} (killed, or out of memory?)") from None
                continue
            done += 1
            times[i] = secs
            if err is not None:
                errors.append(f"task {tasks[i]} failed: {err}")
                if log:
                    log(f"[jobs] {tasks[i]} FAILED after {secs:.1f} s: {err.splitlines()[0]}")
            elif log:
                log(f"[jobs] {done}/{len(tasks)} {tasks[i]} ({secs:.1f} s)")
    finally:
        for w in workers:
            w.join(timeout=5)
            if w.is_alive():
                w.terminate()
    if errors:
        raise JobError(f"{len(errors)} of {len(tasks)} task(s) failed:\n" + "\n".join(errors))
    return times


def run_ahead(tasks: Sequence[Task], jobs: int | str | None = "auto", threads: int | None = None,
              log: Callable[[str], None] | None = print, workers: int | None = None) -> int:
    """Train ``tasks`` ahead of a caller that then loads their models from the cache: in a pool of
    workers when ``jobs`` (``"auto"`` sampled once here; ``workers``: already resolved) gives more
    than one for these tasks, else not at all (the caller trains them itself, in its own order).
    Returns the number of tasks run."""
    tasks = list(tasks)
    n = min(workers if workers is not None else resolve_jobs(jobs), len(tasks))
    if n <= 1:
        return 0
    run_tasks(tasks, n, threads=threads, log=log)
    return len(tasks)
