"""The machine the kit runs on: device, precision, CPU threads (``kit info`` reports them: :mod:`kit.info`).

**Precision** (``amp``): ``"auto"`` uses bf16 autocast only where it is *faster* than fp32:

* CUDA with bf16 support (Ampere and newer);
* a CPU whose oneDNN kernels run bf16 natively: x86 with AVX512-BF16 or AMX, unless
  ``ONEDNN_MAX_CPU_ISA`` / ``ATEN_CPU_CAPABILITY`` restrict the kernels below that;
* an ambiguous CPU (not x86, or flags that cannot be read): a one-off micro-benchmark
  (a small conv net, forward and backward, fp32 against bf16 autocast), whose verdict is
  cached per machine in ``~/.cache/kit/precision.json`` (``$KIT_MACHINE_CACHE``).

Everywhere else ``auto`` is fp32. Without native kernels bf16 is emulated: on an AVX2-only
CPU (AMD EPYC) the quick training step measured 1144 ms in bf16 against 79 ms in fp32.
``"bf16"`` forces bf16 autocast, ``"off"`` forces fp32. ``$KIT_AMP_AUTO`` (``bf16`` / ``fp32``)
overrides what ``auto`` means on a CPU (:func:`auto_is_bf16`): ``make test`` runs the unit tests
once with ``bf16`` so that no test assumes ``auto`` is fp32 on the machine it happens to run on.

**Threads**: :func:`set_threads` uses every core unless other processes are busy *right
now* (sampled from ``/proc/stat`` while this process sleeps): OpenMP threads that share
cores with other work wait for each other at every barrier (two threads on two cores with
one busy process measured 2.4x slower than one thread, fp32).
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["resolve_device", "cpu_model", "cpu_flags", "notable_cpu_flags", "default_threads", "native_bf16_cpu", "bf16_is_fast", "auto_is_bf16", "amp_dtype", "autocast",
           "busy_cores", "set_threads", "record", "platform_info"]

AMP_MODES = ("auto", "bf16", "off")
#: oneDNN ISA limits (ONEDNN_MAX_CPU_ISA) at or above which bf16 convolutions run natively
_BF16_ISAS = ("AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16", "AVX10_1_512_AMX", "AVX512_CORE_AMX",
              "AVX10_1_512_AMX_FP16", "AVX512_CORE_AMX_FP16", "ALL", "DEFAULT")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU; an explicit CUDA request without CUDA fails clearly."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; use device='cpu' or 'auto'")
    return dev


# ----------------------------------------------------------------------------------
# CPU capabilities
# ----------------------------------------------------------------------------------
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else what the platform module says)."""
    m = re.search(r"^model name\s*:\s*(.+)$", _cpuinfo(), re.M)
    return m.group(1).strip() if m else (platform.processor() or platform.machine() or "unknown")


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags (``/proc/cpuinfo``), or None where they cannot be read."""
    m = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", _cpuinfo(), re.M)
    return set(m.group(1).split()) if m else None


def _isa_restricted() -> bool:
    """True when the environment limits oneDNN / ATen below the bf16-native instruction sets."""
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if isa and isa not in _BF16_ISAS:
        return True
    cap = os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    return cap in ("default", "avx2", "avx", "sse", "neon")   # "avx512" keeps oneDNN's bf16 path


def native_bf16_cpu() -> bool | None:
    """Does this CPU run bf16 natively? True / False where the capability decides it, None where
    it is ambiguous (a non-x86 CPU, or flags that cannot be read)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return None
    if _isa_restricted():
        return False
    try:
        native = bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:      # private helpers moved: read the flags instead
        flags = cpu_flags()
        if flags is None:
            return None
        native = bool(flags & {"avx512_bf16", "amx_bf16", "amx_tile"})
    return native


def _machine_cache() -> Path:
    return Path(os.environ.get("KIT_MACHINE_CACHE", Path.home() / ".cache" / "kit" / "precision.json"))


def _machine_key() -> str:
    return f"{cpu_model()}|{platform.machine()}|torch {torch.__version__}|threads {torch.get_num_threads()}"


def _time_step(dtype: torch.dtype | None, reps: int = 5) -> float:
    """Median seconds of one forward+backward of a small conv net (the quick profile's shape)."""
    import statistics

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
                              torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 11, 1))
    x = torch.rand(8, 3, 64, 128)
    ctx = (lambda: torch.autocast("cpu", dtype=dtype)) if dtype is not None else contextlib.nullcontext
    times = []
    for i in range(reps + 1):
        t = time.perf_counter()
        with ctx():
            loss = net(x).float().square().mean()
        loss.backward()
        if i:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def bf16_is_fast(refresh: bool = False) -> bool:
    """Is bf16 autocast faster than fp32 on this CPU? Decided by the capability where it can be
    (:func:`native_bf16_cpu`), else by a micro-benchmark run once and cached per machine."""
    native = native_bf16_cpu()
    if native is not None:
        return native
    path, key = _machine_cache(), _machine_key()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if not refresh and isinstance(cache.get(key), dict) and "bf16_faster" in cache[key]:
        return bool(cache[key]["bf16_faster"])
    fp32, bf16 = _time_step(None), _time_step(torch.bfloat16)
    verdict = bf16 < 0.9 * fp32
    cache[key] = {"fp32_s": fp32, "bf16_s": bf16, "bf16_faster": verdict}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(cache, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass   # a read-only home: decide again next time
    return verdict


def amp_dtype(device: torch.device | str, amp: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``amp`` ("auto" | "bf16" | "off") on ``device``, or None for fp32.

    ``auto``: bf16 on CUDA with bf16 support and on CPUs where bf16 is faster than fp32
    (:func:`bf16_is_fast`), fp32 elsewhere. ``bf16`` forces bf16 (an error on a CUDA device
    without bf16), ``off`` forces fp32.
    """
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be 'auto', 'bf16' or 'off', got {amp!r}")
    device = torch.device(device)
    if amp == "off":
        return None
    if device.type == "cuda":
        if not torch.cuda.is_bf16_supported():
            if amp == "bf16":
                raise RuntimeError(f"amp='bf16' requested but {device} has no bf16 support; use amp='auto' or 'off'")
            return None
        return torch.bfloat16
    if device.type == "cpu" and amp == "auto" and not auto_is_bf16():
        return None
    return torch.bfloat16


#: environment variable that overrides what ``amp="auto"`` means on a CPU: ``bf16`` or ``fp32``
AUTO_ENV = "KIT_AMP_AUTO"


def auto_is_bf16() -> bool:
    """Does ``amp="auto"`` mean bf16 on this CPU? ``$KIT_AMP_AUTO`` (``bf16`` / ``fp32``) decides
    where set -- the test suite runs once with ``bf16`` on every machine, so no test can assume
    that ``auto`` means fp32 -- else :func:`bf16_is_fast`."""
    forced = os.environ.get(AUTO_ENV, "").strip().lower()
    if forced in ("bf16", "bfloat16"):
        return True
    if forced in ("fp32", "float32", "off"):
        return False
    if forced:
        raise ValueError(f"{AUTO_ENV}={forced!r}: expected 'bf16' or 'fp32' (or unset: decided by the CPU)")
    return bf16_is_fast()


def autocast(device: torch.device | str, amp: str = "auto"):
    """An autocast context for ``device`` (bf16), or a no-op when :func:`amp_dtype` says fp32."""
    device = torch.device(device)
    dtype = amp_dtype(device, amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# ----------------------------------------------------------------------------------
# Threads
# ----------------------------------------------------------------------------------
def _cpu_times() -> tuple[int, int] | None:
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    vals = [int(v) for v in fields[:8]]
    idle = vals[3] + vals[4]           # idle + iowait
    return sum(vals) - idle, sum(vals)


def busy_cores(window: float = 0.25) -> float | None:
    """How many cores other processes keep busy right now: the CPU time spent while this
    process sleeps for ``window`` seconds (``/proc/stat``). None where it cannot be read;
    then :func:`set_threads` falls back to the load average minus this process."""
    a = _cpu_times()
    if a is None:
        return None
    time.sleep(window)
    b = _cpu_times()
    if b is None or b[1] <= a[1]:
        return None
    return (b[0] - a[0]) / (b[1] - a[1]) * (os.cpu_count() or 1)


def set_threads(threads: int | None = None) -> int:
    """Set torch's CPU threads and return how many it uses.

    ``None``: every core, less the cores other processes keep busy *now* (a core counts when
    it is at least 70% busy; at least one thread is left).
    A load average would count the work this very session just finished (the previous
    notebook in ``make run``) and halve the threads of a quiet machine; an instantaneous
    sample does not. Threads change only the order of floating-point sums, so results can
    differ in the last digits between thread counts.
    """
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    torch.set_num_threads(default_threads() if threads is None else threads)
    return torch.get_num_threads()


def default_threads() -> int:
    """The threads :func:`set_threads` picks for ``None`` (it sets nothing): every core, less
    the cores other processes keep at least 70% busy now, at least one."""
    cores = os.cpu_count() or 1
    busy = busy_cores(0.5)
    if busy is None and hasattr(os, "getloadavg"):
        busy = os.getloadavg()[0]
    # a core counts as taken when it is at least 70% busy: the Jupyter client that started
    # this kernel (papermill, nbval) polls at up to half a core while a notebook starts
    return max(1, min(cores, cores - int((busy or 0.0) + 0.3)))


def notable_cpu_flags() -> list[str]:
    """The CPU flags that decide the kit's speed (vector width, FMA, native bf16), in a fixed order."""
    flags = cpu_flags() or set()
    wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "asimd", "sve", "bf16"]
    return [f for f in wanted if f in flags]


def record(device: str | torch.device = "auto", amp: str = "auto") -> dict[str, Any]:
    """What a run's ``metrics.json`` keeps of the machine it ran on (cheap: nothing is measured
    beyond what ``amp_dtype`` has cached): CPU model, flags and kernel level, torch, GPU, the
    threads torch uses now, and the precision ``amp`` resolves to on ``device``."""
    dev = resolve_device(device)
    return {**platform_info(), "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
            "threads": torch.get_num_threads(),
            "precision": "bf16" if amp_dtype(dev, amp) == torch.bfloat16 else "fp32"}


def platform_info() -> dict[str, Any]:
    """The CPU, its flags and kernel level, and torch: what :func:`record` and ``kit info`` share."""
    return {"cpu": cpu_model(), "arch": platform.machine(), "cores": os.cpu_count(),
            "cpu_flags": notable_cpu_flags(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"), "kit_amp_auto": os.environ.get(AUTO_ENV) or None,
            "torch": torch.__version__}
