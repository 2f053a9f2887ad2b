"""Tiny image and video DiTs of ComfyUI v0.3.75 beyond ``dit_models`` (issue 27), built from the
host's own model classes with seeded weights (as ``dit_models``: real architectures at small
width and depth), and the conditioning each model reads, so the sampler drives its real forward.

  auraflow   MMDiT (AuraFlow): 2 double (joint) layers, 2 single layers over [registers + text,
             image], 128 wide, 2 heads, patch 2.
  mochi      AsymmDiTJoint (Genmo Mochi): 3 joint blocks over [video, text], 3-D RoPE, video
             128 wide, text 64 wide, 2 heads, patch (1, 2, 2), 12-channel latent.
  cosmos_predict2 MiniTrainDIT (Cosmos Predict2): 3 blocks, each self-attention over the video
             tokens then cross-attention to the text, 3-D RoPE, 128 wide, 2 heads, patch (1, 2, 2).
  cosmos     GeneralDIT (Cosmos 1 text-to-video, as the 7B lays it out: FA-CA-MLP blocks, THWBD
             tokens, learnable extra position embedding per block), 3 blocks, 128 wide, 2 heads.
  omnigen2   OmniGen2Transformer2DModel: one context, noise and reference-image refiner layer, 2
             layers, 128 wide, 2 heads (1 key/value head), patch 2; reads the text mask's length.
  pixart     PixArtMS as PixArt-Sigma lays it out (passes through: nodes/families.py), 2 blocks,
             128 wide, 2 heads.
  hunyuan_dit HunYuanDiT (passes through), 2 blocks, 128 wide, 2 heads, 12 CLIP and 12 mT5 text
             tokens with their masks.
  chroma     Chroma: Flux's double and single blocks without their own modulation (one
             approximator makes it all), 2 + 2 blocks over [text, image], 128 wide, 2 heads, patch 2.
  qwen_image QwenImageTransformer2DModel (Qwen-Image): 2 joint blocks over [text, image], 3-axis
             RoPE, 128 wide, 2 heads, patch 2, one-frame latent (Wan 2.1's latent format).
  hidream    HiDreamImageTransformer2DModel: 2 double-stream and 2 single-stream MoE blocks over
             [image, T5 + Llama text, that block's Llama tokens], 128 wide, 2 heads, patch 2.
  chroma_radiance ChromaRadiance: Chroma's blocks (2 + 2) on 16x16 pixel patches of an RGB
             image, decoded by its NeRF head, 128 wide, 2 heads.

Each is 2-4 blocks deep; text conditioning is 12 seeded tokens, 64 wide (a config value of each
tiny model; HiDream's Llama conditioning is 12 tokens from each of 4 layers). Mochi's video MLP
stays 12288 wide (the class asserts it), hence its mlp_ratio_x.
"""
from __future__ import annotations

from .dit_models import seeded_patcher

CHROMA = {"in_channels": 64, "out_channels": 64, "context_in_dim": 64, "hidden_size": 128, "mlp_ratio": 4.0,
          "num_heads": 2, "depth": 2, "depth_single_blocks": 2, "axes_dim": [16, 24, 24], "theta": 10000,
          "patch_size": 2, "qkv_bias": True, "in_dim": 64, "out_dim": 128, "hidden_dim": 128, "n_layers": 2}
CONFIGS = {
    "auraflow": ("AuraFlow", {"in_channels": 4, "out_channels": 4, "patch_size": 2, "dim": 128, "n_layers": 4,
                              "n_double_layers": 2, "n_heads": 2, "global_conddim": 128, "cond_seq_dim": 64,
                              "max_seq": 32 * 32}),
    "mochi": ("GenmoMochi", {"depth": 3, "patch_size": 2, "num_heads": 2, "hidden_size_x": 128, "hidden_size_y": 64,
                             "mlp_ratio_x": 96.0, "mlp_ratio_y": 4.0, "learn_sigma": False, "in_channels": 12,
                             "qk_norm": True, "qkv_bias": False, "out_bias": True, "attn_drop": 0.0,
                             "patch_embed_bias": True, "posenc_preserve_area": True, "timestep_mlp_bias": True,
                             "attend_to_padding": False, "timestep_scale": 1000.0, "use_t5": True,
                             "t5_feat_dim": 64, "t5_token_length": 256, "rope_theta": 10000.0}),
    "cosmos_predict2": ("CosmosT2IPredict2", {"max_img_h": 240, "max_img_w": 240, "max_frames": 128,
                                              "in_channels": 16, "out_channels": 16, "patch_spatial": 2,
                                              "patch_temporal": 1, "model_channels": 128, "num_blocks": 3,
                                              "num_heads": 2, "concat_padding_mask": True,
                                              "crossattn_emb_channels": 64, "pos_emb_cls": "rope3d",
                                              "pos_emb_learnable": True, "pos_emb_interpolation": "crop",
                                              "min_fps": 1, "max_fps": 30, "use_adaln_lora": True,
                                              "adaln_lora_dim": 32, "rope_h_extrapolation_ratio": 4.0,
                                              "rope_w_extrapolation_ratio": 4.0, "rope_t_extrapolation_ratio": 1.0}),
    "cosmos": ("CosmosT2V", {"max_img_h": 240, "max_img_w": 240, "max_frames": 128, "in_channels": 16,
                             "out_channels": 16, "patch_spatial": 2, "patch_temporal": 1, "model_channels": 128,
                             "block_config": "FA-CA-MLP", "concat_padding_mask": True, "pos_emb_cls": "rope3d",
                             "pos_emb_learnable": False, "pos_emb_interpolation": "crop", "block_x_format": "THWBD",
                             "affline_emb_norm": True, "use_adaln_lora": True, "adaln_lora_dim": 32,
                             "num_blocks": 3, "num_heads": 2, "crossattn_emb_channels": 64,
                             "extra_per_block_abs_pos_emb": True, "rope_h_extrapolation_ratio": 1.0,
                             "rope_w_extrapolation_ratio": 1.0, "rope_t_extrapolation_ratio": 2.0,
                             "extra_per_block_abs_pos_emb_type": "learnable"}),
    "omnigen2": ("Omnigen2", {"axes_dim_rope": [16, 24, 24], "axes_lens": [1024, 1664, 1664],
                              "ffn_dim_multiplier": None, "hidden_size": 128, "in_channels": 16, "multiple_of": 32,
                              "norm_eps": 1e-05, "num_attention_heads": 2, "num_kv_heads": 1, "num_layers": 2,
                              "num_refiner_layers": 1, "out_channels": None, "patch_size": 2, "text_feat_dim": 64,
                              "timestep_scale": 1000.0}),
    "hunyuan_dit": ("HunyuanDiT", {"input_size": 64, "patch_size": 2, "in_channels": 4, "hidden_size": 128, "depth": 2,
                                   "num_heads": 2, "text_states_dim": 64, "text_states_dim_t5": 64, "text_len": 12,
                                   "text_len_t5": 12, "learn_sigma": True}),
    "pixart": ("PixArtSigma", {"num_heads": 2, "patch_size": 2, "hidden_size": 128, "in_channels": 4, "depth": 2,
                               "model_max_length": 300, "input_size": 64, "pe_interpolation": 1,
                               "micro_condition": False, "caption_channels": 64}),
    "chroma": ("Chroma", CHROMA),
    "qwen_image": ("QwenImage", {"patch_size": 2, "in_channels": 64, "out_channels": 16, "num_layers": 2,
                                 "attention_head_dim": 64, "num_attention_heads": 2, "joint_attention_dim": 64,
                                 "axes_dims_rope": (16, 24, 24)}),
    "hidream": ("HiDream", {"patch_size": 2, "in_channels": 16, "out_channels": None, "num_layers": 2,
                            "num_single_layers": 2, "attention_head_dim": 64, "num_attention_heads": 2,
                            "caption_channels": [64, 64], "text_emb_dim": 64, "num_routed_experts": 4,
                            "num_activated_experts": 2, "axes_dims_rope": [32, 16, 16], "max_resolution": [128, 128],
                            "llama_layers": [0, 1, 2, 3]}),
    # Chroma's blocks on 16x16 RGB pixel patches, decoded by the NeRF head
    "chroma_radiance": ("ChromaRadiance", {**CHROMA, "in_channels": 3, "out_channels": 3, "patch_size": 16,
                                           "nerf_hidden_size": 16, "nerf_mlp_ratio": 2, "nerf_depth": 2,
                                           "nerf_max_freqs": 8, "nerf_tile_size": 512,
                                           "nerf_final_head_type": "linear", "nerf_embedder_dtype": None}),
}
# (latent shape, text tokens' width) per model
LATENTS = {"auraflow": ((1, 4, 32, 40), 64), "mochi": ((1, 12, 3, 16, 20), 64),
           "cosmos_predict2": ((1, 16, 3, 16, 20), 64), "cosmos": ((1, 16, 3, 16, 20), 64),
           "omnigen2": ((1, 16, 32, 40), 64), "hunyuan_dit": ((1, 4, 32, 40), 64), "pixart": ((1, 4, 32, 40), 64),
           "chroma": ((1, 16, 32, 40), 64), "qwen_image": ((1, 16, 1, 32, 40), 64), "hidream": ((1, 16, 32, 40), 64),
           "chroma_radiance": ((1, 3, 128, 160), 64)}


def build(name: str, seed: int = 0):
    """A ComfyUI ModelPatcher around the real class of ``name`` with seeded weights (CPU, fp32)."""
    from comfy import supported_models

    cls, unet = CONFIGS[name]
    return seeded_patcher(getattr(supported_models, cls)(dict(unet)), seed)


def conditioning(name: str, tokens: int = 12, seed: int = 1):
    """ComfyUI conditioning ``[[cond, extras]]`` with seeded text tokens and the extras ``name`` reads."""
    import torch

    g = torch.Generator().manual_seed(seed)
    _, width = LATENTS[name]
    extras = {}
    if name in ("mochi", "omnigen2"):  # the text mask: Mochi's joint attention takes the unpadded tokens only
        extras["attention_mask"] = torch.ones(1, tokens, dtype=torch.long)
    if name == "hunyuan_dit":  # HunyuanDiT's second text encoder (mT5) and both masks
        extras.update(attention_mask=torch.ones(1, tokens), conditioning_mt5xl=torch.randn(1, tokens, width, generator=g),
                      attention_mask_mt5xl=torch.ones(1, tokens))
    if name in ("chroma", "chroma_radiance", "hidream"):  # the pooled vector (Flux's conditioning; Chroma ignores it)
        extras["pooled_output"] = torch.randn(1, width, generator=g)
    if name == "hidream":  # the Llama tokens of each layer its blocks read
        layers = len(CONFIGS[name][1]["llama_layers"])
        extras["conditioning_llama3"] = torch.randn(1, layers, tokens, width, generator=g)
    return [[torch.randn(1, tokens, width, generator=g), extras]]
