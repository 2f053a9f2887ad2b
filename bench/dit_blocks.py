"""Per-block speed and error of MaMe at the DiT attention hook, at real model widths.

Each case is one transformer block built to a family's dimensions in plain torch (random
weights, this CPU): norm, fused qkv projection, per-head RMS norm of q and k, RoPE (2-D for
Flux, 3-D for Wan, Z-Image's 3 axes with the caption on the first; SD3 has none), the
attention call (the hook ComfyUI's ``optimized_attention_override`` wraps), output
projection and MLP (Z-Image: SwiGLU, 3 matrices); Wan adds its cross-attention to 512 text
tokens. Z-Image's case is one of NextDiT's main layers: caption padded to a multiple of 32,
then the image (1024²: 64x64 tokens, already a multiple of 32, so no image pad tokens). Flux double and single blocks do the same work per
token (12 d^2 multiply-adds in their linears, one joint attention), so one Flux block form
stands for both. Image tokens come from real photos (scikit-image) so neighbours are alike.

Methods at the hook, each merging only the image tokens of q, k, v after RoPE:
  mame      MaMe/MaRe (this project), similarity on v, the size bias as a key mask (what the
            node gives ComfyUI's attention_pytorch on a CPU); ``mame-channel`` passes it as
            the extra channel per head (other kernels, CUDA); ``mame-k`` plans on the rotated k
  tome      ToMe's matcher (tomesd's bipartite_soft_matching_random2d on v), merge q, k, v, unmerge
  todo      ToDo-style key/value pooling (2x1 average of the image k/v grid), queries full

Amdahl bound: the block's speed-up if attention ran on the merged length at no merge/restore
cost, measured in place: the block with its attention call run on the first M tokens and the
output padded back (``free-merge``), in the same interleaved run. Attention alone at both
lengths is timed too, for reference.

    python -m bench.dit_blocks --case flux-1024 --rounds 2 > bench/results/dit_flux_1024.txt
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys

import torch
import torch.nn.functional as F

from bench.photos import load_photo
from bench.timing import time_interleaved
from mame_core import MergeSettings, merged_tokens_for, plan_merge
from mame_core.size_bias import add_size_channel, key_bias_mask

CASES = {
    # name: dim, heads, mlp hidden, (frames, h, w) image tokens, text tokens, layout, rope
    "flux-256": dict(dim=3072, heads=24, mlp=12288, grid=(1, 16, 16), text=64, rope="2d"),
    "flux-1024": dict(dim=3072, heads=24, mlp=12288, grid=(1, 64, 64), text=512, rope="2d"),
    "flux-2048": dict(dim=3072, heads=24, mlp=12288, grid=(1, 128, 128), text=512, rope="2d"),
    "sd35m-1024": dict(dim=1536, heads=24, mlp=6144, grid=(1, 64, 64), text=333, rope=None),
    "wan13b-480p33": dict(dim=1536, heads=12, mlp=8960, grid=(9, 30, 52), text=0, cross=512, rope="3d"),
    # Z-Image (NextDiT, 3840 wide, 30 heads, SwiGLU 10240); a 128-token caption (a prompt in
    # Qwen3's chat template, already a multiple of 32)
    "zimage-1024": dict(dim=3840, heads=30, mlp=10240, grid=(1, 64, 64), text=128, rope="zimage", gated=True),
}


def photo_grid(frames: int, h: int, w: int, dim: int, seed: int = 0) -> torch.Tensor:
    """[1, frames*h*w, dim]: 4x4-pixel patches of a photo through a fixed random projection
    and LayerNorm; video frames pan across the photo two pixels a frame."""
    side = max(h, w) * 4 + 2 * frames
    image = torch.from_numpy(load_photo("astronaut", side))
    gen = torch.Generator().manual_seed(seed)
    projection = torch.randn(48, dim, generator=gen) / math.sqrt(48)
    out = []
    for f in range(frames):
        crop = image[2 * f:2 * f + h * 4, 2 * f:2 * f + w * 4]
        patches = crop.reshape(h, 4, w, 4, 3).permute(0, 2, 1, 3, 4).reshape(h * w, 48)
        out.append(patches @ projection)
    tokens = torch.cat(out)
    return F.layer_norm(tokens, tokens.shape[-1:]).unsqueeze(0)


def rope_angles(grid, head_dim: int, kind: str | None, text: int):
    """cos/sin [L, head_dim/2] for (text at position 0, image at (t, row, col))."""
    if kind is None:
        return None
    frames, h, w = grid
    theta = 10000
    if kind == "2d":
        split = (head_dim // 8, head_dim * 7 // 16, head_dim * 7 // 16)  # Flux: 16/56/56 of 128
    elif kind == "zimage":
        split, theta = (head_dim // 4, head_dim * 3 // 8, head_dim * 3 // 8), 256  # 32/48/48 of 128
    else:
        third = head_dim // 6
        split = (head_dim - 4 * third, 2 * third, 2 * third)  # Wan
    t, r, c = torch.meshgrid(torch.arange(frames), torch.arange(h), torch.arange(w), indexing="ij")
    pos = [torch.cat([torch.zeros(text), p.flatten().float()]) for p in (t, r, c)]
    if kind == "zimage":  # NextDiT: caption at 1..C on the first axis, the image at C + 1
        pos[0] = torch.cat([torch.arange(1, text + 1).float(), torch.full((frames * h * w,), text + 1.0)])
    angles = []
    for p, d in zip(pos, split, strict=False):
        freqs = 1.0 / (theta ** (torch.arange(0, d, 2).float() / d))
        angles.append(p[:, None] * freqs[None])
    a = torch.cat(angles, dim=1)
    return a.cos(), a.sin()


def apply_rope(x, rope):
    cos, sin = rope  # x: [B, H, L, D]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class Block(torch.nn.Module):
    def __init__(self, dim, heads, mlp, cross=0, dtype=torch.bfloat16, seed=0, gated=False):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)

        def linear(i, o):
            layer = torch.nn.Linear(i, o, bias=False, dtype=dtype)
            with torch.no_grad():
                layer.weight.copy_(torch.randn(o, i, generator=gen) / math.sqrt(i))
            return layer

        self.heads = heads
        self.qkv, self.proj = linear(dim, 3 * dim), linear(dim, dim)
        self.fc1, self.fc2 = linear(dim, mlp), linear(mlp, dim)
        self.gate = linear(dim, mlp) if gated else None  # SwiGLU (NextDiT's FeedForward)
        self.cross = cross
        if cross:
            self.cq, self.ckv, self.cout = linear(dim, dim), linear(dim, 2 * dim), linear(dim, dim)

    def forward(self, x, text, rope, hook, context=None):
        b, n, c = x.shape
        tokens = torch.cat([text, x], dim=1) if text is not None else x
        qkv = self.qkv(F.layer_norm(tokens, (c,))).reshape(b, tokens.shape[1], 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        q, k = F.rms_norm(q, q.shape[-1:]), F.rms_norm(k, k.shape[-1:])
        if rope is not None:
            q, k = apply_rope(q, rope).to(v.dtype), apply_rope(k, rope).to(v.dtype)
        out = hook(q, k, v)  # [B, L, C]
        tokens = tokens + self.proj(out)
        if self.cross:
            h = self.heads
            cq = self.cq(tokens).reshape(b, -1, h, c // h).transpose(1, 2)
            ck, cv = self.ckv(context).reshape(b, -1, 2, h, c // h).permute(2, 0, 3, 1, 4)
            co = F.scaled_dot_product_attention(cq, ck, cv).transpose(1, 2).reshape(b, -1, c)
            tokens = tokens + self.cout(co)
        normed = F.layer_norm(tokens, (c,))
        hidden = F.gelu(self.fc1(normed)) if self.gate is None else F.silu(self.fc1(normed)) * self.gate(normed)
        tokens = tokens + self.fc2(hidden)
        return tokens[:, -n:]


def sdpa(q, k, v, mask=None):
    b, h, n, d = q.shape
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, n, h * d)


def flat(t):
    b, h, n, d = t.shape
    return t.transpose(1, 2).reshape(b, n, h * d)


def heads_first(t, h):
    b, n, c = t.shape
    return t.reshape(b, n, h, c // h).transpose(1, 2)


def hooks(grid, text, heads, ratio):
    frames, h, w = grid
    settings = MergeSettings(ratio=ratio)

    def around(merge, restore, pair):
        def hook(q, k, v):
            qf, kf, vf = flat(q), flat(k), flat(v)
            parts = [merge(t[:, text:]) for t in (qf, kf, vf)]
            merged = [heads_first(torch.cat([t[:, :text], p], dim=1), heads) for t, p in zip((qf, kf, vf), parts, strict=False)]
            out = sdpa(*merged)
            return torch.cat([out[:, :text], restore(out[:, text:])], dim=1)
        return hook

    def mame(source, as_mask=True):
        # as nodes/dit_patch.py does it: one plan per call on the image tokens (3-D tiles for
        # video), proportional attention as a key mask (what ComfyUI's attention_pytorch gets
        # on a CPU) or through the extra size channel (any other kernel), restore the image part
        def span(t, fn):
            return fn(t) if not text else torch.cat([t[:, :text], fn(t[:, text:])], dim=1)

        def hook(q, k, v):
            qf, kf, vf = flat(q), flat(k), flat(v)
            metric = (vf if source == "v" else kf)[:, text:]
            plan = plan_merge(metric, h, w, settings, pattern=0, frames=frames)
            q2, k2, v2 = (span(t, plan.merge) for t in (qf, kf, vf))
            log_size = torch.cat([plan.key_log_size.new_zeros(1, text), plan.key_log_size], dim=1)
            if as_mask:
                out = sdpa(*(heads_first(t, heads) for t in (q2, k2, v2)), mask=key_bias_mask(log_size, q.dtype))
            else:
                q2, k2, v2, drop_channels = add_size_channel(q2, k2, v2, log_size, heads)
                out = drop_channels(sdpa(*(heads_first(t, heads) for t in (q2, k2, v2))))
            return span(out, plan.restore)
        return hook

    def tome(q, k, v):
        from tomesd.merge import bipartite_soft_matching_random2d

        metric = flat(v)[:, text:].reshape(frames, h * w, -1)
        gen = torch.Generator().manual_seed(0)
        merge, unmerge = bipartite_soft_matching_random2d(metric, w, h, 2, 2, int(h * w * ratio), no_rand=False,
                                                          generator=gen)
        fold = lambda t: t.reshape(frames, -1, t.shape[-1])  # noqa: E731
        unfold = lambda t: t.reshape(1, -1, t.shape[-1])  # noqa: E731
        return around(lambda t: unfold(merge(fold(t))), lambda t: unfold(unmerge(fold(t))), None)(q, k, v)

    def todo(q, k, v):
        def pool(t):
            img = flat(t)[:, text:]
            grid_t = img.reshape(frames, h, w, -1).permute(0, 3, 1, 2)
            pooled = F.avg_pool2d(grid_t, (1, 2), ceil_mode=True).permute(0, 2, 3, 1).reshape(1, -1, img.shape[-1])
            return heads_first(torch.cat([flat(t)[:, :text], pooled], dim=1), heads)
        return sdpa(q, pool(k), pool(v))

    merged_img = merged_tokens_for(h, w, settings, frames)

    def free_merge(q, k, v):
        # the Amdahl bound in place: attention on the merged length, a merge that costs nothing
        # (the first tokens stand in for the merged ones), the output padded back with zeros
        kept = text + merged_img
        short = [heads_first(flat(t)[:, :kept], heads) for t in (q, k, v)]
        out = sdpa(*short)
        return torch.cat([out, out.new_zeros(out.shape[0], q.shape[2] - kept, out.shape[2])], dim=1)

    return {"full": sdpa, "mame": mame("v"), "mame-channel": mame("v", as_mask=False), "mame-k": mame("k"),
            "tome": tome, "todo": todo, "free-merge": free_merge}


def run(case: str, ratio: float, rounds: int, dtype) -> dict:
    cfg = CASES[case]
    frames, h, w = cfg["grid"]
    dim, heads, text = cfg["dim"], cfg["heads"], cfg["text"]
    gen = torch.Generator().manual_seed(1)
    x = photo_grid(frames, h, w, dim).to(dtype)
    txt = F.layer_norm(torch.randn(1, text, dim, generator=gen), (dim,)).to(dtype) if text else None
    context = torch.randn(1, cfg.get("cross", 0), dim, generator=gen).to(dtype) if cfg.get("cross") else None
    rope = rope_angles(cfg["grid"], dim // heads, cfg["rope"], text)
    block = Block(dim, heads, cfg["mlp"], cfg.get("cross", 0), dtype, gated=cfg.get("gated", False))
    methods = hooks(cfg["grid"], text, heads, ratio)
    with torch.no_grad():
        ref = block(x, txt, rope, methods["full"], context).float()
        errors = {}
        for name, hook in methods.items():
            if name not in ("full", "free-merge"):
                y = block(x, txt, rope, hook, context).float()
                errors[name] = ((y - ref).norm() / ref.norm()).item()
        # attention alone at full and at the merged length, for the Amdahl bound
        length = text + frames * h * w
        merged_img = merged_tokens_for(h, w, MergeSettings(ratio=ratio), frames)
        qf = torch.randn(1, heads, length, dim // heads, generator=gen).to(dtype)
        qm = qf[:, :, :text + merged_img].contiguous()
        timed = {name: (lambda hk=hook: block(x, txt, rope, hk, context))
                 for name, hook in methods.items() if name != "mame-k"}
        timed["attention-full"] = lambda: F.scaled_dot_product_attention(qf, qf, qf)
        timed["attention-merged"] = lambda: F.scaled_dot_product_attention(qm, qm, qm)
        times = time_interleaved(timed, rounds=rounds, warmup=1)
    t = {k: v["median"] for k, v in times.items()}
    bound = t["full"] / t["free-merge"]
    return {
        "case": case, "ratio": ratio, "dtype": str(dtype), "rounds": rounds, "tokens": length,
        "merged_tokens": text + merged_img, "seconds": t,
        "speedup": {m: t["full"] / t[m] for m in ("mame", "mame-channel", "tome", "todo")},
        "amdahl_bound": bound, "mame_share_of_bound": (t["full"] / t["mame"]) / bound,
        "error": errors, "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=sorted(CASES), action="append", required=True)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    for case in args.case:
        result = run(case, args.ratio, args.rounds, dtype)
        print(json.dumps(result, indent=1))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
