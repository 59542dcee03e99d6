"""Wall time of each notebook at a profile, run headless with a fresh model cache.

Each notebook runs through ``kit run`` (papermill) with ``CACHE_DIR`` pointing at an
empty temporary folder, so every model is trained, as on a first run. ``--shared-cache``:
one empty cache for all of them, in order, as ``make run`` on a fresh clone (the paper
notebooks then reuse the introduction's baselines). The JSON records the machine. Prints a table and
optionally writes JSON. Run on a quiet machine: ``python benchmarks/bench_notebooks.py
[--profile quick] [--only 00 01] [--json out.json] [--keep DIR]`` (``--keep`` keeps the
executed notebooks, figures and ``metrics.json`` files in DIR/<notebook>/).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--only", nargs="*", default=None, help="notebook prefixes, e.g. 00 03")
    ap.add_argument("--json", default=None)
    ap.add_argument("--keep", default=None, help="keep each notebook's outputs in KEEP/<notebook>/")
    ap.add_argument("--shared-cache", action="store_true", help="one fresh cache for all notebooks, as make run")
    args = ap.parse_args()
    books = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        books = [b for b in books if any(b.name.startswith(p) for p in args.only)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for nb in books:
            cache = Path(tmp) / ("cache" if args.shared_cache else f"cache-{nb.stem}")
            keep = Path(args.keep or tmp) / nb.stem
            out = keep if args.keep else Path(tmp) / "out"
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "kit", "run", str(nb), "--profile", args.profile,
                                   "-p", "CACHE_DIR", str(cache), "-p", "RUN_DIR", str(keep),
                                   "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
            dt = time.perf_counter() - t
            rows.append({"notebook": nb.stem, "profile": args.profile, "wall_s": round(dt, 1),
                         "ok": proc.returncode == 0})
            print(f"{nb.stem:24s} {args.profile:6s} {dt:7.1f} s  {'ok' if proc.returncode == 0 else 'FAILED'}",
                  flush=True)
            if proc.returncode:
                print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
    if args.json:
        import os

        from kit import info as kit_info

        info = kit_info.info(measure=False)
        Path(args.json).write_text(json.dumps({
            "machine": {k: info[k] for k in ("cpu", "cpu_flags", "cpu_capability", "native_bf16_cpu", "cpu_auto_precision")}
            | {"onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"), "cores": os.cpu_count()},
            "shared_cache": args.shared_cache, "total_s": round(sum(r["wall_s"] for r in rows), 1),
            "notebooks": rows}, indent=1))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
