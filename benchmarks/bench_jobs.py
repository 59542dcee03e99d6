"""Models per hour with models trained concurrently (``kit reproduce --jobs``).

The benchmark set: the registry's ``intro/baselines`` (source-only and oracle) and
``adaptseg/main`` (the baselines again, from the cache, and the adapted models that start from
the source-only one) at a profile, trained from an empty cache, once with ``--jobs 1`` (every
core in one process) and once with ``--jobs N`` (N workers, each with its share of the cores).
Each configuration runs in a fresh process (``kit reproduce``) with its own empty cache and
the precision given (``-p AMP``); the figure is models trained per hour of wall time.

    python benchmarks/bench_jobs.py [--profile quick] [--jobs 1 2] [--amp off] [--json out.json]

Run it on a quiet machine; for the slowest supported machine, limit the kernels to AVX2:
``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/bench_jobs.py --amp off``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SET = ("intro/baselines", "adaptseg/main")


def run(profile: str, jobs: str, amp: str, seeds: str | None, exps=SET, threads: int | None = None) -> dict:
    threads = threads or os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "KIT_CACHE": str(Path(tmp) / "cache"), "KIT_RUNS": str(Path(tmp) / "runs")}
        # every core, stated: a sample of the busy cores at start-up (the default) can catch a
        # moment of system work and halve the threads of one configuration
        cmd = [sys.executable, "-m", "kit", "reproduce", *exps, "--profile", profile, "--jobs", jobs, "-p", f"amp={amp}",
               "-p", f"threads={threads}"]
        if seeds:
            cmd += ["-p", f"seeds={seeds}"]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        models = len(list((Path(tmp) / "cache").glob("*.pt")))
    return {"jobs": jobs, "amp": amp, "threads": threads, "wall_s": round(wall, 1), "models": models,
            "models_per_hour": round(models / wall * 3600, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--jobs", nargs="+", default=["1", "2"])
    ap.add_argument("--amp", default="off", help="off (fp32) | bf16 | auto")
    ap.add_argument("--seeds", default=None, help="override the profile's seeds, e.g. [0,1]")
    ap.add_argument("--set", nargs="+", default=list(SET), help=f"the experiments (default {' '.join(SET)})")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from kit import info

    rows = [run(args.profile, j, args.amp, args.seeds, args.set) for j in args.jobs]
    base = rows[0]["models_per_hour"]
    for r in rows:
        r["vs_first"] = round(r["models_per_hour"] / base, 2)
        print(f"jobs {r['jobs']:>4}  amp {r['amp']:<4}  {r['models']} models in {r['wall_s']:7.1f} s  "
              f"{r['models_per_hour']:7.1f} models/h  ({r['vs_first']:.2f}x)")
    out = {"set": args.set, "seeds": args.seeds, "profile": args.profile, "machine": info.info(measure=False), "rows": rows,
           "date": time.strftime("%Y-%m-%d")}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
