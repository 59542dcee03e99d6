"""Run every benchmark and rewrite benchmarks/RESULTS.md with the measured numbers.

``python benchmarks/run_all.py [--skip-notebooks]``. Takes about half an hour with the
notebooks (each trains its models from scratch). Run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True, cwd=HERE.parent)
    if proc.returncode:
        raise RuntimeError(f"{script} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-notebooks", action="store_true")
    ap.add_argument("--notebooks-json", default=None, help="use this bench_notebooks.py --json output instead of "
                    "running the notebooks")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        world = json.loads((run("bench_world.py", "--json", f"{tmp}/w.json") and Path(f"{tmp}/w.json").read_text()))
        labels = run("bench_labels.py")
        ripu = run("bench_ripu_selection.py")
        roof = run("roofline.py")
        books = None
        if args.notebooks_json:
            books = json.loads(Path(args.notebooks_json).read_text())
        elif not args.skip_notebooks:
            run("bench_notebooks.py", "--json", f"{tmp}/n.json")
            books = json.loads(Path(f"{tmp}/n.json").read_text())
        if isinstance(books, dict):
            books = books["notebooks"]
    from kit.config import resolve

    q = resolve("quick")
    network = f"ResNet-{q.depth} layout width {q.width}"
    marker = "<!-- measured: everything below is rewritten by benchmarks/run_all.py -->"
    old = (HERE / "RESULTS.md").read_text() if (HERE / "RESULTS.md").exists() else ""
    head = old.split(marker)[0].rstrip() + "\n\n" if marker in old else "# Benchmark results\n\n"
    lines = [
        head + marker,
        "",
        f"Measured {datetime.date.today().isoformat()} by `benchmarks/run_all.py` on {platform.node() and 'this machine'}: "
        f"{os.cpu_count()} CPU cores, {world['machine']}. No GPU. `amp='auto'` = {world.get('auto_precision')} here.",
        "",
        "## Toy-world renderer vs quick-profile training",
        "",
        "| size | function | domain | batch | images/s |", "|---|---|---|---|---|",
        *[f"| {r['size']} | {r['function']} | {r['domain']} | {r['batch']} | {r['images_per_s']:.0f} |"
          for r in world["render"]],
        "",
        f"| quick-profile training step (DeepLab-v2, {network}, batch 8, 64x128) | images/s | steps/s |",
        "|---|---|---|",
        *[f"| amp={r['amp']}, channels_last={r['channels_last']} | {r['images_per_s']:.0f} | {r['steps_per_s']:.2f} |"
          for r in world["train"]],
        "",
        f"Renderer (slower domain) / training consumption at 64x128, from the tables above: "
        f"{world['ratio_render_uint8_over_train']}x for the datasets' path (`render_uint8`), "
        f"{world['ratio_render_over_train']}x for `render`.",
        "",
        "Paired rounds (the datasets' path, slower domain, and the training step at `amp='auto'` timed back to back):",
        "",
        "| round | render_uint8 images/s | training images/s | ratio |", "|---|---|---|---|",
        *[f"| {i + 1} | {r['render_uint8']:.0f} | {r['train']:.0f} | {r['ratio']}x |"
          for i, r in enumerate(world.get("paired_rounds", []))],
        "",
        f"Median paired ratio: **{world.get('paired_ratio_median', float('nan'))}x**.",
        "",
        "## Roofline of the quick step (roofline.py)",
        "",
        roof.strip(),
        "",
        "## Label reading and mapping (real-dataset readers)",
        "",
        "```", labels.strip(), "```",
        "",
        "## RIPU region selection at 1024x2048 (k=1, 2.2% budget over 5 rounds): greedy loop vs kit",
        "",
        "```", ripu.strip(), "```",
    ]
    if books is not None:
        lines += ["", "## Notebooks (fresh cache, headless)", "", "| notebook | profile | wall time (s) | ok |",
                  "|---|---|---|---|", *[f"| {r['notebook']} | {r['profile']} | {r['wall_s']} | {r['ok']} |" for r in books]]
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")
    print((HERE / "RESULTS.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
