"""How the MaMe node hooks into ComfyUI's UNet: a model wrapper and an attn1 patch pair.

* ``wrapper`` (ComfyUI's model function wrapper) runs once per model call, outside the
  diffusion model and so outside any ``torch.compile`` of it (TorchCompileModel compiles
  ``diffusion_model``): it reads the step's sigma on the host and starts the block step.
* ``merge`` (attn1_patch) gets the normed tokens before self-attention and merges them;
  ``restore`` (attn1_output_patch) restores the output before the residual add. Both run
  inside the (possibly compiled) UNet: no host read, no logging while compiling.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

try:
    import comfy.ldm.modules.attention as comfy_attention
except ImportError:  # the package imported outside ComfyUI (e.g. collected by pytest)
    comfy_attention = None

from ..mame_core import BlockAddress, BlockStep
from .kit import ErrorStop, SamplingClock, sigma_of
from .merge_recorder import MergeRecorder
from .model_inspect import AttentionBlock, model_sampling
from .proportional_attention import bias_as_mask, sized_attention

log = logging.getLogger("comfyui-mame")

# Set in a block's extra_options to the plan once a MaMe patch has merged there: a second
# MaMe node in the chain (a stacked node) leaves that block alone, and the attn1
# replacement below reads the plan's key sizes from it.
MERGED_MARK = "mame_merged"


def sized_self_attention(q, k, v, extra_options):
    """ComfyUI attn1 replacement (projected q, k, v in; output before to_out): the host's own
    attention, with proportional attention (each merged key's logit + log of the tokens it
    stands for) when a MaMe plan merged this block (see :mod:`.proportional_attention`).
    Unmerged blocks get plain attention."""
    optimized_attention = comfy_attention.optimized_attention  # read per call: ComfyUI may swap it
    heads = extra_options["n_heads"]
    plan = extra_options.get(MERGED_MARK)
    log_size = getattr(plan, "key_log_size", None)
    if log_size is None or k.shape[1] != log_size.shape[1]:
        return optimized_attention(q, k, v, heads)
    return sized_attention(optimized_attention, q, k, v, heads, log_size, bias_as_mask(optimized_attention, q.device))


@dataclass
class MaMeAttentionPatch:
    step: BlockStep
    blocks: list[AttentionBlock]
    clock: SamplingClock = field(default_factory=lambda: SamplingClock(None))  # sigma -> progress
    recorder: MergeRecorder = field(default_factory=MergeRecorder)
    previous_wrapper: object = None  # a model wrapper set before this node; called inside ours
    stop: ErrorStop = None  # the error policy (kit.ErrorStop); made with the recorder
    _pending: object = None
    _started_for: object = None
    _logged: set = field(default_factory=set)

    def __post_init__(self) -> None:
        self._levels = {(b.stage, b.index): b.level for b in self.blocks}
        if self.stop is None:
            self.stop = ErrorStop(self.recorder)

    @property
    def error(self) -> str | None:
        return self.stop.error

    @property
    def settings(self):
        return self.step.settings

    @property
    def last_pass(self):
        return self.step.records

    # ComfyUI entry points -------------------------------------------------------------

    def wrapper(self, apply_model, args):
        """Model function wrapper: host side, once per model call."""
        options = args["c"].get("transformer_options", {})
        self._start(options.get("sigmas", args["timestep"]), args["input"].device)
        self.recorder.set_rows(args.get("cond_or_uncond"), args["input"].shape[0])
        if self.previous_wrapper is not None:
            out = self.previous_wrapper(apply_model, args)
        else:
            out = apply_model(args["input"], args["timestep"], **args["c"])
        self._log_once(args["input"].shape)
        return out

    def merge(self, n, context, value, extra_options):
        self._pending = None
        if torch.compiler.is_compiling():
            merged = self._merge(n, context, value, extra_options)
        else:
            try:
                self._start_if_unwrapped(extra_options, n.device)
                merged = self._merge(n, context, value, extra_options)
            except Exception as err:  # never take the user's sampling down with us
                self._fail(err)
                merged = None
        if merged is None:
            return n, context, value
        if self.settings.mode == "qkv":
            return merged, merged, merged
        return n, merged, merged

    def restore(self, out, extra_options):
        plan, self._pending = self._pending, None
        if plan is None:
            return out
        if out.shape[1] != plan.merged_tokens:
            self.step.warn_once("length", f"MaMe: attention output has {out.shape[1]} tokens, expected "
                                          f"{plan.merged_tokens}; left as is")
            return out
        return plan.restore(out)

    # internals --------------------------------------------------------------------------

    def _merge(self, n, context, value, extra_options):
        if self.error is not None:
            return None
        block = extra_options.get("block")
        if block is None or extra_options.get(MERGED_MARK):
            return None
        if context is not n or value is not n:
            # Another patch changed the self-attention inputs first (or the block attends
            # to a context); merging n alone would pair tokens that no longer match.
            return None
        stage, index = block[0], int(block[1])
        level = self._levels.get((stage, index))
        if level is None:
            return None
        address = BlockAddress(stage, index, int(extra_options.get("block_index", 0)), level)
        shape = extra_options.get("activations_shape")  # v0.8.0+: the exact grid of this block
        exact = (shape[2], shape[3]) if shape is not None and len(shape) == 4 else None
        grid = self.step.grid_for(n.shape[1], extra_options.get("original_shape"), address, exact)
        if grid is None:
            return None
        plan = self.step.plan(n, address, grid)
        if plan.is_identity:
            return None
        if self.recorder.armed and not torch.compiler.is_compiling():
            self.recorder.record(n, grid, self.step, address, plan)
        extra_options[MERGED_MARK] = plan
        if self.settings.mode == "qkv":
            self._pending = plan
        return plan.merge(n)

    def _start(self, sigmas, device) -> None:
        self.step.start_call(self.clock.progress(sigma_of(sigmas)), device)
        self._started_for = sigmas

    def _start_if_unwrapped(self, extra_options, device) -> None:
        """A node that replaced ComfyUI's model wrapper after MaMe's drops ours: read the
        step here instead (eager only; a compiled model then keeps the last step's state)."""
        sigmas = extra_options.get("sigmas")
        if sigmas is not None and sigmas is not self._started_for:
            self.step.warn_once("unwrapped", "MaMe: another node replaced the model wrapper MaMe set; MaMe reads "
                                             "the sampling step inside attention instead (not torch.compile-clean)")
            self._start(sigmas, device)

    def _fail(self, err: Exception) -> None:
        self.stop.fail(err, "attention patch")

    def _log_once(self, latent_shape) -> None:
        key = tuple(int(s) for s in latent_shape[-2:])
        if key in self._logged or torch.compiler.is_compiling():
            return
        if not self.step.records and self.step.active:
            return  # e.g. a compiled model, where records are not kept; or nothing merged yet
        self._logged.add(key)
        log.info("%s", self.summary(key))

    def summary(self, latent_hw=None) -> str:
        where = f" at latent {latent_hw[0]}x{latent_hw[1]}" if latent_hw else ""
        records = self.step.records
        if self.error is not None:
            return f"MaMe: merging off{where} after an error: {self.error}"
        if not records:
            return f"MaMe: merging in 0 of {len(self.blocks)} attention blocks{where} (nothing to merge at this step)"
        parts = [
            f"{name}{f' x{len(r.layers)}' if len(r.layers) > 1 else ''} {r.tokens}->{r.merged_tokens} tokens"
            f" (ratio {r.ratio:g}, effective {1 - r.merged_tokens / r.tokens:.3g}, grid {r.grid[0]}x{r.grid[1]})"
            for name, r in records.items()
        ]
        return (
            f"MaMe: merging in {len(records)} blocks{where}, mode {self.settings.mode}, "
            f"tau {self.settings.threshold:g}: " + "; ".join(parts)
        )


def patch_unet(model, blocks, settings, schedule, seed: int, recorder: MergeRecorder, reuse=None):
    """A clone of ``model`` with MaMe at the self-attention of ``blocks`` (from
    ``model_inspect.inspect_model``)."""
    schedule = schedule.resolve_levels(sorted({b.level for b in blocks}))
    step = BlockStep(settings, schedule, int(seed), reuse=reuse)
    patched = model.clone()
    clock = SamplingClock(model_sampling(model), schedule.start_percent, schedule.end_percent)
    mame = MaMeAttentionPatch(step, list(blocks), clock, recorder,
                              previous_wrapper=patched.model_options.get("model_function_wrapper"))
    patched.set_model_unet_function_wrapper(mame.wrapper)
    patched.set_model_attn1_patch(mame.merge)
    patched.set_model_attn1_output_patch(mame.restore)
    targets = [f"{b.stage}_{b.index}" for b in blocks if schedule.ratio_for(b.stage, b.index, b.level) > 0]
    if targets:
        _replace_self_attention(patched, blocks)
    log.info("MaMe: %s; blocks: %s", schedule.describe(), ", ".join(targets) or "none")
    return patched


def _replace_self_attention(model, blocks) -> None:
    """Install the proportional-attention replacement in every self-attention layer that no
    other node has replaced (a replacement of another node's is left in place)."""
    replaced = model.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn1", {})
    skipped = []
    for b in blocks:
        for layer in range(b.depth):
            if (b.stage, b.index, layer) in replaced and replaced[(b.stage, b.index, layer)] is not sized_self_attention:
                skipped.append(f"{b.stage}_{b.index}.{layer}")
                continue
            model.set_model_attn1_replace(sized_self_attention, b.stage, b.index, layer)
    if skipped:
        log.warning("MaMe: another node replaced self-attention in %s; MaMe merges there without proportional "
                    "attention", ", ".join(skipped))
