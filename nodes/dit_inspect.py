"""What a loaded ComfyUI DiT looks like to MaMe: its registry family (``families.py``), patch
size and blocks. Every fact about a family (layout, stages, masks, why it passes through)
sits in the registry, not here."""
from __future__ import annotations

from dataclasses import dataclass

from .families import Family, family_of_class


@dataclass(frozen=True)
class DiTModel:
    family: Family
    patch: tuple[int, int, int]  # (t, h, w) latent cells per token
    blocks: dict[str, int]  # stage -> number of blocks
    leading_calls: int = 0  # attention calls before the first labelled block (family.counted_after)
    pad_multiple: int = 1  # image tokens are padded with learned tokens to a multiple of this
    ref_calls: int = 0  # further leading calls in a model call with reference latents (family.counted_with_refs)

    @property
    def name(self) -> str:
        return self.family.name


def diffusion_model(model_patcher):
    return getattr(getattr(model_patcher, "model", None), "diffusion_model", None)


def family_name(model_patcher) -> str:
    inner = diffusion_model(model_patcher)
    return type(inner if inner is not None else getattr(model_patcher, "model", model_patcher)).__name__


def _family_of(inner) -> Family | None:
    family = family_of_class(type(inner))
    return family if family is not None and family.merges else None


def _patch_size(inner) -> tuple[int, int, int]:
    embedder = getattr(inner, "x_embedder", None)  # MMDiT's PatchEmbed
    size = getattr(embedder, "patch_size", None)
    if size is None:
        size = getattr(inner, "patch_size", None)
    if size is None:  # LTXV: its patchifier's (t, h, w)
        size = getattr(getattr(inner, "patchifier", None), "patch_size", None)
    if size is None and hasattr(inner, "patch_spatial"):  # Cosmos 1 / Predict2
        size = (int(inner.patch_temporal), int(inner.patch_spatial), int(inner.patch_spatial))
    if size is None:
        size = getattr(getattr(inner, "params", None), "patch_size", 2)
    if isinstance(size, int):
        return (1, size, size)
    size = tuple(int(s) for s in size)
    return (1, *size) if len(size) == 2 else size


def inspect_dit(model_patcher) -> DiTModel | None:
    """The DiT MaMe can patch inside ``model_patcher``, or None (UNets, unknown families)."""
    inner = diffusion_model(model_patcher)
    if inner is None:
        return None
    family = _family_of(inner)
    if family is None:
        return None
    if family.block_attr is not None:
        blocks = {family.stages[0]: len(getattr(inner, family.block_attr))}
        if family.single_attr is not None:
            blocks[family.stages[1]] = len(getattr(inner, family.single_attr))
    else:
        blocks = {
            "double": len(getattr(inner, "double_blocks", getattr(inner, "transformer_blocks", ()))),
            "single": len(getattr(inner, "single_blocks", ())),
        }
        blocks = {s: n for s, n in blocks.items() if s in family.stages}
    leading = sum(len(getattr(inner, attr, ())) for attr in family.counted_after)
    pad = getattr(inner, family.pad_attr, None) if family.pad_attr else None
    refs = sum(len(getattr(inner, attr, ())) for attr in family.counted_with_refs)
    return DiTModel(family, _patch_size(inner), blocks, leading, int(pad or 1), refs)


def is_dit_like(model_patcher) -> bool:
    """True for transformer models without UNet blocks (used to word the pass-through warning)."""
    inner = diffusion_model(model_patcher)
    return inner is not None and not hasattr(inner, "input_blocks")


def unsupported_reason(model_patcher) -> str | None:
    inner = diffusion_model(model_patcher)
    family = None if inner is None else family_of_class(type(inner))
    if family is None or family.merges:
        return None
    return f"{family.title} ({family.reason})"


def token_grid(latent_shape, patch: tuple[int, int, int]) -> tuple[int, ...]:
    """The image token grid of a latent ``[B, C, H, W]`` or ``[B, C, T, H, W]``: ComfyUI pads
    the latent to whole patches, so each side is a ceiling division."""
    pt, ph, pw = patch
    h = -(-int(latent_shape[-2]) // ph)
    w = -(-int(latent_shape[-1]) // pw)
    if len(latent_shape) == 5:
        return (-(-int(latent_shape[2]) // pt), h, w)
    return (h, w)
