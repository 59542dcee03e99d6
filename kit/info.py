"""``kit info``: this machine as the kit sees it (CPU and flags, GPU, the precision ``auto``
picks, threads, how many models ``JOBS="auto"`` trains at once) and, measured, the quick-profile
step time with the minutes each notebook should take here.
"""
from __future__ import annotations

import time
from typing import Any

import torch

from . import losses
from .config import resolve
from .jobs import auto_jobs, threads_per_job
from .machine import AUTO_ENV, amp_dtype, autocast, default_threads, native_bf16_cpu, platform_info, resolve_device
from .methods.supervised import build_model, make_model_optimizer

__all__ = ["REFERENCE", "quick_step", "median_seconds", "quick_step_ms", "info", "format_info"]

#: quick-profile notebook wall times (s, fresh model cache, 2 threads) and the quick step time
#: (ms) on the machine they were measured on; ``kit info`` scales them by the step time it
#: measures. Re-measured with ``benchmarks/bench_notebooks.py`` (see benchmarks/RESULTS.md).
REFERENCE = {
    "machine": "Intel Xeon @ 2.80GHz (Ice Lake, 2 cores) with ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2, fp32",
    "step_ms": 63.0,
    # bench_notebooks.py --shared-cache (make run's order, one fresh cache), 2026-11-29
    "notebooks_s": {"00_introduction": 201.8, "01_adaptsegnet": 339.2, "02_das3": 212.2, "03_ripu": 231.8,
                    "04_cdcl": 283.6, "05_ddep": 320.2},
}


def quick_step(amp: str = "auto", channels_last: bool = True):
    """One quick-profile supervised training step (DeepLab-v2 on the quick profile's backbone,
    batch 8 at 64x128: forward, backward, optimizer step) as a function, and its config."""
    cfg = resolve("quick", amp=amp, device="cpu")
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(cfg, 11).to(memory_format=fmt)
    opt = make_model_optimizer(cfg, model)
    x = torch.rand(cfg.batch_size, 3, *cfg.size).contiguous(memory_format=fmt)
    y = torch.randint(0, 11, (cfg.batch_size, *cfg.size))

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast("cpu", amp):
            loss = losses.seg_loss(model(x)["out"], y)
        loss.backward()
        opt.step()
    return step, cfg


def median_seconds(fn, reps: int = 7, warmup: int = 2) -> float:
    """Median wall seconds of ``fn()`` over ``reps`` calls, after ``warmup`` untimed calls."""
    import statistics

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def quick_step_ms(reps: int = 7, amp: str = "auto") -> float:
    """Median ms of one :func:`quick_step` at ``amp`` (channels_last)."""
    return 1000 * median_seconds(quick_step(amp)[0], reps)



def info(measure: bool = True) -> dict[str, Any]:
    """What ``kit info`` prints: CPU model and flags, GPU, the precision ``auto`` picks, threads,
    and (``measure``) the quick-profile step time with the minutes each notebook should take."""
    out: dict[str, Any] = {
        **platform_info(),
        "native_bf16_cpu": native_bf16_cpu(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    out["gpu_bf16"] = bool(torch.cuda.is_bf16_supported()) if out["gpu"] else None
    dev = resolve_device("auto")
    out["device"] = str(dev)
    out["auto_precision"] = "bf16" if amp_dtype(dev, "auto") == torch.bfloat16 else "fp32"
    out["cpu_auto_precision"] = "bf16" if amp_dtype("cpu", "auto") == torch.bfloat16 else "fp32"
    out["threads"] = default_threads()     # what a notebook would use; nothing is set here
    jobs = auto_jobs()
    out["jobs_auto"] = {"workers": jobs, "threads_each": threads_per_job(jobs)}
    if measure:
        ms = quick_step_ms()
        out["quick_step_ms"] = round(ms, 1)
        ref = REFERENCE
        out["reference"] = {"machine": ref["machine"], "step_ms": ref["step_ms"]}
        scale = ms / ref["step_ms"]
        out["expected_minutes"] = {nb: round(s * scale / 60, 1) for nb, s in ref["notebooks_s"].items()}
    return out


def format_info(d: dict[str, Any]) -> str:
    """``info()`` as the text ``kit info`` prints."""
    lines = [
        f"CPU           {d['cpu']} ({d['arch']}, {d['cores']} cores)",
        f"CPU flags     {' '.join(d['cpu_flags']) or '(none of interest)'}; torch kernels: {d['cpu_capability']}"
        + (f"; ONEDNN_MAX_CPU_ISA={d['onednn_max_cpu_isa']}" if d["onednn_max_cpu_isa"] else ""),
        f"native bf16   {({True: 'yes', False: 'no', None: 'unknown (decided by a micro-benchmark)'})[d['native_bf16_cpu']]}",
        f"GPU           {d['gpu'] or 'none'}" + (f" (bf16: {'yes' if d['gpu_bf16'] else 'no'})" if d["gpu"] else ""),
        f"torch         {d['torch']}; device 'auto' = {d['device']}; amp 'auto' = {d['auto_precision']}"
        + (f" (on the CPU: {d['cpu_auto_precision']})" if d["device"] != "cpu" else "")
        + (f" (set by {AUTO_ENV}={d['kit_amp_auto']})" if d.get("kit_amp_auto") else ""),
        f"threads       {d['threads']}",
    ]
    if "jobs_auto" in d:
        lines.append(f"jobs auto     {d['jobs_auto']['workers']} worker(s) x {d['jobs_auto']['threads_each']} thread(s) "
                     "(models trained at the same time: a notebook's JOBS, kit run-all / reproduce --jobs)")
    if "quick_step_ms" in d:
        lines.append(f"quick step    {d['quick_step_ms']:.1f} ms (reference: {d['reference']['step_ms']} ms on "
                     f"{d['reference']['machine']})")
        if d["expected_minutes"]:
            lines.append("expected minutes per notebook at the quick profile, in make run's order from an empty cache (the reference times scaled by the step time):")
            lines += [f"  {nb:<18} {m:5.1f}" for nb, m in d["expected_minutes"].items()]
    return "\n".join(lines)
