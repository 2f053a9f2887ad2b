"""Stage 3: whole models with random weights, fp16 (float32 on a CPU): diffusers UNets (SD1.5
at 512 and 1024 px, SDXL at 1024 px, batch 2) and the DiT blocks of bench/dit_blocks.py (Flux
at 1024² and 2048², Wan 2.1 1.3B at 480p). Baseline, MaMe at 0.5 (``auto`` and ``forced``),
tomesd at 0.5 and 2x1 key/value pooling, interleaved round by round in one run; compiled where
the budget allows (SD1.5 at 512 px and Flux at 1024² first). Each method gets its Amdahl bound.

Amdahl bounds: UNets from the affected attn1 layers timed alone (CUDA events) at full and at
merged length, summed; DiT blocks from the ``free-merge`` hook measured in place (attention on
the merged length at no merge cost), as bench/dit_blocks.py does."""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from bench.gpu_suite.report import Stage
from bench.gpu_suite.timers import is_cuda, raise_recompile_limit, time_ms
from bench.timing import time_interleaved
from mame_core import MergeSettings, merged_tokens_for

RATIO = 0.5
UNET_CASES = (("sd15", 512, True), ("sd15", 1024, False), ("sdxl", 1024, False))  # (model, px, compile)
DIT_CASES = (("flux-1024", True), ("flux-2048", False), ("wan13b-480p33", False))
QUICK_UNET = (("tiny", 128, False),)
QUICK_DIT = (("quick-dit", False),)
QUICK_DIT_CONFIG = dict(dim=64, heads=2, mlp=128, grid=(1, 12, 10), text=8, rope="2d")
VARIANTS = ("auto", "forced")


# -- MaMe's auto / forced switch -------------------------------------------------------------
def apply_mame_variant(unet, variant: str):
    """MaMe at ``RATIO`` on a diffusers UNet: ``auto`` leaves blocks too small to pay on the
    device at full length (mame_core.payoff); ``forced`` merges every scheduled block."""
    from mame_diffusers import apply_mame

    return apply_mame(unet, ratio=RATIO, force=variant == "forced")


def dit_mame_hook(hooks: dict, variant: str, tokens: int = 0, device="cuda"):
    """The DiT hook for MaMe ``variant`` (the CUDA node's path: the size bias through the extra
    channel); ``auto`` runs the block at full length where merging would not pay."""
    from mame_core import pays

    return hooks["mame-channel"] if pays(tokens, device, force=variant == "forced") else hooks["full"]


VARIANT_NOTE = "auto: blocks below mame_core.payoff's token threshold for the device stay at full length; forced: all merge"


# -- UNets -----------------------------------------------------------------------------------
def build_unet(model: str, dtype, device):
    from diffusers import UNet2DConditionModel

    from bench.random_pipeline import TINY_UNET
    from bench.unet_configs import MODELS

    config = TINY_UNET if model == "tiny" else MODELS[model][0]
    devices = [torch.device(device).index or 0] if is_cuda(device) else []
    with torch.random.fork_rng(devices=devices), torch.device(device):  # initialise on the device: fast
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**config)
    return unet.to(dtype=dtype).eval(), config


def unet_inputs(config, size, dtype, device, batch=2):
    gen = torch.Generator().manual_seed(0)
    args = {"sample": torch.randn(batch, 4, size // 8, size // 8, generator=gen),
            "timestep": torch.tensor(500),
            "encoder_hidden_states": torch.randn(batch, 77, config["cross_attention_dim"], generator=gen)}
    extra = {}
    if config.get("addition_embed_type") == "text_time":
        extra["added_cond_kwargs"] = {"text_embeds": torch.randn(batch, 1280, generator=gen).to(device, dtype),
                                      "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * batch,
                                                               dtype=dtype, device=device)}
    args = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in args.items()}
    return (args["sample"], args["timestep"], args["encoder_hidden_states"]), extra


def unet_methods(finest: int) -> dict:
    """name -> apply(unet) returning undo(unet); None for the baseline."""
    from bench.diffusers_baselines import apply_todo, remove
    from mame_diffusers import remove_mame

    out = {"baseline": None}
    for variant in VARIANTS:
        out[f"mame-{variant}"] = lambda u, v=variant: (apply_mame_variant(u, v), remove_mame)[1]
    try:
        import tomesd

        out["tomesd"] = lambda u: (tomesd.apply_patch(u, ratio=RATIO), tomesd.remove_patch)[1]
    except Exception as exc:  # noqa: BLE001
        out["tomesd"] = f"tomesd missing ({type(exc).__name__})"
    out["pool"] = lambda u: (lambda handles: (lambda _u: remove(handles)))(apply_todo(u, RATIO, levels=(finest,)))
    return out


def attention_alone(unet, finest, size, batch, dtype, device) -> tuple[float, float, int, int]:
    """ms of the finest level's attn1 layers at full and at merged length, timed alone."""
    from mame_diffusers.adapter import _attention_blocks

    lh = lw = size // 8 // finest
    n, m = lh * lw, merged_tokens_for(lh, lw, MergeSettings(ratio=RATIO))
    layers = [b.module for b in _attention_blocks(unet) if b.level == finest]
    gen = torch.Generator(device=device).manual_seed(3)
    total = {}
    with torch.inference_mode():
        for length in (n, m):
            x = torch.randn(batch, length, layers[0].to_q.in_features, generator=gen, device=device).to(dtype)
            total[length] = sum(time_ms(lambda a=a, x=x: a(x), device, target_s=0.05)["median_ms"] for a in layers)
    return total[n], total[m], len(layers), n


def run_unet(stage: Stage, model: str, size: int, mode: str, dtype, device, rounds: int) -> None:
    """The interleaved eager run of one UNet, or (``mode="compiled"``) its compiled run."""
    from mame_diffusers.adapter import _attention_blocks

    case = f"{model}-{size}"
    unet, config = build_unet(model, dtype, device)
    positional, extra = unet_inputs(config, size, dtype, device)
    finest = min(b.level for b in _attention_blocks(unet))
    full_ms, merged_ms, layers, tokens = attention_alone(unet, finest, size, 2, dtype, device)
    methods = unet_methods(finest)

    def forward(module):
        with torch.inference_mode():  # sample passed positionally: tomesd's hook reads args[0]
            return module(*positional, **extra).sample

    bound_note = (f"attention timed alone: {layers} attn1 layers at level d{finest}, {tokens} tokens, "
                  f"{full_ms:.2f} ms full / {merged_ms:.2f} ms merged")
    if mode == "compiled":
        compiled_unets(stage, case, unet, methods, forward, device, rounds, full_ms, merged_ms, bound_note)
        return
    cases = {}
    for name, apply in methods.items():
        if isinstance(apply, str):
            stage.skip({"case": case, "method": name, "mode": "eager"}, apply)
            continue

        def one(apply=apply):
            undo = apply(unet) if apply else None
            try:
                forward(unet)
            finally:
                if undo:
                    undo(unet)
        cases[name] = one
    times = time_interleaved(cases, rounds=rounds, warmup=1, device=device)
    report_rows(stage, case, "eager", times, {m: (full_ms - merged_ms) / 1000 for m in times if m != "baseline"},
                bound_note)


def compiled_unets(stage, case, unet, methods, forward, device, rounds, full_ms, merged_ms, bound_note):
    """Baseline and MaMe (then tomesd, pooling while the budget lasts), each on its own copy of
    the UNet compiled whole, timed interleaved."""
    raise_recompile_limit()
    cases = {}
    for name in ("baseline", "mame-auto", "tomesd", "pool"):
        apply = methods.get(name)
        what = {"case": case, "method": name, "mode": "compiled"}
        if isinstance(apply, str):
            stage.skip(what, apply)
            continue
        if not stage.budget.allows(60.0):
            stage.skip(what, "budget (a whole-UNet compile takes about a minute)")
            continue
        try:
            twin = copy.deepcopy(unet)
            if apply:
                apply(twin)
            fast = torch.compile(twin)
            forward(fast)
            cases[name] = lambda f=fast: forward(f)
            stage.say(f"{case} {name}: compiled")
        except Exception as exc:  # noqa: BLE001
            stage.fail(what, exc)
    if "baseline" in cases and len(cases) > 1:
        times = time_interleaved(cases, rounds=rounds, warmup=1, device=device)
        report_rows(stage, case, "compiled", times, {m: (full_ms - merged_ms) / 1000 for m in times if m != "baseline"},
                    bound_note + " (eager attention)")


def report_rows(stage, case, mode, times, saved_s: dict, bound_note: str) -> None:
    """One record per method; the Amdahl bound from the attention time a free merge saves."""
    base = times["baseline"]["median"]
    for name, t in times.items():
        row = {"case": case, "method": name, "mode": mode, "status": "ok", "median_s": t["median"], "min_s": t["min"],
               "rounds": t["runs"], "speedup": base / t["median"], "bound_from": bound_note}
        if name in saved_s:
            row["amdahl_bound"] = base / max(base - saved_s[name], 1e-9)
            gain = row["amdahl_bound"] - 1
            row["share_of_bound"] = (row["speedup"] - 1) / gain if gain > 0.02 else None
        if name.startswith("mame-"):
            row["variant_note"] = VARIANT_NOTE
        bound = f", bound {row['amdahl_bound']:.2f}x" if "amdahl_bound" in row else ""
        stage.add(row, f"{case} {mode} {name}: {t['median'] * 1000:.2f} ms, {row['speedup']:.2f}x{bound}")


# -- DiT blocks ------------------------------------------------------------------------------
def run_dit(stage: Stage, case: str, mode: str, dtype, device, rounds: int) -> None:
    """The interleaved eager run of one DiT block, or (``mode="compiled"``) its compiled run."""
    from bench import dit_blocks

    cfg = QUICK_DIT_CONFIG if case == "quick-dit" else dit_blocks.CASES[case]
    frames, h, w = cfg["grid"]
    dim, heads, text, cross = cfg["dim"], cfg["heads"], cfg["text"], cfg.get("cross", 0)
    gen = torch.Generator(device=device).manual_seed(1)
    rand = lambda *s: torch.randn(*s, generator=gen, device=device)  # noqa: E731
    x = F.layer_norm(rand(1, frames * h * w, dim), (dim,)).to(dtype)  # random tokens: cost, not error
    txt = F.layer_norm(rand(1, text, dim), (dim,)).to(dtype) if text else None
    context = rand(1, cross, dim).to(dtype) if cross else None
    rope = dit_blocks.rope_angles(cfg["grid"], dim // heads, cfg["rope"], text)
    rope = tuple(t.to(device) for t in rope) if rope is not None else None
    devices = [torch.device(device).index or 0] if is_cuda(device) else []
    with torch.random.fork_rng(devices=devices):
        block = dit_blocks.Block(dim, heads, cfg["mlp"], cross, dtype).to(device)
    hooks = dit_blocks.hooks(cfg["grid"], text, heads, RATIO)
    methods = {"baseline": hooks["full"], **{f"mame-{v}": dit_mame_hook(hooks, v, frames * h * w, device) for v in VARIANTS},
               "tomesd": hooks["tome"], "pool": hooks["todo"], "free-merge": hooks["free-merge"]}

    def call(hook):
        with torch.inference_mode():
            return block(x, txt, rope, hook, context)

    note = (f"free-merge in place (batch 1: bench.dit_blocks' hooks are single-batch), "
            f"{text}+{frames * h * w} tokens -> {text}+{merged_tokens_for(h, w, MergeSettings(ratio=RATIO), frames)}")
    if mode == "eager":
        cases = {name: (lambda hk=hook: call(hk)) for name, hook in methods.items()}
        times = time_interleaved(cases, rounds=rounds, warmup=1, device=device)
        free = times.pop("free-merge")["median"]
        saved = times["baseline"]["median"] - free
        report_rows(stage, case, "eager", times, {m: saved for m in times if m != "baseline"}, note)
        return
    raise_recompile_limit()
    compiled_cases = {}
    for name in ("baseline", "mame-auto", "free-merge", "tomesd", "pool"):
        if not stage.budget.allows(25.0):
            stage.skip({"case": case, "method": name, "mode": "compiled"}, "budget")
            continue
        try:
            fast = torch.compile(lambda hk=methods[name]: block(x, txt, rope, hk, context))
            with torch.inference_mode():
                fast()
            compiled_cases[name] = lambda f=fast: _no_grad(f)
        except Exception as exc:  # noqa: BLE001
            stage.fail({"case": case, "method": name, "mode": "compiled"}, exc)
    if "baseline" in compiled_cases and len(compiled_cases) > 1:
        times = time_interleaved(compiled_cases, rounds=rounds, warmup=1, device=device)
        free = times.pop("free-merge", {}).get("median", math.nan)
        saved = times["baseline"]["median"] - free
        report_rows(stage, case, "compiled", times,
                    {m: saved for m in times if m != "baseline"} if free == free else {}, note + ", compiled")


def _no_grad(fn):
    with torch.inference_mode():
        return fn()


def run(stage: Stage, device: str, dtype, quick: bool) -> None:
    """Every eager case first, then the compiled ones while the budget lasts, so that compiles
    cannot crowd out the eager figures."""
    rounds = 2 if quick else 5
    stage.data["settings"].update(ratio=RATIO, dtype=str(dtype), rounds=rounds, batch_unet=2, batch_dit=1,
                                  variants=VARIANT_NOTE)
    unets, dits = (QUICK_UNET, QUICK_DIT) if quick else (UNET_CASES, DIT_CASES)
    jobs = [(run_unet, (model, size), "eager", 20.0) for model, size, _ in unets]
    jobs += [(run_dit, (case,), "eager", 10.0) for case, _ in dits]
    if is_cuda(device):
        jobs += [(run_unet, (model, size), "compiled", 60.0) for model, size, c in unets if c]
        jobs += [(run_dit, (case,), "compiled", 25.0) for case, c in dits if c]
    else:
        stage.skip({"case": "all", "method": "all", "mode": "compiled"}, "whole-model compiles run on CUDA only")
    for runner, args, mode, needed in jobs:
        what = {"case": "-".join(map(str, args)), "method": "all", "mode": mode}
        if not stage.budget.allows(needed):
            stage.skip(what, "budget")
            continue
        try:
            runner(stage, *args, mode, dtype, device, rounds)
        except Exception as exc:  # noqa: BLE001
            stage.fail(what, exc)
        if is_cuda(device):
            torch.cuda.empty_cache()
    stage.skip({"case": "sdxl-1024", "method": "all", "mode": "compiled"},
               "a whole SDXL UNet compiles too slowly for the 8-minute suite")
