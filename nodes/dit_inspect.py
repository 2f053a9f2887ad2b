"""What a loaded ComfyUI DiT looks like to MaMe: its family, patch size, blocks and where the
image tokens sit in each attention call.

Facts read from ComfyUI v0.3.75's model classes (comfy/ldm/...):

======================  ==============================  ===================  =====================
family (class)          joint sequence of an attention  block identity       patch (t, h, w)
======================  ==============================  ===================  =====================
flux (Flux)             text, image, reference latents  block_type/index     (1, 2, 2)
chroma (Chroma)         text, image                     block_type/index     (1, 2, 2)
qwen_image (QwenImage)  text, image, reference latents  block_type/index     (1, 2, 2)
sd3 (MMDiT)             context (+registers), image;    none: dit replace    (1, 2, 2)
                        SD3.5 x-only attn2: image only  ("double_block", i)
wan (WanModel)          self-attention: [reference,]    none: dit replace    (1, 2, 2)
                        image; cross-attention: q image ("double_block", i)
                        and k/v text (left alone)
======================  ==============================  ===================  =====================

Found but not patched (pass through with a warning naming them): HiDream (image first, then
text and per-block Llama tokens, under an image-token mask), Lumina/NextDiT and Z-Image
(caption and image each padded with learned pad tokens to a multiple), HunyuanVideo (image
first, text under a mask), Chroma Radiance (pixel-space patches), and every other class.
"""
from __future__ import annotations

from dataclasses import dataclass

# Where the image tokens start in a joint self-attention sequence of length L with N image
# tokens and a text context of `context` tokens.
TEXT_FIRST = "text_first"  # image at [context, context + N); anything after is reference latents
IMAGE_LAST = "image_last"  # image at [L - N, L)


@dataclass(frozen=True)
class DiTFamily:
    name: str
    layout: str  # TEXT_FIRST | IMAGE_LAST
    stages: tuple[str, ...]  # block kinds the schedule can address
    block_attr: str | None  # blocks to label through patches_replace["dit"]; None: the model labels them
    video: bool = False


FAMILIES = {
    "Flux": DiTFamily("flux", TEXT_FIRST, ("double", "single"), None),
    "Chroma": DiTFamily("chroma", TEXT_FIRST, ("double", "single"), None),
    "QwenImageTransformer2DModel": DiTFamily("qwen_image", TEXT_FIRST, ("double",), None),
    "MMDiT": DiTFamily("sd3", IMAGE_LAST, ("blocks",), "joint_blocks"),
    "OpenAISignatureMMDITWrapper": DiTFamily("sd3", IMAGE_LAST, ("blocks",), "joint_blocks"),
    "WanModel": DiTFamily("wan", IMAGE_LAST, ("blocks",), "blocks", video=True),
}

# Families recognised but left alone, with the reason the warning gives.
UNSUPPORTED = {
    "HiDreamImageTransformer2DModel": "HiDream (image tokens are masked and interleaved with per-block Llama tokens)",
    "NextDiT": "Lumina 2 / Z-Image NextDiT (caption and image are padded with pad tokens)",
    "HunyuanVideo": "HunyuanVideo (text tokens sit behind the image under a mask)",
    "ChromaRadiance": "Chroma Radiance (pixel-space patches)",
}


@dataclass(frozen=True)
class DiTModel:
    family: DiTFamily
    patch: tuple[int, int, int]  # (t, h, w) latent cells per token
    blocks: dict[str, int]  # stage -> number of blocks

    @property
    def name(self) -> str:
        return self.family.name


def diffusion_model(model_patcher):
    return getattr(getattr(model_patcher, "model", None), "diffusion_model", None)


def family_name(model_patcher) -> str:
    inner = diffusion_model(model_patcher)
    return type(inner if inner is not None else getattr(model_patcher, "model", model_patcher)).__name__


def _family_of(inner) -> DiTFamily | None:
    for cls in type(inner).__mro__:
        if cls.__name__ in UNSUPPORTED:
            return None
        if cls.__name__ in FAMILIES:
            return FAMILIES[cls.__name__]
    return None


def _patch_size(inner) -> tuple[int, int, int]:
    embedder = getattr(inner, "x_embedder", None)  # MMDiT's PatchEmbed
    size = getattr(embedder, "patch_size", None)
    if size is None:
        size = getattr(inner, "patch_size", None)
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
    else:
        blocks = {
            "double": len(getattr(inner, "double_blocks", getattr(inner, "transformer_blocks", ()))),
            "single": len(getattr(inner, "single_blocks", ())),
        }
        blocks = {s: n for s, n in blocks.items() if s in family.stages}
    return DiTModel(family, _patch_size(inner), blocks)


def is_dit_like(model_patcher) -> bool:
    """True for transformer models without UNet blocks (used to word the pass-through warning)."""
    inner = diffusion_model(model_patcher)
    return inner is not None and not hasattr(inner, "input_blocks")


def unsupported_reason(model_patcher) -> str | None:
    inner = diffusion_model(model_patcher)
    if inner is None:
        return None
    for cls in type(inner).__mro__:
        if cls.__name__ in UNSUPPORTED:
            return UNSUPPORTED[cls.__name__]
    return None


def token_grid(latent_shape, patch: tuple[int, int, int]) -> tuple[int, ...]:
    """The image token grid of a latent ``[B, C, H, W]`` or ``[B, C, T, H, W]``: ComfyUI pads
    the latent to whole patches, so each side is a ceiling division."""
    pt, ph, pw = patch
    h = -(-int(latent_shape[-2]) // ph)
    w = -(-int(latent_shape[-1]) // pw)
    if len(latent_shape) == 5:
        return (-(-int(latent_shape[2]) // pt), h, w)
    return (h, w)
