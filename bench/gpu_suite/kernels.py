"""Stage 2: kernel timing at the cost model's shapes (bench/gpu_shapes.py), beside its estimates.

Per shape, on random tokens: attention at full and merged length (plain, with the size
channel, with a float additive mask; each with the SDPA backend that ran), MaMe's plan, merge
and restore on each route, tomesd's matcher (merge + unmerge) and 2x1 key/value pooling. Three
passes, so that a short budget still gets the eager figures of every shape: eager (CUDA events),
then CUDA graphs (capture of the eager op sequence after warm-up), then ``torch.compile``."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.gpu_shapes import BlockShape
from bench.gpu_suite.correctness import ROUTES, has_routes
from bench.gpu_suite.estimates import Estimates
from bench.gpu_suite.report import Stage
from bench.gpu_suite.sdpa_backend import backend_for
from bench.gpu_suite.timers import compiled, graphed, is_cuda, time_ms
from mame_core import MergeSettings, merged_tokens_for, plan_merge
from mame_core.size_bias import add_size_channel, key_bias_mask

RATIO = 0.5
COMPILE_COST_S = {"cuda": 25.0, "cpu": 3.0}  # what one compile is allowed to need of the budget


def heads_first(t, heads):
    b, n, c = t.shape
    return t.reshape(b, n, heads, c // heads).transpose(1, 2)


def flat(t):
    b, h, n, d = t.shape
    return t.transpose(1, 2).reshape(b, n, h * d)


class ShapeOps:
    """The timed callables of one shape; ``ops[name] = (cost-model method, fn, backend probe)``."""

    def __init__(self, shape: BlockShape, dtype, device, routes):
        gen = torch.Generator(device=device).manual_seed(0)
        b, n, c, text, heads = shape.batch, shape.tokens, shape.channels, shape.text, shape.heads
        settings = MergeSettings(ratio=RATIO)
        self.merged = merged_tokens_for(shape.h, shape.w, settings, shape.frames)
        rand = lambda *s: torch.randn(*s, generator=gen, device=device, dtype=torch.float32).to(dtype)  # noqa: E731
        x = F.layer_norm(rand(b, n, c), (c,))
        q, k, v = (rand(b, text + n, c) for _ in range(3))
        keep = text + self.merged
        qm, km, vm = (t[:, :keep].contiguous() for t in (q, k, v))
        log_size = torch.cat([x.new_zeros(b, text), torch.rand(b, self.merged, generator=gen, device=device)
                              .to(dtype).mul(2).log1p()], dim=1)
        mask = key_bias_mask(log_size, dtype)
        full4 = [heads_first(t, heads) for t in (q, k, v)]
        merged4 = [heads_first(t, heads) for t in (qm, km, vm)]
        qc, kc, vc, drop = add_size_channel(qm, km, vm, log_size, heads)
        channel4 = [heads_first(t, heads) for t in (qc, kc, vc)]
        sdpa = F.scaled_dot_product_attention
        self.ops = {
            "attention-full": ("attention-full", lambda: sdpa(*full4), (full4, None)),
            "attention-merged": ("attention-merged", lambda: sdpa(*merged4), (merged4, None)),
            "attention-merged size-channel": (
                None, lambda: drop(flat(sdpa(*(heads_first(t, heads) for t in add_size_channel(
                    qm, km, vm, log_size, heads)[:3])))), (channel4, None)),
            "attention-merged float-mask": (None, lambda: sdpa(*merged4, attn_mask=mask), (merged4, mask)),
        }
        pattern = torch.tensor(7, device=device)
        frames, h, w = shape.grid
        for route in routes:
            kw = {} if route == "default" else {"route": route}

            def plan(kw=kw):
                return plan_merge(x, h, w, settings, pattern, frames, **kw)

            fixed = plan()
            merged = fixed.merge(x)
            label = f"mame-{route}"
            self.ops[label] = (label if route != "default" else None,
                               lambda plan=plan: (lambda p: p.restore(p.merge(x)))(plan()), None)
            self.ops[f"{label} plan"] = (None, plan, None)
            self.ops[f"{label} merge"] = (None, lambda p=fixed: p.merge(x), None)
            self.ops[f"{label} restore"] = (None, lambda p=fixed, m=merged: p.restore(m), None)
            self.ops[f"{label} merge+restore"] = (f"{label} merge+restore" if route != "default" else None,
                                                  lambda p=fixed: p.restore(p.merge(x)), None)
            if hasattr(fixed, "release"):  # a plan kept over steps: rebuilt from per-token slots, applied
                kept = plan_merge(x, h, w, settings, 7, frames, **kw)  # the host pattern BlockStep gives it

                def reused(p=kept):
                    p.release()
                    return p.restore(p.merge(x))
                self.ops[f"{label} reused"] = (None, reused, None)
        self.ops["tomesd"] = ("tomesd", self._tomesd(x, shape, device), None)
        self.ops["pool"] = ("pool", lambda: [F.avg_pool2d(t, (1, 2), ceil_mode=True)
                                             for t in (_grid(k[:, text:], shape), _grid(v[:, text:], shape))], None)

    @staticmethod
    def _tomesd(x, shape, device):
        try:
            from tomesd.merge import bipartite_soft_matching_random2d
        except Exception as exc:  # noqa: BLE001
            message = f"tomesd missing ({type(exc).__name__})"

            def missing():
                raise RuntimeError(message)
            return missing
        frames, h, w = shape.grid
        folded = x.reshape(shape.batch * frames, h * w, x.shape[-1])
        gen = torch.Generator(device=device).manual_seed(0)

        def run():
            merge, unmerge = bipartite_soft_matching_random2d(folded, w, h, 2, 2, int(h * w * RATIO),
                                                              no_rand=False, generator=gen)
            return unmerge(merge(folded))
        return run


def _grid(t, shape):
    """``[B, F*h*w, C]`` -> ``[B*F, C, h, w]``."""
    frames, h, w = shape.grid
    return t.reshape(t.shape[0] * frames, h, w, t.shape[-1]).permute(0, 3, 1, 2)


TIMED_MODES = ("eager", "graph", "compiled")
COMPILED_METHODS = ("mame-gpu", "mame-gpu merge+restore", "mame-cpu", "mame-default", "tomesd", "pool",
                    "attention-full", "attention-merged")
QUICK_COMPILED = ("mame-gpu", "pool")


def run(stage: Stage, device: str, shapes, dtype, quick: bool) -> None:
    """Eager and graph passes shape by shape; the compiled pass method by method (``mame-gpu``
    first), so the budget that compiles leave covers the most telling figures of every shape."""
    routes = ROUTES if has_routes() else ("default",)
    estimates = Estimates(gpu_name=stage.data["env"].get("gpu", "cpu"))
    stage.data["settings"].update(ratio=RATIO, dtype=str(dtype), routes=list(routes),
                                  estimates=str(estimates.path) + (f": {estimates.problem}" if estimates.problem else ""))
    built: dict[str, ShapeOps] = {}

    def ops_for(shape, mode):
        what = {"shape": shape.name, "method": "all", "mode": mode}
        if not stage.budget.allows(5.0):
            stage.skip(what, "budget")
            return None
        try:
            return built.get(shape.name) or built.setdefault(shape.name, ShapeOps(shape, dtype, device, routes))
        except Exception as exc:  # noqa: BLE001
            stage.fail({**what, "method": "setup"}, exc)
            return None

    for mode in TIMED_MODES:
        if mode == "graph" and not is_cuda(device):
            stage.skip({"shape": "all", "method": "all", "mode": mode}, "CUDA graphs need CUDA")
            continue
        if mode == "compiled":
            for method in (QUICK_COMPILED if quick else COMPILED_METHODS):
                for shape in shapes[:1] if quick else shapes:
                    ops = ops_for(shape, mode)
                    if ops is not None and method in ops.ops:
                        measure(stage, ops, shape, method, mode, device, estimates)
            continue
        for shape in shapes:
            ops = ops_for(shape, mode)
            if ops is None:
                continue
            names = list(ops.ops)
            if mode != "eager":  # plan, merge and restore alone are timed eager only
                names = [n for n in names if not n.endswith((" plan", " merge", " restore"))]
            for name in names:
                measure(stage, ops, shape, name, mode, device, estimates)
        if is_cuda(device):
            torch.cuda.empty_cache()
    stage.data["merged_tokens"] = {name: ops.merged for name, ops in built.items()}


def measure(stage, ops: ShapeOps, shape, name, mode, device, estimates: Estimates) -> None:
    method, fn, probe = ops.ops[name]
    what = {"shape": shape.name, "method": name, "mode": mode}
    needed = COMPILE_COST_S["cuda" if is_cuda(device) else "cpu"] if mode == "compiled" else 1.0
    if not stage.budget.allows(needed):
        stage.skip(what, "budget")
        return
    try:
        extra = {}
        if mode == "compiled":
            backend = "inductor" if is_cuda(device) else "eager"  # the dry run: Dynamo's trace, no C++ build
            fn, seconds = compiled(fn, backend)
            extra.update(compile_s=round(seconds, 2), compile_backend=backend)
        elif mode == "graph":
            fn = graphed(fn)
        timing = time_ms(fn, device)
    except Exception as exc:  # noqa: BLE001 - a refused capture or compile is a result
        stage.fail(what, exc)
        if is_cuda(device):
            try:
                torch.cuda.synchronize()
            except Exception as again:  # noqa: BLE001
                stage.say(f"CUDA did not recover after {name} {mode}: {again}")
        return
    if probe is not None and mode == "eager":
        try:
            extra["sdpa_backend"] = backend_for(*probe[0], attn_mask=probe[1])
        except Exception as exc:  # noqa: BLE001
            extra["sdpa_backend"] = f"probe failed ({type(exc).__name__}: {exc})"
    compared = estimates.compare(shape.name, method, mode, timing["median_ms"]) if method else {}
    ratio = compared.get("measured_over_estimate")
    note = (f"est {compared['estimate_ms']:.3f} ms, measured/est {ratio:.2f}" if ratio is not None
            else compared.get("estimate", "no cost-model method"))
    backend = f" [{extra['sdpa_backend']}]" if "sdpa_backend" in extra else ""
    stage.add({**what, "status": "ok", "cost_method": method, **timing, **extra, **compared},
              f"{shape.name} {name} {mode}: {timing['median_ms']:.3f} ms{backend} ({note})")
