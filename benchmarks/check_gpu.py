"""End-to-end checks of the kit on a CUDA device (run where a GPU is available).

1. The toy world renders the same scenes on the GPU as on the CPU: per domain and size,
   the fraction of label pixels that differ and the largest image difference.
2. Every registered trainer (``kit train METHOD``) runs on the GPU at the ``smoke``
   profile with the world rendered on the device, and its wall time.
3. Optionally (``--quick``) the supervised and AdaptSegNet trainers at the ``quick``
   profile, timed: what a notebook's training cells cost on this GPU.

Run: ``python benchmarks/check_gpu.py [--quick] [--json out.json]``. Exits non-zero if any
check fails. ``--device cpu`` runs the same code on the CPU (a dry run of the script: the
render comparison is then trivially exact).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback

import torch


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def compare_render(device: str, sizes=((64, 128), (512, 1024)), n: int = 16) -> list[dict]:
    from kit.data.world import render
    from kit.data.world_spec import DOMAINS

    rows = []
    for size in sizes:
        for d in DOMAINS:
            idx = torch.arange(n)
            ic, lc = render(d, idx, size)
            ig, lg = render(d, idx.to(device), size)
            rows.append({"domain": d, "size": f"{size[0]}x{size[1]}",
                         "label_mismatch": float((lg.cpu() != lc).float().mean()),
                         "image_max_diff": float((ig.cpu() - ic).abs().max())})
    return rows


def run_trainers(profile: str, names: list[str], run_dir: str, device: str) -> list[dict]:
    from kit import methods
    from kit.config import resolve
    from kit.fit import train

    rows = []
    for name in names:
        cfg = resolve(profile, methods.get(name).config, device=device, render_device=device,
                      run_dir=f"{run_dir}/{profile}")
        _sync(device)
        t = time.perf_counter()
        try:
            path = train(name, cfg)
            ok, err = path is not None and path.exists(), ""
        except Exception as e:  # report and go on with the next trainer
            ok, err = False, f"{type(e).__name__}: {e}"
            traceback.print_exc()
        _sync(device)
        row = {"method": name, "profile": profile, "ok": ok, "seconds": round(time.perf_counter() - t, 1), "error": err}
        if device.startswith("cuda"):
            row["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            torch.cuda.reset_peak_memory_stats(device)
        rows.append(row)
        print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="also time source_only and adaptseg at the quick profile")
    ap.add_argument("--json", default=None)
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a dry run")
    args = ap.parse_args(argv)
    dev = args.device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here: nothing to check (use --device cpu for a dry run)", file=sys.stderr)
        return 2
    from kit import methods

    name = torch.cuda.get_device_name(dev) if dev.startswith("cuda") else "CPU"
    res: dict = {"device": name, "torch": torch.__version__}
    res["render"] = compare_render(dev)
    for r in res["render"]:
        print(f"render {r['domain']:9s} {r['size']:9s} label pixels differing {100 * r['label_mismatch']:.4f}%  "
              f"max image diff {r['image_max_diff']:.2e}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        res["smoke"] = run_trainers("smoke", [n for n in methods.names() if n != "weights_file"], tmp, dev)
        if args.quick:
            res["quick"] = run_trainers("quick", ["source_only", "adaptseg"], tmp, dev)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    bad = [r for k in ("smoke", "quick") for r in res.get(k, []) if not r["ok"]]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
