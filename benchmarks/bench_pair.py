"""The hardware's limit for models trained at the same time: two trainings alone.

Two source-only models (the quick profile of ``intro/baselines``, seeds 0 and 1), each in its
own process with its datasets built first, timed from the first training step's start to the
last one's end (process start-up, data and evaluation excluded): once one after the other with
every core each, once both at once with half the cores each. The ratio is the most that
``--jobs 2`` can gain on this machine for these networks; ``bench_jobs.py`` measures what it
gains on a whole experiment (start-up, the last model alone, and the tables included).

    python benchmarks/bench_pair.py [--amp off] [--json out.json]
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

CHILD = r"""
import json, os, sys, time
import torch
from kit.cache import bypassed
from kit.config import resolve
from kit.data import make_da_datasets
from kit.fit import fit

seed, threads, amp, go = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
torch.set_num_threads(threads)
cfg = resolve("quick", "intro", amp=amp, progress=False, eval_every=0)
ds = make_da_datasets(cfg)
for name in ("source_train", "target_val"):
    ds[name][0]                     # rendered before the clock starts
open(go + f".ready{seed}", "w").close()
while not os.path.exists(go):
    time.sleep(0.01)
t0 = time.time()
with bypassed():
    fit("source_only", cfg, seed, ds)
print(json.dumps({"seed": seed, "start": t0, "end": time.time()}))
"""


def _pair(threads: int, amp: str, together: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        go = str(Path(tmp) / "go")
        runs = []
        seeds = (0, 1)
        if together:
            procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(s), str(threads), amp, go], cwd=ROOT,
                                      stdout=subprocess.PIPE, text=True) for s in seeds]
            while not all(os.path.exists(go + f".ready{s}") for s in seeds):
                time.sleep(0.05)
            Path(go).touch()
            runs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
            wall = max(r["end"] for r in runs) - min(r["start"] for r in runs)
        else:
            for s in seeds:
                p = subprocess.Popen([sys.executable, "-c", CHILD, str(s), str(threads), amp, go + str(s)], cwd=ROOT,
                                     stdout=subprocess.PIPE, text=True)
                while not os.path.exists(go + str(s) + f".ready{s}"):
                    time.sleep(0.05)
                Path(go + str(s)).touch()
                runs.append(json.loads(p.communicate()[0].strip().splitlines()[-1]))
            wall = sum(r["end"] - r["start"] for r in runs)
    return {"together": together, "threads_each": threads, "amp": amp, "train_s": round(wall, 1),
            "each_s": [round(r["end"] - r["start"], 1) for r in runs]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--amp", default="off", help="off (fp32) | bf16 | auto")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from kit import info

    cores = os.cpu_count() or 1
    apart = _pair(cores, args.amp, together=False)
    both = _pair(max(1, cores // 2), args.amp, together=True)
    ratio = round(apart["train_s"] / both["train_s"], 2)
    print(f"one after the other, {cores} threads each: {apart['train_s']} s {apart['each_s']}; "
          f"at once, {both['threads_each']} each: {both['train_s']} s {both['each_s']} -> {ratio}x")
    out = {"rows": [apart, both], "ratio": ratio, "machine": info.info(measure=False), "date": time.strftime("%Y-%m-%d")}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
