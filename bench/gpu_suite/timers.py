"""Milliseconds per call: CUDA events on a GPU (wall clock on a CPU), eager, ``torch.compile``d,
or replayed from a CUDA graph captured after warm-up."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def is_cuda(device) -> bool:
    return torch.device(device).type == "cuda"


def time_ms(fn: Callable[[], object], device, target_s: float = 0.15, max_reps: int = 50,
            warmup: int = 2) -> dict:
    """Median and min milliseconds of ``fn()`` over enough repetitions to fill ``target_s``."""
    for _ in range(warmup):
        fn()
    cuda = is_cuda(device)
    if cuda:
        torch.cuda.synchronize()
    first = _one(fn, cuda)
    reps = int(max(3, min(max_reps, target_s * 1000 / max(first, 1e-3))))
    samples = [first] + [_one(fn, cuda) for _ in range(reps - 1)]
    return {"median_ms": statistics.median(samples), "min_ms": min(samples), "reps": len(samples),
            "timer": "cuda events" if cuda else "wall clock"}


def _one(fn, cuda: bool) -> float:
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    began = time.perf_counter()
    fn()
    return (time.perf_counter() - began) * 1000


def raise_recompile_limit(limit: int = 64) -> None:
    import torch._dynamo

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, limit)


def compiled(fn: Callable[[], object], backend: str = "inductor") -> tuple[Callable[[], object], float]:
    """``torch.compile(fn)`` after a reset, called once to compile; returns it and the compile
    seconds. Resetting first keeps an earlier shape's graphs from filling the recompile limit.
    ``backend="eager"`` traces with Dynamo only (the CPU dry run: no C++ build)."""
    import torch._dynamo

    torch._dynamo.reset()
    raise_recompile_limit()
    fast = torch.compile(fn, dynamic=False, backend=backend)
    began = time.perf_counter()
    fast()
    return fast, time.perf_counter() - began


def graphed(fn: Callable[[], object]) -> Callable[[], object]:
    """Capture ``fn``'s kernels in a CUDA graph after three warm-up calls on a side stream;
    returns the replay. Raises what capture raises (a host sync, a CPU tensor, ...)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    torch.cuda.synchronize()
    return graph.replay
