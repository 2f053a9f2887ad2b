"""Stage 1: the merge/restore invariants on the suite's device, in bf16 and fp16, for each
engine route: ratio 0 is the identity, the token count is exact on every grid, copies are
restored exactly, no host sync (``torch.cuda.set_sync_debug_mode("error")``), the op audit,
and the Merge Map analysis on the device's tokens. One record per check; a failing check is
recorded and the stage goes on."""
from __future__ import annotations

import inspect

import torch

from bench.gpu_suite.inputs import GRIDS, constant_cells, copies_of_destinations
from bench.gpu_suite.report import Stage
from bench.gpu_suite.timers import is_cuda
from bench.op_audit import audited
from mame_core import MergeSettings, describe_merges, draw_merge_map, merged_tokens_for, plan_merge

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
ROUTES = ("cpu", "gpu")


def has_routes() -> bool:
    return "route" in inspect.signature(plan_merge).parameters


def planner(route: str):
    """``plan(x, h, w, settings, pattern, frames)`` on ``route``."""
    def plan(x, h, w, settings, pattern=0, frames=1):
        return plan_merge(x, h, w, settings, pattern, frames, route=route)
    return plan


def tokens(shape, dtype, device, seed=0):
    gen = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(*shape, generator=gen, device=device, dtype=torch.float32).to(dtype)


def check_identity(plan, dtype, device):
    x = tokens((2, 16 * 16, 32), dtype, device)
    p = plan(x, 16, 16, MergeSettings(ratio=0.0))
    assert p.is_identity, type(p).__name__
    assert p.merge(x) is x and p.restore(x) is x, "ratio 0 did not return the same tensor"
    return {"detail": "merge(x) is x and restore(x) is x"}


def check_token_count(plan, dtype, device):
    settings = MergeSettings(ratio=0.5)
    counts = []
    for frames, h, w in GRIDS:
        x = tokens((2, frames * h * w, 32), dtype, device)
        p = plan(x, h, w, settings, 0, frames)
        merged = p.merge(x)
        want = merged_tokens_for(h, w, settings, frames)
        assert merged.shape == (2, want, 32) and p.merged_tokens == want, (frames, h, w, merged.shape, want)
        assert tuple(p.key_log_size.shape) == (2, want), p.key_log_size.shape
        assert p.restore(merged).shape == x.shape and merged.dtype == dtype and merged.device == x.device
        counts.append(f"{frames}x{h}x{w}:{want}")
    return {"detail": " ".join(counts)}


def check_copies(plan, dtype, device, route):
    """Copies restored exactly: grids constant on 4x4 cells (any route), and on the CPU route
    also the unit tests' grids where every token copies a destination of its tile."""
    settings = MergeSettings(ratio=0.5, tile=(4, 4))
    builders = [constant_cells] + ([copies_of_destinations] if route in ("cpu", "default") else [])
    worst, count = 0.0, 0
    for build in builders:
        for frames, h, w in GRIDS:
            args = (2, frames, h, w, 32) + ((settings, 0) if build is copies_of_destinations else ())
            x = build(*args, seed=1).to(device=device, dtype=dtype)
            p = plan(x, h, w, settings, torch.tensor(0, device=device), frames)
            back = p.restore(p.merge(x))
            worst = max(worst, (back.float() - x.float()).abs().max().item())
            count += 1
            # weights summing to one in half precision may round the average by an ulp
            eps = torch.finfo(dtype).eps
            torch.testing.assert_close(back, x, rtol=2 * eps, atol=2 * eps, msg=lambda m, g=(frames, h, w), b=build:
                                       f"{b.__name__} {g}: {m}")
    names = "+".join(b.__name__ for b in builders)
    return {"detail": f"max abs error {worst:.3g} over {count} grids ({names})", "max_abs_error": worst}


def _merge_restore(plan, x, pattern):
    p = plan(x, 13, 19, MergeSettings(ratio=0.5), pattern)
    return p.restore(p.merge(x) * 2)


def check_no_sync(plan, dtype, device):
    if not is_cuda(device):
        return {"status": "skipped", "reason": "needs CUDA: torch.cuda.set_sync_debug_mode"}
    x = tokens((2, 13 * 19, 32), dtype, device)
    pattern = torch.tensor(7, device=device)
    _merge_restore(plan, x, pattern)  # warm-up: caches, first-use allocations
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        _merge_restore(plan, x, pattern)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return {"detail": "plan+merge+restore ran under set_sync_debug_mode('error')"}


def check_op_audit(plan, dtype, device):
    x = tokens((2, 13 * 19, 32), dtype, device)
    ops = audited(_merge_restore, plan, x, torch.tensor(7, device=device))
    return {"detail": f"{len(ops)} aten ops, none forbidden, no host sync", "ops": len(ops)}


def check_merge_map(plan, dtype, device):
    """describe_merges takes the device's tokens and plans on a float32 CPU copy of them (the
    node's preview), so this check is the same for every route."""
    x = tokens((1, 16 * 16, 32), dtype, device)
    merge_map = describe_merges(x, 16, 16, MergeSettings(ratio=0.5))
    image = draw_merge_map(torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(0)), merge_map)
    groups = int(merge_map.group.max()) + 1
    assert image.shape == (64, 64, 3) and torch.isfinite(image).all()
    assert int(merge_map.merged.sum()) == 16 * 16 - merged_tokens_for(16, 16, MergeSettings(ratio=0.5))
    return {"detail": f"{groups} groups, {int(merge_map.merged.sum())} merged tokens from {x.device.type} tokens"}


CHECKS = {
    "identity": check_identity,
    "token-count": check_token_count,
    "copies-restored": check_copies,
    "no-host-sync": check_no_sync,
    "op-audit": check_op_audit,
    "merge-map": check_merge_map,
}


def run(stage: Stage, device: str) -> None:
    routes = ROUTES if has_routes() else ()
    if not routes:
        for route in ROUTES:
            stage.skip({"check": "all", "route": route}, "not available: plan_merge has no route parameter")
        routes = ("default",)
    for dtype_name, dtype in DTYPES.items():
        for route in routes:
            plan = planner(route) if route != "default" else plan_merge
            for name, check in CHECKS.items():
                if name == "merge-map" and route != routes[0]:
                    continue  # plans on a CPU copy: one per dtype
                what = {"check": name, "route": route if name != "merge-map" else "cpu copy", "dtype": dtype_name}
                if not stage.budget.allows():
                    stage.skip(what, "budget")
                    continue
                try:
                    extra = (route,) if check is check_copies else ()
                    result = check(plan, dtype, device, *extra)
                except Exception as exc:  # noqa: BLE001 - a failing check is a result
                    stage.fail({**what, "passed": False}, exc)
                    continue
                if result.get("status") == "skipped":
                    stage.skip(what, result["reason"])
                else:
                    stage.add({**what, "status": "pass", "passed": True, **result},
                              f"{name} {route} {dtype_name}: pass ({result['detail']})")
    failed = [r for r in stage.data["records"] if r.get("status") == "error"]
    stage.data["summary"] = {"passed": sum(r.get("status") == "pass" for r in stage.data["records"]),
                             "failed": len(failed),
                             "skipped": sum(r.get("status") == "skipped" for r in stage.data["records"])}
    stage.say(f"summary: {stage.data['summary']}")
