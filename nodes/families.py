"""The DiT family registry: everything MaMe knows about each DiT class of ComfyUI, in one place.

One :class:`Family` per model family, keyed by the class names ComfyUI v0.3.75 gives it
(``comfy/model_base.py``, ``comfy/ldm/``). The DiT inspection (``dit_inspect``), the attention
override (``dit_patch``), the MaMe node's description, the Block Schedule's help and the
table in docs/dit.md all read it. Adding a family is one entry here (plus a tiny-model config
for its test in ``embedded_host/dit_models.py``).

A family either merges (``reason`` is None) or passes through unchanged with one warning
that gives ``reason``.
"""
from __future__ import annotations

from dataclasses import dataclass

# Where the image tokens sit in a joint self-attention sequence of length L with N image
# tokens and a text context of C tokens.
TEXT_FIRST = "text_first"  # image at [C, C + N); anything after it is reference latents
IMAGE_LAST = "image_last"  # image at [L - N, L); anything before it is context (or reference)
# image at [L - P - N, L - P), then P learned pad tokens, P = (-N) mod the model's pad multiple
# (``Family.pad_attr``; no multiple on the model: P = 0); anything before it is context
IMAGE_THEN_PAD = "image_then_pad"
# image at [R, R + N), R = the reference tokens before it (HunyuanVideo's ref_latent, read by the
# model wrapper; else 0); anything after it is left alone (Wan HuMo's reference frames, HunyuanVideo's text)
IMAGE_FIRST = "image_first"
LAYOUT_WORDS = {TEXT_FIRST: "text, image, [references]", IMAGE_LAST: "[context/references], image",
                IMAGE_THEN_PAD: "[context], image, [image pad tokens]", IMAGE_FIRST: "[reference], image, [text/references]"}

# How MaMe knows which block an attention call belongs to.
MODEL_LABELS = None  # the model sets transformer_options block_type / block_index itself


@dataclass(frozen=True)
class Family:
    name: str  # short name used in logs and tests
    title: str  # what users call it
    classes: tuple[str, ...]  # ComfyUI class names (the first one in a model's MRO that matches wins)
    sequence: str  # the joint sequence of a self-attention call, in words (docs table)
    layout: str | None = None  # TEXT_FIRST | IMAGE_LAST | IMAGE_THEN_PAD | IMAGE_FIRST; None for pass-through families
    stages: tuple[str, ...] = ()  # block kinds the schedule can address (stage names of mame_core.schedule)
    block_attr: str | None = MODEL_LABELS  # module list MaMe labels via patches_replace["dit"]
    # A second module list MaMe labels via patches_replace["dit"] ("single_block", i), or by counting
    # after ``block_attr``'s, as stage ``stages[1]`` (AuraFlow's single layers; HiDream's single-stream blocks)
    single_attr: str | None = None
    # Models that neither label their blocks nor run patches_replace["dit"] (NextDiT, Cosmos): MaMe
    # labels ``block_attr``'s blocks by counting the attention calls of each model call, ``counted``
    # calls a block (0: not counted; Cosmos 2: self-attention, then cross-attention, left alone),
    # after one call per block of the ``counted_after`` module lists, which run first.
    counted: int = 0
    counted_after: tuple[str, ...] = ()
    # OmniGen2: module lists that run (one call a block) after ``counted_after``'s only in a model
    # call with reference latents (``ref_latents``)
    counted_with_refs: tuple[str, ...] = ()
    pad_attr: str | None = None  # IMAGE_THEN_PAD: the model attribute holding the pad multiple
    later_calls_cross: bool = False  # attention calls after the first in a block are cross-attention
    # A mask over the keys of the joint sequence (one row, broadcast over queries: HunyuanVideo's
    # text pad mask) is shortened with the merge: its image part merged like the image tokens,
    # the rest kept. Other families leave masked calls at full length.
    key_mask: bool = False
    patch: str = "2"  # patch size in words (docs table); the real one is read from the model
    masks: str = "none"  # masks and pad tokens in words (docs table)
    video: bool = False
    reason: str | None = None  # why it passes through unchanged; None when MaMe merges it

    @property
    def merges(self) -> bool:
        return self.reason is None


FAMILIES: tuple[Family, ...] = (
    Family("flux", "Flux.1, Flux.2, Kontext", ("Flux",), "text, image, [Kontext reference latents]",
           TEXT_FIRST, ("double", "single"), patch="2 (Flux.2: 1)"),
    Family("chroma", "Chroma", ("Chroma",), "text, image", TEXT_FIRST, ("double", "single")),
    Family("qwen_image", "Qwen-Image", ("QwenImageTransformer2DModel",), "text, image, [references]",
           TEXT_FIRST, ("double",), masks="masked calls left alone"),
    Family("sd3", "SD3/3.5", ("MMDiT", "OpenAISignatureMMDITWrapper"),
           "context (+registers), image; SD3.5's x-only attn2: image only", IMAGE_LAST, ("blocks",),
           block_attr="joint_blocks"),
    # The Wan variants of v0.3.75 (docs/dit.md, "Wan 2.1/2.2 variants"; tests/test_dit_wan_variants.py)
    Family("wan", "Wan 2.1/2.2 (T2V, I2V, 5B TI2V, Camera, Animate)", ("WanModel", "CameraWanModel", "AnimateWanModel"),
           "self-attention: [reference], video, [Phantom subject frames]; cross-attention: q video, k/v text (+257 CLIP tokens for I2V); "
           "Camera's control and Animate's pose are added to the video tokens, Animate's face tokens only reach "
           "its face adapter's attention (no override)",
           IMAGE_LAST, ("blocks",), block_attr="blocks", later_calls_cross=True, patch="(1, 2, 2)", video=True),
    Family("wan_vace", "Wan 2.1 VACE", ("VaceWanModel",),
           "self-attention: video; after some blocks a VACE hint block (self-attention over the control tokens, "
           "left at full length; cross-attention to text); cross-attention: text",
           IMAGE_LAST, ("blocks",), block_attr="blocks", later_calls_cross=True, patch="(1, 2, 2)", video=True),
    Family("wan_humo", "Wan 2.1 HuMo", ("HumoWanModel",),
           "self-attention: video, [reference frames]; cross-attention: text, then audio (16 tokens a frame)",
           IMAGE_FIRST, ("blocks",), block_attr="blocks", later_calls_cross=True, patch="(1, 2, 2)", video=True),
    Family("wan_s2v", "Wan 2.2 S2V", ("WanModel_S2V",),
           "video, [reference frames], [motion frames]; audio by cross-attention after some blocks",
           patch="(1, 2, 2)", video=True,
           reason="its blocks call attention without transformer_options, so no attention override reaches them"),
    # HiDream's blocks set no labels and run no patches_replace["dit"]: counted, double-stream then single-stream.
    # Its image-token mask exists only for a list of images of several sizes, which ComfyUI never passes.
    Family("hidream", "HiDream", ("HiDreamImageTransformer2DModel",),
           "image, T5 + Llama text, the block's own Llama tokens; E1's image_cond joined along the width: "
           "left at full length with one warning", IMAGE_FIRST, ("double", "single"),
           block_attr="double_stream_blocks", single_attr="single_stream_blocks", counted=1),
    Family("nextdit", "Lumina 2 / Z-Image", ("NextDiT",),
           "caption (+pad), image, image pad (refiners: caption only, image + pad only)", IMAGE_THEN_PAD,
           ("blocks",), block_attr="layers", counted=1, counted_after=("context_refiner", "noise_refiner"),
           pad_attr="pad_tokens_multiple",
           masks="Z-Image: learned pad tokens to a multiple of 32 on caption and image, never merged; "
                 "caption mask in the context refiner only"),
    Family("hunyuan_video", "HunyuanVideo 1.0/1.5, HunyuanImage 2.1", ("HunyuanVideo",),
           "[reference], image, text (+byT5, +vision tokens) (token refiner: text only)", IMAGE_FIRST,
           ("double", "single"), patch="(1, 2, 2) (HunyuanImage 2.1: 1)",
           masks="text pad mask over the keys: image part merged with the image (zeros stay zeros), "
                 "text part kept; the token refiner's text-only mask left alone", video=True, key_mask=True),
    Family("ltxv", "LTX-Video", ("LTXVModel",),
           "self-attention: video (frames x h x w latent cells), [LTXVAddGuide keyframe frames, appended along time]; "
           "cross-attention: q video, k/v text (under the text mask)", IMAGE_FIRST, ("blocks",),
           block_attr="transformer_blocks", later_calls_cross=True, patch="(1, 1, 1)",
           masks="text mask on cross-attention only (left alone)", video=True),
    # Chroma's blocks on 16x16-pixel patches; its NeRF head decodes each patch from that patch's token
    Family("chroma_radiance", "Chroma Radiance", ("ChromaRadiance",), "text, image (pixel patches)", TEXT_FIRST,
           ("double", "single"), patch="16 (pixels)"),
    # The image/video DiTs of v0.3.75 named by issue 27 (docs/dit.md, "More families";
    # tests/test_dit_more_families.py)
    Family("auraflow", "AuraFlow", ("comfy.ldm.aura.mmdit.MMDiT",), "8 registers, text, image", IMAGE_LAST,
           ("double", "single"), block_attr="double_layers", single_attr="single_layers"),
    Family("mochi", "Mochi (Genmo)", ("AsymmDiTJoint",), "video, text (unpadded T5 tokens only)", IMAGE_FIRST,
           ("blocks",), block_attr="blocks", patch="(1, 2, 2)", video=True),
    Family("pixart", "PixArt-α/Σ", ("PixArtMS",), "self-attention: image; cross-attention: text",
           reason="its attention (pixart/blocks.py AttentionKVCompress, MultiHeadCrossAttention) calls "
                  "optimized_attention without transformer_options, so no attention override reaches it"),
    Family("hunyuan_dit", "HunyuanDiT", ("HunYuanDiT",), "self-attention: image; cross-attention: CLIP + mT5 text",
           masks="text pad tokens replaced by a learned padding",
           reason="its attention (hydit/attn_layers.py Attention, CrossAttention) calls optimized_attention "
                  "without transformer_options, so no attention override reaches it"),
    Family("cosmos", "Cosmos 1 (Cosmos-1.0-Diffusion)", ("GeneralDIT",),
           "self-attention: video; cross-attention: text", IMAGE_LAST, ("blocks",), block_attr="blocks", counted=2,
           later_calls_cross=True, patch="(1, 2, 2)", video=True),
    Family("cosmos_predict2", "Cosmos Predict2", ("MiniTrainDIT",), "self-attention: video; cross-attention: text",
           IMAGE_LAST, ("blocks",), block_attr="blocks", counted=2, later_calls_cross=True, patch="(1, 2, 2)",
           video=True),
    Family("omnigen2", "OmniGen2", ("OmniGen2Transformer2DModel",),
           "text, [reference images], image (refiners: text only, image only, reference images only)", IMAGE_LAST,
           ("blocks",), block_attr="layers", counted=1, counted_after=("context_refiner", "noise_refiner"),
           counted_with_refs=("ref_image_refiner",), masks="text mask in the context refiner only (left alone)"),
)

BY_CLASS = {cls: family for family in FAMILIES for cls in family.classes}


def family_of_class(cls) -> Family | None:
    """The registry entry of a model class: the first class in its MRO the registry names, by its
    module-qualified name (two host classes are called ``MMDiT``: SD3's and AuraFlow's) or its name."""
    for base in cls.__mro__:
        family = BY_CLASS.get(f"{base.__module__}.{base.__qualname__}") or BY_CLASS.get(base.__name__)
        if family is not None:
            return family
    return None


def merging_titles() -> str:
    return ", ".join(f.title for f in FAMILIES if f.merges)


def dit_stages() -> tuple[str, ...]:
    """Every stage name a merging family has, in registry order."""
    seen: list[str] = []
    for family in FAMILIES:
        if family.merges:
            seen.extend(s for s in family.stages if s not in seen)
    return tuple(seen)


def docs_table() -> str:
    """The family table of docs/dit.md (a test keeps the docs equal to it)."""
    rows = ["| family (class) | joint sequence | masks, pad tokens | stages | block label | patch | video | status |",
            "|---|---|---|---|---|---|---|---|"]
    for f in FAMILIES:
        classes = ", ".join(f"`{c}`" for c in f.classes)
        stages = ", ".join(f.stages) or "-"
        status = "merges" if f.merges else f"passes through: {f.reason}"
        lists = f"`{f.block_attr}`" + (f" and `{f.single_attr}`" if f.single_attr else "")
        if not f.merges:
            label = "-"
        elif f.block_attr is None:
            label = "`block_type`/`block_index` (set by the model)"
        elif f.counted:
            label = f"MaMe labels {lists} by counting attention calls"
            if f.counted_after:
                refs = "".join(f", `{a}` with reference images" for a in f.counted_with_refs)
                label += " (after " + ", ".join(f"`{a}`" for a in f.counted_after) + refs + ", left at full length)"
            if f.counted > 1:
                label += f", {f.counted} a block"
        else:
            label = f"MaMe labels {lists} (dit replace)"
        if f.later_calls_cross:
            label += "; later attention calls in a block are cross-attention"
        rows.append(f"| {f.title} ({classes}) | {f.sequence} | {f.masks} | {stages} | {label} | {f.patch} | "
                    f"{'yes' if f.video else 'no'} | {status} |")
    return "\n".join(rows)
