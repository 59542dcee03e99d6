"""The papers' experiments as data: each table or figure the notebooks reproduce, runnable
outside Jupyter (``kit reproduce ripu/table4 --profile quick``).

An :class:`Experiment` names a paper table (``id`` like ``"ripu/table4"``, the paper and the
table it reproduces), its *grid* (one cell per row of the table: a name and how to get that
cell's target mIoU for one seed), the seeds it runs (the profile's ``seeds``), the paper's
numbers, and its claims as functions over the result table. The result table has one row
per cell and seed, columns ``cell``, ``seed``, ``miou`` (and whatever else a cell records).

Each claim (:class:`Claim`) maps the table to ``{label: Effect}`` (:func:`kit.results.effect`,
paired by seed), so its verdict is holds / does not hold / undecided exactly as in the
notebooks -- which call the same claim functions. :func:`reproduce` runs an experiment and
writes ``runs/<profile>/reproduce/<paper>/<table>/metrics.json`` in the notebooks' format.
Models come from the same cache as the notebooks' (:mod:`kit.cache`), so a table a notebook
has computed is re-read in seconds, with the same numbers.

    >>> from kit import experiments
    >>> "ripu/table4" in experiments.ids()
    True
    >>> experiments.get("ripu/table4").reference
    'Table 4 (acquisition functions, region-based annotation at 2.2%)'
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..results import Effect, effect

__all__ = ["Cell", "Claim", "Experiment", "register", "get", "ids", "reproduce", "prefetch", "prefetch_notebook", "extended", "by_cell", "paired",
           "summary"]


_REGISTRY: dict[str, "Experiment"] = {}
_LOADED = False


@dataclass(frozen=True)
class Cell:
    """One row of a paper table: ``run(cfg, seed, data) -> dict`` returns at least ``miou``
    (target mIoU, %) for one seed; ``cfg`` is the experiment's resolved config, ``data`` what
    the experiment's ``data(cfg)`` built (shared by every cell and seed)."""

    name: str
    run: Callable[[Any, int, Any], Mapping[str, Any]]
    paper: float | None = None   #: the paper's number for this row, when it has one


@dataclass(frozen=True)
class Claim:
    """A claim of the paper tested on the experiment's table: ``effects(table)`` returns
    ``{label: Effect}``; the claim holds when every effect's 95% interval lies above zero."""

    id: str
    text: str
    paper: str
    effects: Callable[[Any], Mapping[str, Effect]]


@dataclass(frozen=True)
class Experiment:
    """A paper table or figure (see the module docstring)."""

    id: str
    paper: str
    reference: str
    notebook: str
    method: str
    cells: tuple[Cell, ...]
    claims: tuple[Claim, ...] = ()
    data: Callable[[Any], Any] = field(default=lambda cfg: None)
    overrides: Mapping[str, Any] = field(default_factory=dict)
    #: True when the notebook decides its own claims (same ids) on this table; False for a
    #: diagnosis whose claims are the paper's tested under changed conditions (e.g. 4x longer)
    decides: bool = True
    #: the seeds a run takes by default: ``seeds(cfg)``; None means ``cfg.seeds`` (e.g. a sweep
    #: runs on the notebook's sweep seeds)
    seeds: Callable[[Any], Sequence[int]] | None = None
    #: the cells a run takes: ``grid(cfg)`` when the rows depend on the config (e.g. DDeP's
    #: ``inits × label_fractions``); None means ``cells``, which then lists every profile's rows
    grid: Callable[[Any], Sequence[Cell]] | None = None
    #: whether the notebook trains this table's models at ``cfg`` (what its ``JOBS`` workers train
    #: ahead, :func:`prefetch_notebook`): ``in_notebook(cfg)``; None means when the table ``decides``
    in_notebook: Callable[[Any], bool] | None = None

    def config(self, profile: str = "quick", **params: Any):
        """The experiment's config: ``kit.config.resolve(profile, method, **params)`` (unknown
        names fail with suggestions, as everywhere)."""
        from ..config import resolve

        return resolve(profile, self.method, **{**self.overrides, **params})

    def run(self, cfg, seeds: Sequence[int] | None = None, cells: Sequence[str] | None = None,
            log: Callable[[str], None] | None = None):
        """The result table (pandas DataFrame: ``cell``, ``seed``, ``miou``, ...) over ``seeds``
        (default: the experiment's ``seeds(cfg)``, else ``cfg.seeds``) and ``cells`` (default all),
        in the order seed-major."""
        import pandas as pd

        seeds, chosen = self.plan(cfg, seeds, cells)
        data = self.data(cfg)
        rows = []
        for seed in seeds:
            for c in chosen:
                t = time.perf_counter()
                rec = dict(c.run(cfg, int(seed), data))
                if "miou" not in rec:
                    raise ValueError(f"{self.id}: cell {c.name!r} returned no 'miou' (got {sorted(rec)})")
                rows.append({"cell": c.name, "seed": int(seed), **rec})
                if log:
                    log(f"{self.id} | {c.name} | seed {seed}: mIoU {rec['miou']:.2f} "
                        f"({time.perf_counter() - t:.1f} s)")
        return pd.DataFrame(rows)

    def plan(self, cfg, seeds: Sequence[int] | None = None,
             cells: Sequence[str] | None = None) -> tuple[list[int], tuple[Cell, ...]]:
        """The seeds and cells a run with these arguments takes: ``seeds`` (default the
        experiment's ``seeds(cfg)``, else ``cfg.seeds``) and the cells named (default all of
        ``grid(cfg)``, else ``cells``)."""
        if seeds is None:
            seeds = self.seeds(cfg) if self.seeds is not None else cfg["seeds"]
        pool = tuple(self.grid(cfg)) if self.grid is not None else self.cells
        chosen = pool if cells is None else tuple(_named(pool, c, self.id) for c in cells)
        return [int(s) for s in seeds], chosen

    def tasks(self, cfg, seeds: Sequence[int] | None = None, cells: Sequence[str] | None = None) -> list:
        """The run's cells as :class:`kit.jobs.Task` s, one per cell and seed, cell-major (every
        seed of a row before the next row: the baselines a later row starts from come first)."""
        from ..jobs import Task

        seeds, chosen = self.plan(cfg, seeds, cells)
        return [Task(_run_cell, (self.id, dict(cfg), c.name, int(s)), name=f"{self.id} | {c.name} | seed {s}")
                for c in chosen for s in seeds]

    def prefetch(self, cfg, jobs: int | str | None = "auto", seeds: Sequence[int] | None = None,
                 cells: Sequence[str] | None = None, threads: int | None = None,
                 log: Callable[[str], None] | None = print) -> None:
        """Train (into the model cache) every model a :meth:`run` with the same arguments needs,
        ``jobs`` at a time (:func:`kit.jobs.run_ahead`); the run then loads them. With one job
        it does nothing: the run trains them itself, in the same order as ever."""
        from ..jobs import run_ahead

        run_ahead(self.tasks(cfg, seeds, cells), jobs, threads=threads, log=log)

    def cell(self, name: str) -> Cell:
        return _named(self.cells, name, self.id)

    def claim(self, id: str) -> Claim:
        for c in self.claims:
            if c.id == id:
                return c
        raise ValueError(f"{self.id} has no claim {id!r}; its claims: {[c.id for c in self.claims]}")

    def summary(self, table):
        """One row per cell: the paper's number next to our mean ± sd over seeds (in the order
        the cells ran when the experiment has a ``grid``)."""
        order = list(dict.fromkeys(table["cell"])) if self.grid is not None else [c.name for c in self.cells]
        return summary(table, {c.name: c.paper for c in self.cells}, order)


#: a worker's data per (experiment, config): built once, shared by the worker's tasks
_WORKER_DATA: dict[tuple[str, str], Any] = {}


def _run_cell(id: str, cfg: Mapping[str, Any], cell: str, seed: int) -> None:
    """One cell for one seed in a worker process (:meth:`Experiment.prefetch`): its models land
    in the cache; the record is computed again (from the cache) by the run that follows."""
    from ..config import Config

    exp = get(id)
    cfg = Config({**cfg, "progress": False})     # workers report through kit.jobs' lines, not bars
    _, (chosen,) = exp.plan(cfg, [seed], [cell])
    key = (id, cfg.hash())
    if key not in _WORKER_DATA:
        _WORKER_DATA.clear()
        _WORKER_DATA[key] = exp.data(cfg)
    chosen.run(cfg, int(seed), _WORKER_DATA[key])


def extended(cfg) -> bool:
    """``in_notebook`` of a table the notebook runs with ``extended`` on only."""
    return bool(cfg["extended"])


def _named(cells: Sequence[Cell], name: str, id: str) -> Cell:
    for c in cells:
        if c.name == name:
            return c
    raise ValueError(f"{id} has no cell {name!r}; its cells: {[c.name for c in cells]}")


def register(exp: Experiment) -> Experiment:
    """Add ``exp`` to the registry (an id may be registered once)."""
    if "/" not in exp.id:
        raise ValueError(f"experiment ids read '<paper>/<table>', got {exp.id!r}")
    if exp.id in _REGISTRY and _REGISTRY[exp.id] is not exp:
        raise ValueError(f"experiment {exp.id!r} is already registered")
    names = [c.name for c in exp.cells]
    if len(set(names)) != len(names):
        raise ValueError(f"{exp.id}: cell names repeat: {names}")
    _REGISTRY[exp.id] = exp
    return exp


def _load() -> None:
    global _LOADED
    if not _LOADED:
        # every module of this package registers its paper's experiments on import
        for m in sorted(pkgutil.iter_modules(__path__)):
            importlib.import_module(f"{__name__}.{m.name}")
        _LOADED = True


def ids() -> list[str]:
    """Every registered experiment id, sorted."""
    _load()
    return sorted(_REGISTRY)


def get(id: str) -> Experiment:
    """The experiment ``id``; an unknown id raises ValueError with the closest ones."""
    _load()
    if id not in _REGISTRY:
        close = difflib.get_close_matches(id, list(_REGISTRY), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown experiment {id!r}{hint} (known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[id]


# --- helpers over a result table ------------------------------------------------------------

def by_cell(table, cell: str, value: str = "miou", missing_ok: bool = False):
    """``value`` of one cell per seed (a Series indexed by seed); a cell without rows raises
    ValueError, or with ``missing_ok`` is an empty Series (a cell this run left out)."""
    sel = table[table["cell"] == cell]
    if sel.empty:
        if missing_ok:
            import pandas as pd

            return pd.Series(dtype=float)
        raise ValueError(f"the table has no rows for cell {cell!r}; its cells: {sorted(set(table['cell']))}")
    return sel.groupby("seed")[value].mean()


def paired(table, a: str, b: str, value: str = "miou", missing_ok: bool = False) -> Effect:
    """The effect ``a − b`` over the seeds both cells ran, paired by seed; with ``missing_ok`` a
    cell without rows counts as run on no seed (an undecided effect of n = 0) instead of an error."""
    return effect(by_cell(table, a, value, missing_ok), paired_with=by_cell(table, b, value, missing_ok))


def summary(table, paper: Mapping[str, float | None], order: Sequence[str]) -> list[dict]:
    """Rows ``cell, paper, here (mean), sd, seeds`` in ``order``; a NaN mIoU (a seed a cell does
    not run, e.g. a control run on the sweep seeds only) is left out, and so is a cell without rows."""
    from ..results import mean_sd

    rows = []
    table = table.dropna(subset=["miou"])
    for name in order:
        sel = table[table["cell"] == name]
        if sel.empty:
            continue
        m, s = mean_sd(sel["miou"])
        rows.append({"cell": name, "paper": paper.get(name), "here mIoU": round(m, 2),
                     "sd": round(s, 2) if len(sel) > 1 else None, "seeds": int(sel["seed"].nunique())})
    return rows


# --- running one outside Jupyter ------------------------------------------------------------

def prefetch(ids: Sequence[str], profile: str = "quick", params: Mapping[str, Any] | None = None,
             jobs: int | str | None = "auto", log: Callable[[str], None] | None = print,
             threads: int | None = None) -> None:
    """Train the models of several experiments into the cache in one pool of ``jobs`` workers
    (:func:`kit.jobs.run_ahead`): one start-up for all of them, and a worker that finishes one
    experiment's models goes on with the next one's. :func:`reproduce` then finds them cached."""
    from ..jobs import run_ahead

    params = dict(params or {})
    params.pop("run_dir", None)
    run_ahead([t for i in ids for t in get(i).tasks(get(i).config(profile, **params))], jobs, threads=threads,
              log=log)


def prefetch_notebook(notebook: str, cfg, jobs: int | str | None = "auto", threads: int | None = None,
                      log: Callable[[str], None] | None = print) -> int:
    """A notebook's ``JOBS``: train every model of the registry's tables that ``notebook`` runs at
    ``cfg`` (its resolved config; :attr:`Experiment.in_notebook`) ``jobs`` at a time, in one pool
    (:func:`kit.jobs.run_ahead`; ``threads``: all the workers' threads together, default the free
    cores); the notebook's cells then load them from the cache, in the same order and with the
    same keys as ever. Models the notebook trains outside the registry (its
    diagnoses) it still trains itself. With one job it does nothing. Returns the tasks run.

    >>> from kit.config import resolve
    >>> prefetch_notebook("01_adaptsegnet", resolve("smoke", "adaptseg"), jobs=1)
    0
    """
    import torch

    from ..jobs import resolve_jobs, run_ahead

    exps = [get(i) for i in ids() if get(i).notebook == notebook]
    if not exps:
        raise ValueError(f"no experiment of the registry belongs to notebook {notebook!r}; "
                         f"notebooks: {sorted({get(i).notebook for i in ids()})}")
    n = resolve_jobs(jobs)   # "auto": the free cores, sampled once
    if n == 1:
        if log and (jobs is None or str(jobs).strip().lower() == "auto"):
            log("[jobs] JOBS auto: one worker on this machine now (see `kit info`); the cells train the models "
                "one after another")
        return 0
    for e in exps:
        missing = set(e.config(cfg["profile"])) - set(cfg)
        if missing:
            raise ValueError(f"{e.id} runs method {e.method!r}, whose config has fields the notebook's lacks: "
                             f"{sorted(missing)[:5]}; pass the notebook's resolved config")
    tasks = [t for e in exps if (e.in_notebook(cfg) if e.in_notebook is not None else e.decides)
             for t in e.tasks(cfg)]
    # the workers share the notebook's threads (THREADS, else what torch uses now)
    return run_ahead(tasks, workers=n, threads=threads or torch.get_num_threads(), log=log)


def reproduce(id: str, profile: str = "quick", params: Mapping[str, Any] | None = None,
              runs_dir: str | Path | None = None, log: Callable[[str], None] | None = print,
              jobs: int | str | None = 1, threads: int | None = None) -> Path:
    """Run experiment ``id`` at ``profile`` and write its ``metrics.json`` (same schema as a
    notebook's: the per-seed table, the paper-vs-here summary, each claim with its effects
    and verdict) under ``<runs_dir>/<profile>/reproduce/<id>/``; returns the path. ``jobs``:
    train the models it needs that many at a time first (:meth:`Experiment.prefetch`; ``"auto"``:
    :func:`kit.jobs.auto_jobs`; ``threads``: the workers' threads together, default the free
    cores); the table is the same as with one.

    An unknown experiment, profile or parameter name raises ValueError and touches nothing; a
    run that fails after that (a parameter value the config rejects, an error while training,
    an interrupt) marks the experiment's previous ``metrics.json`` as failed
    (:func:`kit.results.mark_failed`) and raises the error."""
    from ..cache import runs_root
    from ..results import Run, mark_failed

    exp = get(id)
    params = dict(params or {})
    run_dir = params.pop("run_dir", None) or Path(runs_dir or runs_root()) / profile / "reproduce" / id
    # the names alone first (a None value keeps the default): a typo is a usage error, not a failed run
    exp.config(profile, **dict.fromkeys(params))
    t0 = time.perf_counter()
    try:
        cfg = exp.config(profile, run_dir=str(run_dir), **params)
        exp.prefetch(cfg, jobs, threads=threads, log=log)
        table = exp.run(cfg, log=log)
        run = Run(id, cfg)
        run.t0 = t0
        run.add("table", table)
        run.add("paper_vs_here", exp.summary(table))
        for c in exp.claims:
            try:
                effects = c.effects(table)
            except ValueError as e:   # a claim this data cannot test (e.g. no source val split)
                run.skip(c.id, c.text, c.paper, f"not testable here: {e}")
                continue
            run.claim_effect(c.id, c.text, c.paper, effects)
        run.config = {**run.config, "experiment": id, "paper": exp.paper, "reference": exp.reference,
                      "notebook": exp.notebook}
        return run.save()
    except BaseException as e:   # an interrupt too: the previous record is no longer the current one
        marked = mark_failed(Path(run_dir) / "metrics.json", f"kit reproduce {id} failed: {type(e).__name__}: {e}",
                             time.perf_counter() - t0)
        if marked is not None and log:
            log(f"[kit] marked {marked} as failed: its earlier results are no longer shown as current "
                f"(the record is kept in it under 'previous')")
        raise
