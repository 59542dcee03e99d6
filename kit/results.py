"""Run records: every notebook writes ``runs/<profile>/<notebook>/metrics.json``.

One schema for every notebook, so that tests and users read results without parsing
notebooks::

    {"notebook": "00_introduction", "profile": "quick", "seeds": [0, 1, 2],
     "runtime_s": 312.4,
     "results": {...},                      # the notebook's tables, as tidy records
     "claims": [{"id": "C1", "claim": "...", "paper": "...", "here": "...", "holds": true}]}

A failed run marks its notebook's previous record instead of leaving it to pass for current
(:func:`mark_failed`): ``"status": "failed"``, the error, no results and no claims, and the earlier
record whole under ``"previous"``.

Claims are *computed* from results by the notebook (``holds`` is the value of a
comparison on measured numbers), never typed in. :func:`~kit.stats.effect` turns per-seed
numbers into a mean difference with its t interval (``scipy.stats``), paired by seed where
the seeds pair, and a verdict for a claim "the effect is positive"; it and the other
statistics live in :mod:`kit.stats` (also exported here).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Mapping

from .cache import activity, activity_mark, runs_root
from .hashing import atomic_write_bytes
# the statistics live in kit/stats.py; imported here so that kit.results.effect & co. keep working
from .stats import HOLDS, VERDICTS, Effect, all_hold, effect, mean_sd, seeds_needed  # noqa: F401

__all__ = ["Effect", "FAILED", "HOLDS", "Run", "all_hold", "effect", "failed", "load_metrics", "load_result",
           "mark_failed", "mean_sd", "run_folder", "seeds_needed", "verdict"]


def _clean(x: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python numbers, tuples -> lists."""
    try:
        import numpy as np

        if isinstance(x, np.generic):
            x = x.item()
        elif isinstance(x, np.ndarray):
            x = x.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def _records(table: Any) -> list[dict]:
    if hasattr(table, "to_dict") and hasattr(table, "columns"):
        return [_clean(r) for r in table.to_dict(orient="records")]
    if isinstance(table, Mapping):
        return _clean(table)
    return [_clean(dict(r)) for r in table]


def verdict(claim: Mapping[str, Any]) -> str:
    """A claim record's verdict: its ``verdict`` (:meth:`Run.claim_effect`, :meth:`Run.skip`),
    else read from ``holds`` (records of :meth:`Run.claim` and of older runs).

    >>> verdict({"holds": None}), verdict({"holds": False}), verdict({"holds": None, "verdict": "not run at quick"})
    ('undecided', 'does not hold', 'not run at quick')
    """
    if claim.get("verdict"):
        return claim["verdict"]
    return {True: "holds", False: "does not hold"}.get(claim.get("holds"), "undecided")


def run_folder(notebook: str, profile: str, run_dir: str | Path | None = None) -> Path:
    """Where a notebook's run writes ``metrics.json`` and figures: ``run_dir`` when given (the
    ``RUN_DIR`` parameter), else ``runs/<profile>/<notebook>``."""
    return Path(run_dir or runs_root() / profile / notebook)


class Run:
    """Collects a notebook's results, claims and figures and writes them to its run folder."""

    def __init__(self, notebook: str, cfg: Mapping[str, Any]):
        self.notebook = notebook
        self.profile = cfg["profile"]
        self.seeds = list(cfg["seeds"])
        self.dir = run_folder(notebook, self.profile, cfg.get("run_dir"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.t0 = time.perf_counter()
        self._cache_mark = activity_mark()
        self.results: dict[str, Any] = {}
        self.claims: list[dict[str, Any]] = []
        self.config = dict(cfg)

    def add(self, name: str, table: Any) -> None:
        """Record a table (DataFrame, list of dicts or dict) under ``name``."""
        self.results[name] = _records(table)

    def claim(self, id: str, claim: str, paper: str, here: str, holds: bool | None) -> dict:
        """Record a claim; ``holds`` must come from a comparison of measured numbers."""
        if holds is not None and not isinstance(holds, bool):
            holds = bool(holds)
        rec = {"id": id, "claim": claim, "paper": paper, "here": here, "holds": holds}
        self.claims = [c for c in self.claims if c["id"] != id] + [rec]
        return rec

    def claim_effect(self, id: str, claim: str, paper: str, effects: Effect | Mapping[str, Effect],
                     here: str = "") -> dict:
        """Record a claim decided by effect sizes over seeds (:func:`effect`): one effect, or
        ``{label: effect}`` that must all be > 0 (:func:`all_hold`). The verdict is holds /
        does not hold / undecided, ``here`` gets each effect with its interval, and the
        record keeps the effects (``"effects"``) for the results page.

        >>> import tempfile
        >>> r = Run("demo", {"profile": "quick", "seeds": [0, 1, 2], "run_dir": tempfile.mkdtemp()})
        >>> rec = r.claim_effect("C1", "a beats b", "Table 1", {"a - b": effect([1.0, 1.5, 1.2])})
        >>> rec["holds"], rec["verdict"], rec["here"]
        (True, 'holds', 'a - b: +1.2 [+0.6, +1.9] (95% CI, one sample, 3 seeds)')
        """
        named = {"": effects} if isinstance(effects, Effect) else dict(effects)
        verdict = all_hold(named.values())
        text = "; ".join((f"{k}: " if k else "") + e.format() for k, e in named.items())
        rec = self.claim(id, claim, paper, f"{here}; {text}" if here else text, HOLDS[verdict])
        rec["verdict"] = verdict
        rec["effects"] = {k: e.as_dict() for k, e in named.items()}
        return rec

    def skip(self, id: str, claim: str, paper: str, why: str) -> dict:
        """Record a claim this run does not test, e.g. one whose runs belong to a longer
        profile (``cfg.extended`` is False at quick); its verdict reads "not run" and
        ``why`` says where it is tested.

        >>> import tempfile
        >>> r = Run("demo", {"profile": "quick", "seeds": [0], "run_dir": tempfile.mkdtemp()})
        >>> _ = r.skip("C9", "x beats y", "Table 1", "runs at PROFILE='full'")
        >>> r.claims_frame()[["id", "verdict"]].values.tolist()
        [['C9', 'not run at quick']]
        """
        rec = self.claim(id, claim, paper, why, None)
        rec["verdict"] = f"not run at {self.profile}"
        rec["not_run"] = True
        return rec

    def claims_frame(self):
        """The claims as a table with a ``verdict`` column: holds / does not hold /
        undecided (``holds`` None from a test), or "not run at <profile>" (:meth:`skip`)."""
        import pandas as pd

        df = pd.DataFrame(self.claims, columns=["id", "claim", "paper", "here", "holds"])
        df["verdict"] = [verdict(c) for c in self.claims]
        return df

    def figure(self, fig, name: str) -> Path:
        from .viz import save_figure

        return save_figure(fig, self.dir, name)

    def models(self) -> dict[str, int]:
        """The models this run took from the cache (``loaded``: trained before it, e.g. by its
        ``JOBS`` workers or another notebook) and trained itself (``trained``), counted by key."""
        seen = activity(self._cache_mark)
        return {"loaded": len(seen["loaded"] - seen["trained"]), "trained": len(seen["trained"])}

    def save(self) -> Path:
        from datetime import datetime, timezone

        from .machine import record as machine_record

        try:
            machine = machine_record(self.config.get("device", "auto"), self.config.get("amp", "auto"))
        except Exception as e:  # noqa: BLE001 -- a description of the machine must never lose the results
            machine = {"error": f"{type(e).__name__}: {e}"}
        record = {
            "notebook": self.notebook, "profile": self.profile, "seeds": self.seeds,
            "runtime_s": round(time.perf_counter() - self.t0, 1),
            "date": datetime.now(timezone.utc).isoformat(timespec="minutes"), "machine": machine,
            "models": self.models(),
            "results": self.results, "claims": self.claims,
            "config": _clean({k: v for k, v in self.config.items()}),
        }
        path = self.dir / "metrics.json"
        atomic_write_bytes(path, json.dumps(_clean(record), indent=1, default=str).encode())
        return path


_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


def load_metrics(path: str | Path) -> dict:
    """Read and check a metrics.json. Raises ValueError naming the file and what is wrong with it:
    not JSON (with the line and column), JSON but not an object, or lacking keys of the schema.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "metrics.json"
    >>> _ = p.write_text('{"notebook": "00_introduction", "results": {')
    >>> load_metrics(p)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: .../metrics.json is not valid JSON (Expecting property name ... at line 1, column 45); rerun ...
    """
    path = Path(path)
    try:
        data = json.loads(path.read_bytes())
    except json.JSONDecodeError as e:   # its message names no file
        raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                         f"{_REDO}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not valid JSON (not UTF-8 text: {e.reason} at byte {e.start}); {_REDO}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds {_JSON_TYPES.get(type(data), type(data).__name__)}, not the JSON object "
                         f"of a metrics record; {_REDO}")
    missing = {"notebook", "profile", "seeds", "runtime_s", "results", "claims"} - set(data)
    if missing:
        raise ValueError(f"{path} lacks keys {sorted(missing)} of the metrics schema")
    if not isinstance(data["results"], dict) or not isinstance(data["claims"], list):
        raise ValueError(f"{path}: 'results' must be a JSON object and 'claims' an array of the metrics schema")
    for c in data["claims"]:
        if not isinstance(c, dict):
            raise ValueError(f"{path}: a claim is {_JSON_TYPES.get(type(c), type(c).__name__)}, not a JSON object")
        for k in ("id", "claim", "paper", "here", "holds"):
            if k not in c:
                raise ValueError(f"{path}: claim {c.get('id')} lacks {k!r}")
    return data


_REDO = "rerun the notebook (or `kit reproduce` experiment) that writes it, or move the file away"

#: the ``status`` of a record whose last run failed (:func:`mark_failed`); a record without ``status`` is a
#: completed run's
FAILED = "failed"


def failed(record: Mapping[str, Any]) -> bool:
    """Whether a metrics record is that of a failed run (:func:`mark_failed`)."""
    return record.get("status") == FAILED


def mark_failed(path: str | Path, error: str, runtime_s: float | None = None) -> Path | None:
    """Mark the ``metrics.json`` at ``path`` as that of a failed run, so that no reader takes the
    results of the run before it for current ones: ``status`` "failed", the ``error`` and the
    ``date`` of the failure, no results and no claims; the record as it was is kept whole under
    ``previous`` (after a second failure, still the last completed run's). Returns the path, or
    None when nothing was marked: no file (nothing to mistake for current), or a file that is
    not a readable record (its readers report it as unreadable; it is left for inspection).

    >>> import tempfile
    >>> r = Run("demo", {"profile": "quick", "seeds": [0], "run_dir": tempfile.mkdtemp()})
    >>> _ = r.claim("C1", "a beats b", "Table 1", "+1", True)
    >>> m = load_metrics(mark_failed(r.save(), "cell 3 raised ValueError: boom"))
    >>> failed(m), m["error"], m["claims"], m["previous"]["claims"][0]["holds"]
    (True, 'cell 3 raised ValueError: boom', [], True)
    """
    from datetime import datetime, timezone

    path = Path(path)
    if not path.is_file():
        return None
    try:
        old = load_metrics(path)
    except (ValueError, OSError):
        return None
    record = {
        "notebook": old["notebook"], "profile": old["profile"], "seeds": old["seeds"],
        "runtime_s": None if runtime_s is None else round(runtime_s, 1),
        "date": datetime.now(timezone.utc).isoformat(timespec="minutes"),
        "status": FAILED, "error": error, "results": {}, "claims": [],
        "previous": old.get("previous") if failed(old) else old,
    }
    atomic_write_bytes(path, json.dumps(_clean(record), indent=1, default=str).encode())
    return path


def load_result(path: str | Path, table: str) -> Any:
    """The table ``table`` of another notebook's run (its ``metrics.json`` at ``path``), e.g.
    ``load_result("runs/quick/01_adaptsegnet/metrics.json", "main_summary")``; None when that
    notebook has not been run (no file) or its last run failed (with a warning: the results of
    the run before are not current). Raises ValueError naming the file when it is not a readable
    record, and naming the recorded tables when the run exists but lacks ``table``.
    """
    import warnings

    path = Path(path)
    if not path.exists():
        return None
    m = load_metrics(path)
    if failed(m):
        warnings.warn(f"{path}: the last run of {m['notebook']} failed ({m.get('error')}); "
                      f"its results are not used", stacklevel=2)
        return None
    results = m["results"]
    if table not in results:
        raise ValueError(f"{path} has no result {table!r}; it records {sorted(results)}")
    return results[table]

