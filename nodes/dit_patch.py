"""MaMe for DiT and video models, at ComfyUI's attention call.

ComfyUI (v0.3.75+) routes every attention call of its DiT families through
``transformer_options["optimized_attention_override"](func, q, k, v, heads, ...)``. MaMe
sets that override on a clone's model options. Per attention call the override

1. finds the image tokens in the joint sequence (the family decides where: see dit_inspect),
2. plans the merge of the image tokens on their values ``v`` (keys and queries arrive with
   RoPE applied, which makes neighbours look unlike; see docs/dit.md for the measurement),
3. merges the image parts of q, k and v (text untouched), runs the wrapped attention on the
   shorter sequence, and restores the image part of the output (mode ``qkv``), or keeps every
   query and merges only keys and values (mode ``kv``).

An APPLY_MODEL wrapper reads the latent shape and sigma once per model call, on the host,
and starts the block step (pattern, window). Families that do not label their blocks in
``transformer_options`` (SD3, Wan) get a ``patches_replace["dit"]`` wrapper per block that
does, chained around any replacement already there. NextDiT (Lumina 2, Z-Image) has neither:
its blocks are numbered by counting the attention calls of each model call.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field

import torch

from ..mame_core import BlockAddress, BlockStep, MergeSettings, Schedule
from .dit_inspect import DiTModel, family_name, token_grid
from .families import IMAGE_FIRST, IMAGE_THEN_PAD, TEXT_FIRST
from .kit import ErrorStop, OnceLog, SamplingClock, sigma_of
from .merge_recorder import MergeRecorder
from .proportional_attention import bias_as_mask, sized_attention

log = logging.getLogger("comfyui-mame")

OVERRIDE_KEY = "optimized_attention_override"
WRAPPER_KEY = "mame_dit"
CALL_KEY = "mame_dit_call"  # transformer_options: what the wrapper read for this model call
BLOCK_KEY = "mame_dit_block"  # transformer_options: (stage, index) set by the block labeller
ATTN_COUNT_KEY = "mame_dit_attn_calls"  # attention calls so far in the labelled block (counted families: model call)


@dataclass(frozen=True)
class CallInfo:
    grid: tuple[int, ...]  # (h, w) or (frames, h, w) of the image tokens
    context_tokens: int  # text tokens the model was given (Flux-like: they come first)
    leading_tokens: int = 0  # IMAGE_FIRST: tokens before the image (HunyuanVideo's ref_latent)
    trailing_tokens: int = 0  # IMAGE_LAST: tokens after the image (Wan Phantom's subject frames)
    ref_calls: int = 0  # counted families: leading calls that run only with reference latents (OmniGen2)

    @property
    def image_tokens(self) -> int:
        return math.prod(self.grid)


def plan_image(step: BlockStep, x, address: BlockAddress, grid):
    """``step.plan`` on the image tokens: 3-D tiles for video (frames > 1), 2-D otherwise."""
    return step.plan(x, address, grid if len(grid) == 3 and grid[0] > 1 else grid[-2:])


def _flat(t: torch.Tensor, heads_first: bool) -> torch.Tensor:
    """[B, H, L, D] (ComfyUI's skip_reshape layout), [B, L, H*D] or [B, L, H, D] (SD3's v) to [B, L, H*D]."""
    if not heads_first:
        return t if t.dim() == 3 else t.reshape(t.shape[0], t.shape[1], -1)
    b, h, n, d = t.shape
    return t.transpose(1, 2).reshape(b, n, h * d)


def _replace_span(t: torch.Tensor, start: int, length: int, fn) -> torch.Tensor:
    """``t`` with ``fn`` applied to the tokens ``start:start+length`` (dim 1); no copy of the
    result when that span is all of ``t``."""
    if start == 0 and length == t.shape[1]:
        return fn(t)
    return torch.cat([t[:, :start], fn(t[:, start:start + length]), t[:, start + length:]], dim=1)


def _one_key_row(mask: torch.Tensor, length: int) -> bool:
    """An additive mask that is one row over the ``length`` keys, broadcast over heads and
    queries (``[B or 1, 1, L]`` or ``[B or 1, 1, 1, L]``: HunyuanVideo's text pad mask)."""
    return (torch.is_floating_point(mask) and mask.dim() in (3, 4) and mask.shape[-1] == length
            and math.prod(mask.shape[1:-1]) == 1)


def _merged_key_mask(mask: torch.Tensor, plan, start: int, n: int, batch: int) -> torch.Tensor:
    """The key mask ``[B, 1, 1, L']`` for the merged keys: its image part merged as the image
    tokens are (exact where a group's keys share one value, as HunyuanVideo's zeros over the
    image do; floored at -1e4, still masked for softmax, so that averaging cannot overflow),
    the rest (text) kept."""
    rows = mask.reshape(mask.shape[0], mask.shape[-1]).expand(batch, -1)
    image = rows[:, start:start + n].float().clamp(min=-1e4).unsqueeze(-1).contiguous()
    merged = plan.merge(image)[..., 0].to(mask.dtype)
    return torch.cat([rows[:, :start], merged, rows[:, start + n:]], dim=1)[:, None, None, :]


@dataclass
class DiTMerge:
    """One MaMe node's DiT patch: the attention override, the model wrapper and the block labels."""

    model: DiTModel
    step: object
    mode: str
    clock: SamplingClock
    recorder: MergeRecorder = field(default_factory=MergeRecorder)
    base_override: object = None  # a non-MaMe override found on the model (chained, called last)
    chain: list = field(default_factory=list)  # MaMe patches in the order they were applied
    last_call: dict = field(default_factory=dict)  # "stage_index" -> (tokens, merged tokens)
    once: OnceLog = field(default_factory=OnceLog)
    stop: ErrorStop = None  # the error policy shared with the UNet patch (kit.ErrorStop)

    def __post_init__(self) -> None:
        if self.stop is None:
            self.stop = ErrorStop(self.recorder)

    def __deepcopy__(self, memo):
        # ModelPatcher.clone deep-copies model_options; the override must stay the object the
        # model wrapper starts each call on.
        return self

    # -- ComfyUI entry points ----------------------------------------------------------------

    def apply_model_wrapper(self, executor, x, t, c_concat=None, c_crossattn=None, control=None,
                            transformer_options=None, **kwargs):
        if transformer_options is None:
            transformer_options = {}
        if kwargs.get("image_cond") is not None:  # HiDream E1: the source image's tokens sit row by row beside the image's
            self.once.warn("image_cond", "MaMe: calls with an image_cond latent (HiDream E1) run at full length: "
                                         "it is joined to the image along its width, so the image is not one span")
            transformer_options.pop(CALL_KEY, None)
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        try:
            grid = token_grid(x.shape, self.model.patch)
            keyframes = kwargs.get("keyframe_idxs")  # LTXV: guide frames appended to the latent along time
            if isinstance(keyframes, torch.Tensor) and len(grid) == 3:  # the image span ends before them
                grid = (grid[0] - int(keyframes.shape[-1]) // (grid[1] * grid[2]), *grid[1:])
            context = int(c_crossattn.shape[1]) if isinstance(c_crossattn, torch.Tensor) and c_crossattn.dim() == 3 else 0
            ref = kwargs.get("ref_latent")  # HunyuanVideo: a reference latent's tokens come before the image
            leading = math.prod(token_grid(ref.shape, self.model.patch)) if isinstance(ref, torch.Tensor) else 0
            subjects = kwargs.get("time_dim_concat")  # Wan Phantom: subject frames follow the video
            trailing = math.prod(token_grid(subjects.shape, self.model.patch)) if isinstance(subjects, torch.Tensor) else 0
            refs = self.model.ref_calls if kwargs.get("ref_latents") is not None else 0  # OmniGen2's ref refiner
            transformer_options[CALL_KEY] = CallInfo(grid, context, leading, trailing_tokens=trailing, ref_calls=refs)
            transformer_options[ATTN_COUNT_KEY] = 0
            self.step.start_call(self.clock.progress(sigma_of(t)), x.device)
            if self.recorder.armed:
                self.recorder.set_rows(transformer_options.get("cond_or_uncond"), x.shape[0])
            self.last_call = {}
        except Exception as err:  # never take the user's sampling down with us
            self.stop.fail(err, "DiT model wrapper")
            transformer_options.pop(CALL_KEY, None)
        out = executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        self._maybe_log()
        return out

    def block_labeller(self, stage: str, index: int, previous):
        def label(args, extra):
            options = args.get("transformer_options")
            if isinstance(options, dict):
                options[BLOCK_KEY] = (stage, index)
                options[ATTN_COUNT_KEY] = 0
            return previous(args, extra) if previous is not None else extra["original_block"](args)

        return label

    def __call__(self, func, *args, **kwargs):
        """The attention override: ``func(q, k, v, heads, mask=..., skip_reshape=..., ...)``."""
        q, k, v = args[:3]
        heads = args[3] if len(args) > 3 else kwargs.get("heads")
        rest = args[4:]
        options = kwargs.get("transformer_options") or {}
        merged = None
        try:
            merged = self._merge(q, k, v, heads, rest, kwargs, options)
        except Exception as err:  # never take the user's sampling down with us
            self.stop.fail(err, "DiT attention override")
        if merged is None:
            return self._run_base(func, args, kwargs)
        as_mask = self.base_override is None and bias_as_mask(func, q.device)
        return merged(lambda *a, **kw: self._run_base(func, a, kw), as_mask)

    # -- internals ------------------------------------------------------------------------------

    def _run_base(self, func, args, kwargs):
        if self.base_override is not None:
            return self.base_override(func, *args, **kwargs)
        return func(*args, **kwargs)

    def _address(self, options):
        family = self.model.family
        if family.counted:  # NextDiT: the refiners' calls come first, then one call per block
            calls = options.get(ATTN_COUNT_KEY, 0)
            options[ATTN_COUNT_KEY] = calls + 1
            leading = self.model.leading_calls + options[CALL_KEY].ref_calls
            index, later = divmod(calls - leading, family.counted)  # Cosmos: 2 calls a block
            if later or index < 0:
                return None  # the block's cross-attention, or a refiner's call
            for stage in family.stages:  # HiDream: its double-stream blocks, then its single-stream ones
                if index < self.model.blocks[stage]:
                    return BlockAddress(stage, index, 0, 1)
                index -= self.model.blocks[stage]
            return None
        labelled = options.get(BLOCK_KEY)
        if labelled is not None:
            calls = options.get(ATTN_COUNT_KEY, 0)
            options[ATTN_COUNT_KEY] = calls + 1
            if self.model.family.later_calls_cross and calls > 0:
                return None  # e.g. Wan: the first attention of a block is self-attention, the rest cross
            return BlockAddress(labelled[0], int(labelled[1]), calls, 1)
        kind = options.get("block_type")
        index = options.get("block_index")
        if kind in ("double", "single") and index is not None:
            return BlockAddress(kind, int(index), 0, 1)
        return None

    def _merge(self, q, k, v, heads, rest, kwargs, options):
        call = options.get(CALL_KEY)
        if call is None or self.stop.error is not None:
            return None
        counted = bool(self.model.family.counted)
        address = self._address(options) if counted else None  # counted families: every call counts
        mask = rest[0] if len(rest) == 1 else kwargs.get("mask")  # NextDiT passes its mask positionally
        if len(rest) > 1 or (mask is not None and not self.model.family.key_mask):
            return None
        heads_first = bool(kwargs.get("skip_reshape", False))
        seq = 2 if heads_first else 1
        length = q.shape[seq]
        if k.shape[seq] != length or v.shape[seq] != length:
            return None  # cross-attention (Wan's text attention): left alone
        if mask is not None and not _one_key_row(mask, length):
            return None  # not one row over the keys (HunyuanVideo's token refiner): left alone
        if not counted:
            address = self._address(options)
        if address is None:
            return None
        n = call.image_tokens
        layout = self.model.family.layout
        if layout == TEXT_FIRST:
            start = call.context_tokens
        elif layout == IMAGE_THEN_PAD:  # the pad tokens after the image stay outside the merged span
            start = length - n - (-n) % self.model.pad_multiple
        elif layout == IMAGE_FIRST:  # Wan HuMo: its reference frames follow the video
            start = call.leading_tokens  # HunyuanVideo: its ref_latent tokens (if any) come first
        else:
            start = length - n - call.trailing_tokens
        if start < 0 or start + n > length:
            self.once.warn(("span", length, n), f"MaMe: {length} tokens cannot hold the {n} image tokens of grid "
                                                 f"{call.grid} in {self.model.name}; attention left at full length")
            return None
        qf, kf, vf = (_flat(t, heads_first) for t in (q, k, v))
        plan = None
        for member in self.chain:  # the first MaMe node in the chain that merges this block wins
            plan = plan_image(member.step, vf[:, start:start + n], address, call.grid)
            if not plan.is_identity:
                break
        if plan is None or plan.is_identity:
            return None
        if member.recorder.armed:
            frame = math.prod(call.grid[-2:])  # video: the first frame
            member.recorder.record(vf[:, start:start + frame], call.grid[-2:], member.step, address)
        key = f"{address.stage}_{address.index}"
        self.last_call[key] = (n, plan.merged_tokens)
        return lambda run, as_mask: self._attend(run, as_mask, plan, start, n, qf, kf, vf, heads, kwargs, heads_first,
                                                 mask)

    def _attend(self, run, as_mask, plan, start, n, qf, kf, vf, heads, kwargs, heads_first, mask=None):
        k2, v2 = (_replace_span(t, start, n, plan.merge) for t in (kf, vf))
        q2 = _replace_span(qf, start, n, plan.merge) if self.mode == "qkv" else qf
        call = dict(kwargs)
        if mask is not None:
            call["mask"] = _merged_key_mask(mask, plan, start, n, qf.shape[0])
        call["skip_reshape"] = False
        call.pop("heads", None)
        want_heads_first = bool(call.pop("skip_output_reshape", False))
        log_size = getattr(plan, "key_log_size", None)
        if log_size is None:
            out = run(q2, k2, v2, heads, **call)
        else:
            b, m = log_size.shape
            full = torch.cat([log_size.new_zeros(b, start), log_size, log_size.new_zeros(b, k2.shape[1] - start - m)],
                             dim=1)
            out = sized_attention(run, q2, k2, v2, heads, full, as_mask, **call)
        if self.mode == "qkv":
            out = _replace_span(out, start, plan.merged_tokens, plan.restore)
        if want_heads_first:
            b, length, c = out.shape
            out = out.reshape(b, length, heads, c // heads).transpose(1, 2)
        return out

    def _maybe_log(self) -> None:
        if not self.last_call:
            return
        parts = [f"{name} {full}->{merged}" for name, (full, merged) in self.last_call.items()]
        self.once.info(tuple(sorted(self.last_call.items())),
                       f"MaMe: {self.model.name}, merging image tokens in {len(parts)} attention blocks, "
                       f"mode {self.mode}: " + "; ".join(parts))


def patch_dit(model_patcher, dit: DiTModel, settings: MergeSettings, schedule: Schedule, seed: int,
              recorder: MergeRecorder, reuse=None):
    """A clone of ``model_patcher`` with MaMe at the attention calls of ``dit`` (from
    ``model_inspect.inspect_model``)."""
    import comfy.patcher_extension as extension

    from .model_inspect import model_sampling

    schedule = dataclasses.replace(schedule, levels=None)  # levels are a UNet notion: every DiT block is level 1
    patched = model_patcher.clone()
    options = patched.model_options.setdefault("transformer_options", {})
    existing = options.get(OVERRIDE_KEY)
    clock = SamplingClock(model_sampling(model_patcher), schedule.start_percent, schedule.end_percent)
    mame = DiTMerge(dit, BlockStep(settings, schedule, int(seed), reuse=reuse), settings.mode, clock, recorder)
    if isinstance(existing, DiTMerge):
        mame.chain = existing.chain + [mame]
        mame.base_override = existing.base_override
    else:
        mame.chain = [mame]
        mame.base_override = existing
    options[OVERRIDE_KEY] = mame
    patched.add_wrapper_with_key(extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY, mame.apply_model_wrapper)
    if dit.family.block_attr is not None and not dit.family.counted:
        stage = dit.family.stages[0]
        replaced = options.get("patches_replace", {}).get("dit", {})
        lists = [(stage, "double_block")] + ([(dit.family.stages[1], "single_block")] if dit.family.single_attr else [])
        for stage, kind in lists:  # AuraFlow: its single layers too
            for i in range(dit.blocks[stage]):
                previous = replaced.get((kind, i))
                patched.set_model_patch_replace(mame.block_labeller(stage, i, previous), "dit", kind, i)
    targets = [f"{stage}_{i}" for stage, count in dit.blocks.items() for i in range(count)
               if schedule.ratio_for(stage, i, 1) > 0]
    log.info("MaMe: %s (%s); %s; blocks: %s", dit.name, family_name(model_patcher), schedule.describe(),
             ", ".join(targets) or "none")
    return patched
