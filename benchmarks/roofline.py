"""Roofline of the quick-profile training step: FLOPs, achieved GFLOP/s and the CPU's peak.

For each precision (fp32, bf16 autocast) and memory layout (contiguous, channels_last) it
counts the FLOPs of one quick-profile supervised step (DeepLab-v2 on the quick profile's
ResNet layout, batch 8 at 64x128: forward, backward, optimizer) with
``torch.utils.flop_counter``, times the step (median of ``--reps``), and relates the
achieved GFLOP/s to the CPU's fp32 peak::

    peak = cores x FMA units per core x fp32 lanes per vector x 2 (multiply + add) x clock

The lanes follow the instruction set the kernels may use (16 with AVX-512, 8 with AVX2, so
``ONEDNN_MAX_CPU_ISA=AVX2`` halves the peak); FMA units per core are not readable from
``/proc/cpuinfo`` (2 on Intel server cores and Zen 3/4; give ``--fma-units`` otherwise);
the clock is the nominal one in the model name (``@ 2.80GHz``) or ``cpu MHz``. A profile of
the fp32 step then splits its time by operator class -- convolution forward, convolution
backward, BatchNorm, the rest -- and gives the convolutions' own GFLOP/s, which is what
bounds the fraction of peak.

Run: ``python benchmarks/roofline.py [--reps 15] [--json out.json]``; on a machine with
AVX-512 the AVX2 case is ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python ...``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import torch
from torch.utils.flop_counter import FlopCounterMode

from kit import info as kit_info
from kit import machine


def clock_ghz() -> float:
    m = re.search(r"@\s*([\d.]+)\s*GHz", machine.cpu_model())
    if m:
        return float(m.group(1))
    m = re.search(r"^cpu MHz\s*:\s*([\d.]+)", machine._cpuinfo(), re.M)
    return float(m.group(1)) / 1000 if m else float("nan")


def fp32_lanes() -> int:
    flags = machine.cpu_flags() or set()
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if "avx512f" in flags and not (isa and not isa.startswith("AVX512") and isa not in ("ALL", "DEFAULT")
                                   and not isa.startswith("AVX10")):
        return 16
    return 8 if "avx2" in flags or "avx" in flags else 4


def flops_of(step) -> int:
    with FlopCounterMode(display=False) as fc:
        step()
    return fc.get_total_flops()


def breakdown(step, conv_flops: int) -> dict[str, float]:
    """Share of the step's operator time per class, and the convolutions' own GFLOP/s."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2):
        step()
    n = 5
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step()
    classes = {"conv forward": 0.0, "conv backward": 0.0, "batch norm": 0.0, "optimizer": 0.0, "other": 0.0}
    for e in prof.key_averages():
        name, t = e.key, e.self_cpu_time_total
        if name in ("aten::mkldnn_convolution", "aten::_convolution", "aten::convolution", "aten::conv2d",
                    "aten::_nnpack_spatial_convolution", "aten::thnn_conv2d", "aten::_slow_conv2d_forward"):
            classes["conv forward"] += t
        elif "convolution_backward" in name or "slow_conv2d_backward" in name:
            classes["conv backward"] += t
        elif "batch_norm" in name:
            classes["batch norm"] += t
        elif "Optimizer" in name or "_fused_adam" in name or "_fused_sgd" in name:
            classes["optimizer"] += t
        else:
            classes["other"] += t
    total = sum(classes.values())
    conv_s = (classes["conv forward"] + classes["conv backward"]) / 1e6 / n
    out = {f"{k} (% of op time)": round(100 * v / total, 1) for k, v in classes.items()}
    out["conv GFLOP/s"] = round(conv_flops / conv_s / 1e9, 1) if conv_s else float("nan")
    return out


def conv_flops(step) -> int:
    with FlopCounterMode(display=False) as fc:
        step()
    return sum(v for k, v in fc.get_flop_counts()["Global"].items() if "convolution" in str(k))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--fma-units", type=int, default=2, help="FMA units per core (default 2)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    threads = machine.set_threads(args.threads) if args.threads else torch.get_num_threads()
    lanes, ghz = fp32_lanes(), clock_ghz()
    peak = threads * args.fma_units * lanes * 2 * ghz
    rows = []
    for amp, cl in (("off", False), ("off", True), ("bf16", False), ("bf16", True)):
        step, cfg = kit_info.quick_step(amp, cl)
        fl = flops_of(step)
        s = kit_info.median_seconds(step, args.reps, warmup=3)
        rows.append({"precision": "fp32" if amp == "off" else "bf16 autocast",
                     "layout": "channels_last" if cl else "contiguous",
                     "GFLOP per step": round(fl / 1e9, 2), "ms per step": round(1000 * s, 1),
                     "GFLOP/s": round(fl / s / 1e9, 1), "% of fp32 peak": round(100 * fl / s / 1e9 / peak, 1)})
    step, cfg = kit_info.quick_step("off", True)
    bd = breakdown(step, conv_flops(step))
    result = {
        "cpu": machine.cpu_model(), "flags": machine.notable_cpu_flags(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": threads, "fma_units": args.fma_units, "fp32_lanes": lanes, "clock_ghz": ghz,
        "peak_gflops_fp32": round(peak, 1), "network": f"DeepLab-v2, ResNet-{cfg.depth} layout, width {cfg.width}, "
        f"OS {cfg.output_stride}, batch 8 at {cfg.size[0]}x{cfg.size[1]}",
        "rows": rows, "fp32_channels_last_breakdown": bd,
    }
    print(f"{result['cpu']}  flags: {' '.join(result['flags'])}  kernels: {result['aten_cpu_capability']}"
          + (f"  ONEDNN_MAX_CPU_ISA={result['onednn_max_cpu_isa']}" if result["onednn_max_cpu_isa"] else ""))
    print(f"peak fp32: {threads} cores x {args.fma_units} FMA x {lanes} lanes x 2 x {ghz} GHz = {peak:.0f} GFLOP/s")
    print(f"network: {result['network']}")
    print("| precision | layout | GFLOP per step | ms per step | GFLOP/s | % of fp32 peak |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(v) for v in r.values()) + " |")
    print("fp32 + channels_last, time by operator class:", json.dumps(bd))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
