"""Random-weight Stable Diffusion pipelines built from configs, for running the quality
command and the tests without a model hub. ``tiny`` is a few-MB model with the SD1.5 block
layout; ``sd15`` is the real SD1.5 UNet (slow on CPU)."""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import torch

TINY_UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 32, 64, 64),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
)


def tiny_tokenizer(folder: str | Path | None = None):
    """A CLIP tokenizer over a made-up letter vocabulary (real tokenizer files need a hub)."""
    from transformers import CLIPTokenizer

    folder = Path(folder or tempfile.mkdtemp(prefix="mame-tokenizer-"))
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def seeded_weights_(module: torch.nn.Module, seed: int = 0, scale: float | None = None) -> torch.nn.Module:
    """Seeded weights. By default unit norms, zero biases and ``N(0, 1/fan_in)`` weights, so
    activations keep their size through the network and self-attention moves the output as
    in a trained model (MaMe at ratio 0.5 changes the tiny UNet's output by about 20%,
    not 1e-5 as with a flat small scale). ``scale`` gives every tensor ``N(0, scale^2)``."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            last = name.rsplit(".", 1)[-1]
            if scale is not None:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
            elif p.dim() == 1 and last == "weight":
                p.fill_(1.0)
            elif last == "bias" or p.dim() == 0:
                p.zero_()
            else:
                fan_in = math.prod(p.shape[1:]) if p.dim() > 1 else p.shape[0]
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(max(fan_in, 1)))
    return module


def random_pipeline(kind: str = "tiny"):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from bench.unet_configs import SD15

    if kind == "tiny":
        unet = seeded_weights_(UNet2DConditionModel(**TINY_UNET))
        hidden, vae_channels = 32, (32, 64)
    elif kind == "sd15":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            unet = UNet2DConditionModel(**SD15)
        hidden, vae_channels = 768, (128, 256, 512, 512)
    else:
        raise ValueError(f"random pipeline kind must be tiny or sd15, got {kind!r}")
    text = seeded_weights_(CLIPTextModel(CLIPTextConfig(
        vocab_size=60, hidden_size=hidden, intermediate_size=hidden * 4, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=77, projection_dim=hidden)), seed=1, scale=0.02)
    vae = AutoencoderKL(block_out_channels=vae_channels, down_block_types=("DownEncoderBlock2D",) * len(vae_channels),
                        up_block_types=("UpDecoderBlock2D",) * len(vae_channels), latent_channels=4,
                        norm_num_groups=8 if kind == "tiny" else 32)
    pipe = StableDiffusionPipeline(unet=unet.eval(), vae=vae.eval(), text_encoder=text.eval(),
                                   tokenizer=tiny_tokenizer(), scheduler=DDIMScheduler(clip_sample=False),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe
