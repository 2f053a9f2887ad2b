"""Side-by-side timing: settings are interleaved round by round, so drift and noise from
the machine hit every setting alike. Reports min and median per setting."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_interleaved(
    cases: dict[str, Callable[[], object]],
    rounds: int = 7,
    warmup: int = 1,
    device: torch.device | str = "cpu",
) -> dict[str, dict[str, float]]:
    """Seconds per call of each case: ``{name: {"min": s, "median": s, "runs": n}}``."""
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            samples[name].append(time.perf_counter() - start)
    return {
        name: {"min": min(s), "median": statistics.median(s), "runs": len(s)} for name, s in samples.items()
    }


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def native_dtype(device: torch.device | str = "cpu", cpuinfo: str = "/proc/cpuinfo") -> tuple[str, str]:
    """``(dtype name, why)``: the half precision this machine runs natively, else float32.

    On a CPU without AVX512-BF16 or AMX, torch's bf16 convolutions are hundreds of times
    slower than fp32 (a benchmark would never end), so bf16 is picked only with one of them."""
    if torch.device(device).type == "cuda":
        return ("bfloat16", "CUDA with bf16") if torch.cuda.is_bf16_supported() else ("float16", "CUDA without bf16")
    try:
        with open(cpuinfo) as f:
            flags = set(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        flags = set()
    found = [flag for flag in BF16_CPU_FLAGS if flag in flags]
    if found:
        return "bfloat16", f"this CPU has {found[0]}"
    return "float32", "this CPU has neither avx512_bf16 nor amx_bf16, so bf16 would be emulated"


def pick_dtype(requested: str | None, device: torch.device | str = "cpu") -> str:
    """``--dtype`` when given, else :func:`native_dtype`; prints which and why."""
    if requested:
        print(f"dtype: {requested} (--dtype)")
        return requested
    name, why = native_dtype(device)
    print(f"dtype: {name} ({why}; --dtype overrides)")
    return name
