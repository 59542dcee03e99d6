"""Run records: every notebook writes ``runs/<profile>/<notebook>/metrics.json``.

One schema for every notebook, so that tests and users read results without parsing
notebooks::

    {"notebook": "00_introduction", "profile": "quick", "seeds": [0, 1, 2],
     "runtime_s": 312.4,
     "results": {...},                      # the notebook's tables, as tidy records
     "claims": [{"id": "C1", "claim": "...", "paper": "...", "here": "...", "holds": true}]}

Claims are *computed* from results by the notebook (``holds`` is the value of a
comparison on measured numbers), never typed in.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from .cache import atomic_write_bytes, runs_root

__all__ = ["Run", "load_metrics", "mean_sd"]


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


def mean_sd(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    v = [float(x) for x in values]
    if not v:
        return float("nan"), float("nan")
    m = sum(v) / len(v)
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return m, sd


class Run:
    """Collects a notebook's results, claims and figures and writes them to its run folder."""

    def __init__(self, notebook: str, cfg: Mapping[str, Any]):
        self.notebook = notebook
        self.profile = cfg["profile"]
        self.seeds = list(cfg["seeds"])
        self.dir = Path(cfg.get("run_dir") or runs_root() / self.profile / notebook)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.t0 = time.perf_counter()
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

    def claims_frame(self):
        import pandas as pd

        df = pd.DataFrame(self.claims, columns=["id", "claim", "paper", "here", "holds"])
        df["verdict"] = df["holds"].map({True: "holds", False: "does not hold", None: "not tested"})
        return df

    def figure(self, fig, name: str) -> Path:
        from .viz import save_figure

        return save_figure(fig, self.dir, name)

    def save(self) -> Path:
        record = {
            "notebook": self.notebook, "profile": self.profile, "seeds": self.seeds,
            "runtime_s": round(time.perf_counter() - self.t0, 1),
            "results": self.results, "claims": self.claims,
            "config": _clean({k: v for k, v in self.config.items()}),
        }
        path = self.dir / "metrics.json"
        atomic_write_bytes(path, json.dumps(_clean(record), indent=1, default=str).encode())
        return path


def load_metrics(path: str | Path) -> dict:
    """Read and check a metrics.json (raises ValueError naming the missing keys)."""
    data = json.loads(Path(path).read_text())
    missing = {"notebook", "profile", "seeds", "runtime_s", "results", "claims"} - set(data)
    if missing:
        raise ValueError(f"{path} lacks keys {sorted(missing)} of the metrics schema")
    for c in data["claims"]:
        for k in ("id", "claim", "paper", "here", "holds"):
            if k not in c:
                raise ValueError(f"{path}: claim {c.get('id')} lacks {k!r}")
    return data
