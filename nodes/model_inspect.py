"""What a loaded ComfyUI model looks like to MaMe: its self-attention blocks and sampling.

Works on the 2024 ComfyUI and on v0.8.0+: only attributes both have are read.
"""
from __future__ import annotations

from dataclasses import dataclass

from .dit_inspect import DiTModel, family_name, inspect_dit, is_dit_like, unsupported_reason


@dataclass(frozen=True)
class AttentionBlock:
    stage: str  # "input" | "middle" | "output"
    index: int  # ComfyUI's block number in that stage
    level: int  # downsample factor of the block's token grid (1, 2, 4, 8)
    depth: int  # transformer blocks inside it (SDXL: up to 10)


def _has(module, class_name: str) -> bool:
    return any(type(m).__name__ == class_name for m in module.children())


def _transformer_depth(module) -> int:
    for m in module.children():
        if type(m).__name__ == "SpatialTransformer":
            return len(getattr(m, "transformer_blocks", [])) or 1
    return 0


def diffusion_unet(model_patcher):
    """The UNet inside a ModelPatcher, or None when the model is not a UNet (e.g. a DiT)."""
    inner = getattr(getattr(model_patcher, "model", None), "diffusion_model", None)
    if inner is None or not all(hasattr(inner, a) for a in ("input_blocks", "middle_block", "output_blocks")):
        return None
    return inner


def attention_blocks(unet) -> list[AttentionBlock]:
    """Every block with a SpatialTransformer, in execution order, with its level."""
    blocks = []
    level = 1
    for i, block in enumerate(unet.input_blocks):
        if _has(block, "Downsample"):
            level *= 2
        depth = _transformer_depth(block)
        if depth:
            blocks.append(AttentionBlock("input", i, level, depth))
    depth = _transformer_depth(unet.middle_block)
    if depth:
        blocks.append(AttentionBlock("middle", 0, level, depth))
    for i, block in enumerate(unet.output_blocks):
        depth = _transformer_depth(block)
        if depth:
            blocks.append(AttentionBlock("output", i, level, depth))
        if _has(block, "Upsample"):
            level //= 2
    return blocks


def model_sampling(model_patcher):
    getter = getattr(model_patcher, "get_model_object", None)
    if getter is not None:
        try:
            return getter("model_sampling")
        except (AttributeError, KeyError):
            pass
    return model_patcher.model.model_sampling



@dataclass(frozen=True)
class Inspection:
    """What the MaMe node found in a model: exactly one of ``unet_blocks``, ``dit`` and ``reason``."""

    unet_blocks: tuple[AttentionBlock, ...] = ()
    dit: DiTModel | None = None
    reason: str | None = None  # why the model passes through unchanged


def inspect_model(model_patcher) -> Inspection:
    """UNet (its self-attention blocks), DiT (its registry family), or unsupported with the reason."""
    dit = inspect_dit(model_patcher)
    if dit is not None:
        return Inspection(dit=dit)
    if is_dit_like(model_patcher):
        reason = unsupported_reason(model_patcher) or f"{family_name(model_patcher)} (a model family MaMe does not know)"
        return Inspection(reason=f"{reason} is not supported")
    unet = diffusion_unet(model_patcher)
    blocks = tuple(attention_blocks(unet)) if unet is not None else ()
    if not blocks:
        name = type(getattr(model_patcher, "model", model_patcher)).__name__
        return Inspection(reason=f"{name} has no UNet self-attention blocks MaMe can patch")
    return Inspection(unet_blocks=blocks)
