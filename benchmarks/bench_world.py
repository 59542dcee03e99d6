"""Renderer throughput vs quick-profile training throughput.

Prints (and with ``--json`` writes) images/s of the toy-world renderer at 64x128,
256x512 and 512x1024 for the source and target domains -- both the path the datasets
use (:func:`kit.data.world.render_uint8`, a :class:`~kit.data.world.ToyWorld` chunk at a
time) and :func:`kit.data.world.render` (float images, int64 labels) -- the images/s
the quick-profile training step consumes (supervised DeepLab-v2, batch 8, fp32 with and
without channels_last, and the precision ``amp='auto'`` picks on this machine), and their ratio at 64x128.
Each timing is the median of ``--reps`` repetitions. Then ``--rounds`` paired rounds time
the datasets' path and the training step back to back and report each round's ratio, since
the speed of a shared machine drifts between measurements.

Run: ``python benchmarks/bench_world.py [--reps 9] [--json out.json] [--device cuda]``.
Numbers depend on the machine and on what else runs on it: benchmark on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from kit import losses
from kit.config import resolve
from kit.data.world import ToyWorld, render, render_uint8
from kit.machine import autocast
from kit.methods.supervised import build_model, make_model_optimizer


def time_render(domain: str, size: tuple[int, int], batch: int, reps: int, device: str = "cpu",
                fn=render_uint8) -> float:
    idx = torch.arange(batch, device=device)
    fn(domain, idx, size)          # warm-up
    times = []
    for r in range(reps):
        if device != "cpu":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn(domain, idx + (r + 1) * batch, size)
        if device != "cpu":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def time_train(amp: str, channels_last: bool, reps: int, device: str = "cpu") -> float:
    cfg = resolve("quick", amp=amp, channels_last=channels_last, device=device)
    torch.manual_seed(0)
    dev = torch.device(device)
    model = build_model(cfg, 11).to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = make_model_optimizer(cfg, model)
    bs = cfg.batch_size
    x = torch.rand(bs, 3, *cfg.size, device=dev)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 11, (bs, *cfg.size), device=dev)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(dev, amp):
            loss = losses.seg_loss(model(x)["out"], y)
        loss.backward()
        opt.step()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for _ in range(3):
        step()
    n = 10
    times = []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        for _ in range(n):
            step()
        sync()
        times.append((time.perf_counter() - t) / n)
    return bs / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--rounds", type=int, default=5, help="paired renderer/training rounds at 64x128")
    ap.add_argument("--json", default=None)
    ap.add_argument("--device", default="cpu", help="where to render and train: cpu (default) or cuda")
    args = ap.parse_args()
    from kit import machine

    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    where = (torch.cuda.get_device_name(args.device) if args.device.startswith("cuda")
             else f"{machine.cpu_model()} ({platform.machine()}; flags: {' '.join(machine.notable_cpu_flags())}"
                  f"{'; ONEDNN_MAX_CPU_ISA=' + isa if isa else ''}), {torch.get_num_threads()} torch threads")
    res = {"machine": f"{where}, torch {torch.__version__}", "device": args.device, "render": [], "train": []}
    for size, batch in (((64, 128), ToyWorld.CHUNK), ((256, 512), 32), ((512, 1024), 8)):
        for fn in (render_uint8, render):
            for domain in ("synthetic", "real"):
                ips = time_render(domain, size, batch, args.reps, args.device, fn)
                res["render"].append({"size": f"{size[0]}x{size[1]}", "function": fn.__name__, "domain": domain,
                                      "batch": batch, "images_per_s": round(ips, 1)})
                print(f"{fn.__name__:12s} {domain:9s} {size[0]:4d}x{size[1]:<5d} batch {batch:3d}: "
                      f"{ips:8.1f} images/s", flush=True)
    auto = "bf16" if machine.amp_dtype(args.device, "auto") is not None else "off"
    res["auto_precision"] = "bf16" if auto == "bf16" else "fp32"
    for amp, cl in dict.fromkeys([("off", False), ("off", True), (auto, True)]):
        ips = time_train(amp, cl, args.reps, args.device)
        res["train"].append({"amp": amp, "channels_last": cl, "images_per_s": round(ips, 1),
                             "steps_per_s": round(ips / 8, 2)})
        print(f"train quick profile amp={amp:4s} channels_last={cl!s:5s}: {ips:7.1f} images/s "
              f"({ips / 8:.2f} steps/s)", flush=True)
    t64 = max(r["images_per_s"] for r in res["train"])
    for fn in ("render_uint8", "render"):
        r64 = min(r["images_per_s"] for r in res["render"] if r["size"] == "64x128" and r["function"] == fn)
        res["ratio_render_over_train" if fn == "render" else f"ratio_{fn}_over_train"] = round(r64 / t64, 1)
        print(f"{fn} (slower domain) / fastest training consumption at 64x128: {r64 / t64:.1f}x")
    # the machine's speed drifts between measurements: time renderer and training back to
    # back in several rounds and report the ratio of each round
    rounds = []
    for _ in range(args.rounds):
        r64 = min(time_render(d, (64, 128), ToyWorld.CHUNK, args.reps, args.device) for d in ("synthetic", "real"))
        t64 = time_train(auto, True, args.reps, args.device)
        rounds.append({"render_uint8": round(r64, 1), "train": round(t64, 1), "ratio": round(r64 / t64, 1)})
        print(f"paired round: render_uint8 {r64:7.1f} images/s, training {t64:6.1f} images/s, ratio {r64 / t64:5.1f}x",
              flush=True)
    res["paired_rounds"] = rounds
    if rounds:
        ratios = sorted(r["ratio"] for r in rounds)
        res["paired_ratio_median"] = statistics.median(ratios)
        print(f"paired ratio over {len(ratios)} rounds: median {statistics.median(ratios):.1f}x "
              f"(min {ratios[0]:.1f}x, max {ratios[-1]:.1f}x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
