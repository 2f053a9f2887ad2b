"""Hook MaMe into a diffusers UNet2DConditionModel with forward hooks (no module swapped)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from mame_core import MaMeConfigError, MergeSettings, Reuse, Schedule, parse_levels, parse_rules
from mame_core.block_step import DEFAULTS, BlockAddress, BlockStep

log = logging.getLogger("comfyui-mame")
STATE_ATTR = "_mame_state"


@dataclass
class BlockRef:
    module: torch.nn.Module  # the BasicTransformerBlock's attn1
    stage: str  # "input" | "middle" | "output", numbered as ComfyUI numbers UNet blocks
    index: int
    layer: int  # position inside a multi-layer transformer (SDXL: up to 10)
    level: int


_UNSET = object()


@dataclass
class MaMeState:
    step: BlockStep
    num_train_timesteps: int
    blocks: list[BlockRef]
    handles: list = field(default_factory=list)
    latent_shape: tuple | None = None
    pending: dict = field(default_factory=dict)

    @property
    def settings(self) -> MergeSettings:
        return self.step.settings

    @property
    def schedule(self) -> Schedule:
        return self.step.schedule

    @property
    def last_pass(self) -> dict:
        """``"input_1.0"`` -> (tokens, merged tokens) of the latest eager UNet call."""
        return {f"{name}.{layer}": (r.tokens, r.merged_tokens)
                for name, r in self.step.records.items() for layer in sorted(r.layers)}


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


def apply_mame(pipe_or_unet, ratio: float = DEFAULTS["ratio"], threshold: float = DEFAULTS["threshold"],
               mode: str = DEFAULTS["mode"], tile: int = DEFAULTS["tile_size"], levels=_UNSET, schedule=None,
               start_percent=_UNSET, end_percent=_UNSET, seed: int = DEFAULTS["seed"], gate: str | None = None,
               force: bool | None = None, plan_reuse_steps: int = 1, share_layers: bool = False):
    """Patch a pipeline (or its UNet) with MaMe; calling it again re-configures.

    ``schedule`` is schedule text (``"d1 = 0.6, output_9-11 = 0.7"``) or a
    :class:`mame_core.Schedule`; a Schedule carries its own levels and window, so passing
    ``levels``, ``start_percent`` or ``end_percent`` beside one is an error. The window is
    progress through the diffusion timesteps, ``1 - t / num_train_timesteps``, the same
    measure as ComfyUI's start/end percent. ``force``: merge blocks too small to save time on
    the device too (default: ``$MAME_FORCE_MERGE``; see mame_core.payoff). ``plan_reuse_steps``
    and ``share_layers``: reuse each block's plan over steps and layers (mame_core.plan_reuse). Returns its argument. A model without UNet
    attention blocks is returned unchanged with a warning.

    ``torch.compile(unet)`` after this compiles the UNet with MaMe in one graph per window
    state: the UNet pre-hook that reads the timestep runs outside the compiled region."""
    reuse = Reuse(layers=share_layers, steps=plan_reuse_steps)
    unet = _unet(pipe_or_unet)
    remove_mame(unet)
    settings = MergeSettings(ratio=ratio, threshold=threshold, mode=mode, tile=tile, **({"gate": gate} if gate else {}))
    if isinstance(schedule, Schedule):
        mixed = [name for name, value in (("levels", levels), ("start_percent", start_percent),
                                          ("end_percent", end_percent)) if value is not _UNSET]
        if mixed:
            raise MaMeConfigError(
                f"apply_mame: {', '.join(mixed)} cannot be combined with schedule=Schedule(...), which sets its own "
                f"levels and window; pass them to Schedule(levels=..., start_percent=..., end_percent=...) instead")
        plan = schedule
    else:
        rules = parse_rules(schedule) if schedule else ()
        plan = Schedule(ratio=ratio, levels=parse_levels(DEFAULTS["levels"] if levels is _UNSET else levels),
                        rules=rules,
                        start_percent=DEFAULTS["start_percent"] if start_percent is _UNSET else start_percent,
                        end_percent=DEFAULTS["end_percent"] if end_percent is _UNSET else end_percent)
    blocks = _attention_blocks(unet)
    if not blocks:
        log.warning("MaMe: %s has no UNet self-attention blocks; left unchanged", type(unet).__name__)
        return pipe_or_unet
    plan = plan.resolve_levels(sorted({b.level for b in blocks}))
    steps = getattr(getattr(unet, "config", None), "num_train_timesteps", None)
    scheduler = getattr(pipe_or_unet, "scheduler", None)
    steps = steps or getattr(getattr(scheduler, "config", None), "num_train_timesteps", None) or 1000
    state = MaMeState(BlockStep(settings, plan, int(seed), force, reuse), int(steps), blocks)
    state.pending = {_slot(BlockAddress(r.stage, r.index, r.layer, r.level)): None for r in blocks}
    state.handles.append(unet.register_forward_pre_hook(_unet_pre_hook(state), with_kwargs=True))
    for ref in blocks:
        address = BlockAddress(ref.stage, ref.index, ref.layer, ref.level)
        state.handles.append(ref.module.register_forward_pre_hook(_merge_hook(state, address), with_kwargs=True))
        state.handles.append(ref.module.register_forward_hook(_restore_hook(state, address)))
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
    # Dynamo skips this frame: torch.compile(unet) runs module hooks before the compiled
    # forward, so the one host read of the timestep per UNet call stays out of the graph.
    @torch.compiler.disable
    def hook(module, args, kwargs):
        sample = args[0] if args else kwargs.get("sample")
        timestep = args[1] if len(args) > 1 else kwargs.get("timestep")
        state.latent_shape = tuple(sample.shape)
        if isinstance(timestep, torch.Tensor):
            timestep = timestep.reshape(-1)[0] if timestep.numel() else 0.0
        state.step.start_call(1.0 - float(timestep) / state.num_train_timesteps, sample.device)
        for key in state.pending:
            state.pending[key] = None
        return None

    return hook


def _slot(address: BlockAddress) -> str:
    return f"{address.block}.{address.layer}"


def _merge_hook(state: MaMeState, address: BlockAddress):
    def hook(module, args, kwargs):
        if not args or kwargs.get("encoder_hidden_states") is not None or kwargs.get("attention_mask") is not None:
            return None
        x = args[0]
        if state.latent_shape is None or x.dim() != 3:
            return None
        grid = state.step.grid_for(x.shape[1], state.latent_shape, address)
        if grid is None:
            return None
        plan = state.step.plan(x, address, grid)
        if plan.is_identity:
            return None
        merged = plan.merge(x)
        if plan.key_log_size is not None:
            # Proportional attention: every processor adds a float mask to the logits, so a
            # [B, 1, M] mask of log sizes is each merged key's bias for every query and head.
            kwargs = {**kwargs, "attention_mask": plan.key_log_size[:, None, :].to(x.dtype)}
        if state.settings.mode == "qkv":
            state.pending[_slot(address)] = plan
            return (merged, *args[1:]), kwargs
        return args, {**kwargs, "encoder_hidden_states": merged}

    return hook


def _restore_hook(state: MaMeState, address: BlockAddress):
    slot = _slot(address)

    def hook(module, args, output):
        plan, state.pending[slot] = state.pending.get(slot), None
        return output if plan is None else plan.restore(output)

    return hook
