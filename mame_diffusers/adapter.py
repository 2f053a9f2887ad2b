"""Hook MaMe into a diffusers UNet2DConditionModel with forward hooks (no module swapped)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from mame_core import MergeSettings, Schedule, infer_grid, parse_levels, parse_rules, plan_seeded

log = logging.getLogger("comfyui-mame")
STATE_ATTR = "_mame_state"


@dataclass
class BlockRef:
    module: torch.nn.Module  # the BasicTransformerBlock's attn1
    stage: str  # "input" | "middle" | "output", numbered as ComfyUI numbers UNet blocks
    index: int
    layer: int  # position inside a multi-layer transformer (SDXL: up to 10)
    level: int


@dataclass
class MaMeState:
    settings: MergeSettings
    schedule: Schedule
    seed: int
    num_train_timesteps: int
    blocks: list[BlockRef]
    handles: list = field(default_factory=list)
    latent_shape: tuple | None = None
    timestep: float = 0.0
    progress: float = 0.0
    pending: dict = field(default_factory=dict)
    last_pass: dict = field(default_factory=dict)  # "input_1.0" -> (tokens, merged tokens)


def _unet(pipe_or_unet):
    return getattr(pipe_or_unet, "unet", pipe_or_unet)


def _attention_blocks(unet) -> list[BlockRef]:
    """Every BasicTransformerBlock's attn1 with its ComfyUI-style block address and level."""
    if not all(hasattr(unet, a) for a in ("down_blocks", "mid_block", "up_blocks")):
        return []
    per_level = (getattr(unet.config, "layers_per_block", 2) if hasattr(unet, "config") else 2)
    per_level = per_level if isinstance(per_level, int) else max(per_level)
    n = len(unet.down_blocks)
    refs: list[BlockRef] = []

    def add(attentions, stage, first_index, level):
        for j, transformer in enumerate(attentions or []):
            layers = [m for m in transformer.modules() if type(m).__name__ == "BasicTransformerBlock"]
            for k, block in enumerate(layers):
                if getattr(block, "attn1", None) is not None and not getattr(block, "only_cross_attention", False):
                    refs.append(BlockRef(block.attn1, stage, first_index + j, k, level))

    for i, down in enumerate(unet.down_blocks):
        add(getattr(down, "attentions", None), "input", 1 + i * (per_level + 1), 2**i)
    if unet.mid_block is not None:
        add(getattr(unet.mid_block, "attentions", None), "middle", 0, 2 ** (n - 1))
    for i, up in enumerate(unet.up_blocks):
        add(getattr(up, "attentions", None), "output", i * (per_level + 1), 2 ** (n - 1 - i))
    return refs


def mame_state(pipe_or_unet) -> MaMeState | None:
    return getattr(_unet(pipe_or_unet), STATE_ATTR, None)


def apply_mame(pipe_or_unet, ratio: float = 0.5, threshold: float = 0.7, mode: str = "qkv", tile: int = 8,
               levels: str = "auto", schedule=None, start_percent: float = 0.0, end_percent: float = 1.0,
               seed: int = 0, temperature: float = 0.005, gate: str = "hard"):
    """Patch a pipeline (or its UNet) with MaMe; calling it again re-configures.

    ``schedule`` is schedule text (``"d1 = 0.6, output_9-11 = 0.7"``) or a
    :class:`mame_core.Schedule`. The window is progress through the diffusion timesteps,
    ``1 - t / num_train_timesteps``, the same measure as ComfyUI's start/end percent.
    Returns its argument. A model without UNet attention blocks is returned unchanged with
    a warning."""
    unet = _unet(pipe_or_unet)
    remove_mame(unet)
    settings = MergeSettings(ratio=ratio, threshold=threshold, mode=mode, tile=tile, temperature=temperature, gate=gate)
    if isinstance(schedule, Schedule):
        plan = schedule
    else:
        rules = parse_rules(schedule) if schedule else ()
        plan = Schedule(ratio=ratio, levels=parse_levels(levels), rules=rules, start_percent=start_percent,
                        end_percent=end_percent)
    blocks = _attention_blocks(unet)
    if not blocks:
        log.warning("MaMe: %s has no UNet self-attention blocks; left unchanged", type(unet).__name__)
        return pipe_or_unet
    plan = plan.resolve_levels(sorted({b.level for b in blocks}))
    steps = getattr(getattr(unet, "config", None), "num_train_timesteps", None)
    scheduler = getattr(pipe_or_unet, "scheduler", None)
    steps = steps or getattr(getattr(scheduler, "config", None), "num_train_timesteps", None) or 1000
    state = MaMeState(settings, plan, int(seed), int(steps), blocks)
    state.handles.append(unet.register_forward_pre_hook(_unet_pre_hook(state), with_kwargs=True))
    for ref in blocks:
        state.handles.append(ref.module.register_forward_pre_hook(_merge_hook(state, ref), with_kwargs=True))
        state.handles.append(ref.module.register_forward_hook(_restore_hook(state, ref)))
    setattr(unet, STATE_ATTR, state)
    return pipe_or_unet


def remove_mame(pipe_or_unet):
    """Remove every hook MaMe added; the model is then exactly as before ``apply_mame``."""
    unet = _unet(pipe_or_unet)
    state = getattr(unet, STATE_ATTR, None)
    if state is not None:
        for handle in state.handles:
            handle.remove()
        delattr(unet, STATE_ATTR)
    return pipe_or_unet


def _unet_pre_hook(state: MaMeState):
    def hook(module, args, kwargs):
        sample = args[0] if args else kwargs.get("sample")
        timestep = args[1] if len(args) > 1 else kwargs.get("timestep")
        state.latent_shape = tuple(sample.shape)
        if isinstance(timestep, torch.Tensor):
            timestep = timestep.reshape(-1)[0] if timestep.numel() else 0.0
        state.timestep = float(timestep)  # one host read per UNet call, not per block
        state.progress = min(1.0, max(0.0, 1.0 - state.timestep / state.num_train_timesteps))
        state.pending.clear()
        state.last_pass.clear()
        return None

    return hook


def _merge_hook(state: MaMeState, ref: BlockRef):
    def hook(module, args, kwargs):
        if not args or kwargs.get("encoder_hidden_states") is not None or kwargs.get("attention_mask") is not None:
            return None
        x = args[0]
        if state.latent_shape is None or x.dim() != 3 or not state.schedule.active_at(state.progress):
            return None
        grid = infer_grid(x.shape[1], state.latent_shape)
        if grid is None:
            return None
        level, h, w = grid
        ratio = state.schedule.ratio_for(ref.stage, ref.index, level)
        if ratio == 0.0:
            return None
        plan = plan_seeded(x, h, w, state.settings.with_ratio(ratio), state.seed, ref.stage, ref.index, ref.layer,
                           f"{state.timestep:.6g}")
        if plan.is_identity:
            return None
        merged = plan.merge(x)
        state.last_pass[f"{ref.stage}_{ref.index}.{ref.layer}"] = (x.shape[1], plan.merged_tokens)
        if state.settings.mode == "qkv":
            state.pending[id(module)] = plan
            return (merged, *args[1:]), kwargs
        return args, {**kwargs, "encoder_hidden_states": merged}

    return hook


def _restore_hook(state: MaMeState, ref: BlockRef):
    def hook(module, args, output):
        plan = state.pending.pop(id(module), None)
        return output if plan is None else plan.restore(output)

    return hook
