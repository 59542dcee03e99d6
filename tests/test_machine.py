"""Precision per machine, threads (kit.machine) and ``kit info`` (kit.info), with the capabilities mocked."""
import json

import pytest
import torch

from kit import info as kit_info
from kit import machine
from kit.machine import amp_dtype, autocast, set_threads


@pytest.fixture
def x86(monkeypatch, tmp_path):
    monkeypatch.setattr(machine.platform, "machine", lambda: "x86_64")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.setenv("KIT_MACHINE_CACHE", str(tmp_path / "precision.json"))
    monkeypatch.delenv(machine.AUTO_ENV, raising=False)   # these tests are about what the CPU decides
    return monkeypatch


def _native(monkeypatch, avx512_bf16: bool, amx: bool):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)


def test_auto_is_fp32_on_a_cpu_without_native_bf16(x86):
    _native(x86, False, False)                      # e.g. AMD EPYC (AVX2 only), Intel Ice Lake
    assert machine.native_bf16_cpu() is False
    assert amp_dtype(torch.device("cpu"), "auto") is None
    assert isinstance(autocast("cpu", "auto"), type(autocast("cpu", "off")))   # a no-op context


@pytest.mark.parametrize("avx512_bf16,amx", [(True, False), (False, True), (True, True)])
def test_auto_is_bf16_on_a_cpu_with_native_bf16(x86, avx512_bf16, amx):
    _native(x86, avx512_bf16, amx)                  # Cooper Lake / Sapphire Rapids and newer, Zen 4
    assert amp_dtype("cpu", "auto") == torch.bfloat16


def test_explicit_modes_force_the_precision(x86):
    _native(x86, False, False)
    assert amp_dtype("cpu", "bf16") == torch.bfloat16     # forced, even where it is emulated
    _native(x86, True, True)
    assert amp_dtype("cpu", "off") is None
    with pytest.raises(ValueError, match="'auto', 'bf16' or 'off'"):
        amp_dtype("cpu", "fp16")


def test_the_environment_can_decide_what_auto_means(x86):
    """KIT_AMP_AUTO=bf16 makes `auto` bf16 on any CPU (the suite runs once that way, so that no
    test assumes `auto` is fp32); fp32 the other way; anything else is refused by name."""
    _native(x86, False, False)
    x86.setenv(machine.AUTO_ENV, "bf16")
    assert amp_dtype("cpu", "auto") == torch.bfloat16 and amp_dtype("cpu", "off") is None
    _native(x86, True, True)
    x86.setenv(machine.AUTO_ENV, "fp32")
    assert amp_dtype("cpu", "auto") is None and amp_dtype("cpu", "bf16") == torch.bfloat16
    x86.setenv(machine.AUTO_ENV, "fp16")
    with pytest.raises(ValueError, match="KIT_AMP_AUTO='fp16'"):
        amp_dtype("cpu", "auto")


@pytest.mark.parametrize("env,value", [("ONEDNN_MAX_CPU_ISA", "AVX2"), ("ATEN_CPU_CAPABILITY", "avx2")])
def test_kernels_restricted_below_bf16_mean_fp32(x86, env, value):
    """The AVX2 approximation of a slow laptop (ONEDNN_MAX_CPU_ISA=AVX2) must also pick fp32."""
    _native(x86, True, True)
    x86.setenv(env, value)
    assert machine.native_bf16_cpu() is False and amp_dtype("cpu", "auto") is None
    x86.setenv(env, "AVX512_CORE_AMX" if env == "ONEDNN_MAX_CPU_ISA" else "avx512")
    assert machine.native_bf16_cpu() is True


def test_ambiguous_cpu_is_decided_once_by_a_cached_micro_benchmark(x86, tmp_path):
    x86.setattr(machine.platform, "machine", lambda: "aarch64")
    calls = []

    def fake_step(dtype, reps=5):
        calls.append(dtype)
        return 0.010 if dtype is None else 0.005       # bf16 twice as fast here
    x86.setattr(machine, "_time_step", fake_step)
    assert machine.native_bf16_cpu() is None
    assert amp_dtype("cpu", "auto") == torch.bfloat16
    assert calls == [None, torch.bfloat16]
    assert amp_dtype("cpu", "auto") == torch.bfloat16   # from the cache: no second benchmark
    assert len(calls) == 2
    cached = json.loads((tmp_path / "precision.json").read_text())
    (entry,) = cached.values()
    assert entry["bf16_faster"] is True and entry["fp32_s"] == 0.010
    # a machine where bf16 is slower (emulated) decides fp32
    x86.setattr(machine, "_time_step", lambda dtype, reps=5: 0.010 if dtype is None else 0.1)
    assert machine.bf16_is_fast(refresh=True) is False and amp_dtype("cpu", "auto") is None


def test_micro_benchmark_runs_for_real():
    assert machine._time_step(None, reps=1) > 0


def test_cuda_branch(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert amp_dtype(torch.device("cuda"), "auto") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)   # e.g. a V100
    assert amp_dtype(torch.device("cuda"), "auto") is None
    with pytest.raises(RuntimeError, match="no bf16 support"):
        amp_dtype(torch.device("cuda"), "bf16")


def test_set_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(machine.os, "cpu_count", lambda: 2)
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr(machine, "busy_cores", lambda window=0.25: 1.0)    # another process on one core
        assert set_threads(None) == 1
        monkeypatch.setattr(machine, "busy_cores", lambda window=0.25: 0.1)    # a quiet machine: every core
        assert set_threads(None) == 2
        monkeypatch.setattr(machine, "busy_cores", lambda window=0.25: 0.6)    # a polling Jupyter client
        assert set_threads(None) == 2
        monkeypatch.setattr(machine, "busy_cores", lambda window=0.25: 0.8)
        assert set_threads(None) == 1
        monkeypatch.setattr(machine, "busy_cores", lambda window=0.25: 5.0)    # never below one thread
        assert set_threads(None) == 1
        monkeypatch.setattr(machine, "busy_cores", lambda window=0.25: None)   # no /proc/stat: load average
        monkeypatch.setattr(machine.os, "getloadavg", lambda: (0.0, 0.0, 0.0), raising=False)
        assert set_threads(None) == 2
        for bad in (0, -1, 1.5, True, "2"):
            with pytest.raises(ValueError, match="positive integer"):
                set_threads(bad)
    finally:
        torch.set_num_threads(before)


def test_busy_cores_reads_proc_stat():
    busy = machine.busy_cores(window=0.05)
    assert busy is None or 0.0 <= busy <= (machine.os.cpu_count() or 1) + 1e-6


def test_info_reports_the_machine(monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        d = kit_info.info(measure=False)
        assert torch.get_num_threads() == 1          # info reports, it sets nothing
    finally:
        torch.set_num_threads(before)
    assert d["cpu_flags"] == machine.notable_cpu_flags()
    for key in ("cpu", "cpu_flags", "native_bf16_cpu", "gpu", "auto_precision", "threads", "torch"):
        assert key in d
    assert d["auto_precision"] in ("fp32", "bf16")
    text = kit_info.format_info(d)
    assert d["cpu"] in text and "amp 'auto'" in text and "jobs auto" in text
    d.update(quick_step_ms=50.0, reference={"machine": "ref", "step_ms": 25.0},
             expected_minutes={"00_introduction": 6.0})
    assert "00_introduction" in kit_info.format_info(d)
