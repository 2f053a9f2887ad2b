"""Per-block speed and error of MaMe at the DiT attention hook, at real model widths.

Each case is one transformer block built to a family's dimensions in plain torch (random
weights, this CPU): norm, fused qkv projection, per-head RMS norm of q and k, RoPE (2-D for
Flux, 3-D for Wan and HunyuanVideo, Z-Image's 3 axes with the caption on the first, Flux.2's
4 axes with the text's index on the last, LTX-Video's over the whole width on pixel
coordinates; SD3 has none), the attention call (the hook ComfyUI's
``optimized_attention_override`` wraps), output projection and MLP (Z-Image, Flux.2: SwiGLU,
3 matrices); Wan adds its cross-attention to 512 text tokens, LTX-Video to 128. Z-Image's
case is one of NextDiT's main layers: caption padded to a multiple of 32, then the image
(1024²: 64x64 tokens, already a multiple of 32, so no image pad tokens). Flux double and
single blocks do the same work per token (12 d^2 multiply-adds in their linears, one joint
attention), so one Flux block form stands for both; so do HunyuanVideo's. HunyuanVideo puts the text after the video
(``layout="image_first"``, as in nodes/families.py); the hooks merge the image span wherever
it sits. Image tokens come from real photos (scikit-image) so neighbours are alike.

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

Timing ``block`` (the default) times the whole block once per method and round. Timing
``parts`` is for machines too slow for that at the widest cases. The work outside the
attention call is the same for every method: the part before the hook (norm, qkv, RoPE) is
timed once and the part after it (output projection, cross-attention, MLP) at each call of
the error pass (median); the hooks are timed interleaved, ``rounds`` times each, on the
block's own q, k, v; a method's block time is the sum. The error pass then measures MaMe and
ToMe's matcher only (``mame-channel`` has the same plan as ``mame``, only the route of the size
bias differs).

    python -m bench.dit_blocks --case flux-1024 --rounds 2 > bench/results/dit-flux-1024.json
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time

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
    # Sizes below read from ComfyUI v0.3.75. Flux.2 (model_detection.py): 48 heads, axes_dim
    # 4 x 32 (so 128 a head, 6144 wide: flux/model.py requires sum(axes_dim) = width / heads),
    # mlp_ratio 3 with mlp_silu_act (SwiGLU: 2 x 18432 in, 18432 out), theta 2000, patch 1 on
    # a 128-channel latent at 1/16 (nodes_flux.py EmptyFlux2LatentImage: 1024² -> 64x64); the
    # text padded to 512 tokens (model_base.py Flux2.extra_conds).
    "flux2-1024": dict(dim=6144, heads=48, mlp=18432, grid=(1, 64, 64), text=512, rope="flux2", gated=True),
    # HunyuanVideo 1.5 (model_detection.py: heads = width / 128, mlp_ratio 4, axes_dim 16/56/56,
    # theta 256; width and patch come from the checkpoint's img_in: 2048 and 1, diffusers'
    # HunyuanVideo15Transformer3DModel defaults, 16 heads of 128, 54 blocks): latent 1/16 in
    # space, 1/4 in time (nodes_hunyuan.py EmptyHunyuanVideo15Latent), its default 848x480 x 25
    # frames -> 7 x 30 x 53; the text (the prompt's LLM tokens, template cut off) follows the
    # video. 25 frames, not the 121 of Tencent's own default (31 latent frames, 49k tokens):
    # one block of that would take hours on this CPU.
    "hunyuan15-480p25": dict(dim=2048, heads=16, mlp=8192, grid=(7, 30, 53), text=128, rope="hunyuan",
                             layout="image_first"),
    # LTX-Video 2B (lightricks/model.py defaults: 32 heads of 64, cross-attention to 2048 wide
    # text, FeedForward mult 4, RoPE over the whole width on pixel coordinates), 128-channel
    # latent at 1/32 in space, 1/8 in time, patch 1 (nodes_lt.py EmptyLTXVLatentVideo default
    # 768x512 x 97 frames -> 13 x 16 x 24); T5 text padded to 128 tokens (text_encoders/lt.py).
    "ltxv-768x512x97": dict(dim=2048, heads=32, mlp=8192, grid=(13, 16, 24), text=0, cross=128, rope="ltxv"),
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


def rope_angles(grid, head_dim: int, kind: str | None, text: int, text_after: bool = False, heads: int = 1):
    """cos/sin [L, head_dim/2] ([heads, L, head_dim/2] for LTX-Video's whole-width RoPE) for the
    image at (t, row, col) and the text before it (after it with ``text_after``), at 0."""
    if kind is None:
        return None
    frames, h, w = grid
    t, r, c = (p.flatten().float() for p in torch.meshgrid(
        torch.arange(frames), torch.arange(h), torch.arange(w), indexing="ij"))

    def joint(image, txt):
        return torch.cat([image, txt]) if text_after else torch.cat([txt, image])

    zeros, none = torch.zeros(text), torch.zeros(frames * h * w)
    if kind == "ltxv":
        # lightricks/model.py precompute_freqs_cis: pixel coordinates (latent x 8, 32, 32; time at
        # 25 fps) over max_pos (20, 2048, 2048), dim // 6 frequencies an axis, interleaved by
        # axis, the remaining pair unrotated first
        dim = head_dim * heads
        frac = torch.stack([t * 8 / 25 / 20, r * 32 / 2048, c * 32 / 2048], dim=-1)
        freqs = 10000 ** torch.linspace(0, 1, dim // 6) * math.pi / 2
        a = (freqs[None, :, None] * (frac[:, None, :] * 2 - 1)).flatten(1)
        a = torch.cat([a.new_zeros(a.shape[0], dim // 2 - a.shape[1]), a], dim=1)
        a = a.reshape(-1, heads, head_dim // 2).transpose(0, 1)
        return a.cos(), a.sin()
    theta = 10000
    if kind in ("2d", "hunyuan"):
        split = (head_dim // 8, head_dim * 7 // 16, head_dim * 7 // 16)  # Flux.1, HunyuanVideo: 16/56/56 of 128
        theta = 256 if kind == "hunyuan" else theta
    elif kind == "zimage":
        split, theta = (head_dim // 4, head_dim * 3 // 8, head_dim * 3 // 8), 256  # 32/48/48 of 128
    elif kind == "flux2":
        split, theta = (head_dim // 4,) * 4, 2000  # 4 x 32 of 128; the text's index on the 4th axis
    else:
        third = head_dim // 6
        split = (head_dim - 4 * third, 2 * third, 2 * third)  # Wan
    pos = [joint(p, zeros) for p in (t, r, c)]
    if kind == "zimage":  # NextDiT: caption at 1..C on the first axis, the image at C + 1
        pos[0] = torch.cat([torch.arange(1, text + 1).float(), torch.full((frames * h * w,), text + 1.0)])
    if kind == "flux2":  # the image's first axis is its reference index, 0
        pos = [joint(none, zeros), pos[1], pos[2], joint(none, torch.arange(text).float())]
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
    def __init__(self, dim, heads, mlp, cross=0, dtype=torch.bfloat16, seed=0, gated=False, text_after=False):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)

        def linear(i, o):
            layer = torch.nn.Linear(i, o, bias=False, dtype=dtype)
            with torch.no_grad():
                layer.weight.copy_(torch.randn(o, i, generator=gen) / math.sqrt(i))
            return layer

        self.heads, self.text_after = heads, text_after
        self.qkv, self.proj = linear(dim, 3 * dim), linear(dim, dim)
        self.fc1, self.fc2 = linear(dim, mlp), linear(mlp, dim)
        self.gate = linear(dim, mlp) if gated else None  # SwiGLU (NextDiT's FeedForward, Flux.2)
        self.cross = cross
        if cross:
            self.cq, self.ckv, self.cout = linear(dim, dim), linear(dim, 2 * dim), linear(dim, dim)

    def attention_inputs(self, x, text, rope):
        """The joint sequence and its q, k, v ([B, H, L, D], RoPE applied): the work before the hook."""
        b, n, c = x.shape
        if text is None:
            tokens = x
        else:
            tokens = torch.cat([x, text] if self.text_after else [text, x], dim=1)
        qkv = self.qkv(F.layer_norm(tokens, (c,))).reshape(b, tokens.shape[1], 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        q, k = F.rms_norm(q, q.shape[-1:]), F.rms_norm(k, k.shape[-1:])
        if rope is not None:
            q, k = apply_rope(q, rope).to(v.dtype), apply_rope(k, rope).to(v.dtype)
        return tokens, q, k, v

    def finish(self, tokens, out, n, context=None):
        """The work after the hook (its output ``out`` [B, L, C]); returns the n image tokens."""
        b, _, c = tokens.shape
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
        return tokens[:, :n] if self.text_after else tokens[:, -n:]

    def forward(self, x, text, rope, hook, context=None):
        tokens, q, k, v = self.attention_inputs(x, text, rope)
        return self.finish(tokens, hook(q, k, v), x.shape[1], context)


def sdpa(q, k, v, mask=None):
    b, h, n, d = q.shape
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, n, h * d)


def flat(t):
    b, h, n, d = t.shape
    return t.transpose(1, 2).reshape(b, n, h * d)


def heads_first(t, h):
    b, n, c = t.shape
    return t.reshape(b, n, h, c // h).transpose(1, 2)


def hooks(grid, text, heads, ratio, text_after=False):
    frames, h, w = grid
    settings = MergeSettings(ratio=ratio)
    start = 0 if text_after else text  # where the image span begins

    def span(t, fn):
        """``fn`` on the image span of t [B, L, C] (all but the text), the text left as it is."""
        if not text:
            return fn(t)
        end = t.shape[1] - text + start
        return torch.cat([t[:, :start], fn(t[:, start:end]), t[:, end:]], dim=1)

    def around(merge, restore):
        def hook(q, k, v):
            out = sdpa(*(heads_first(span(flat(t), merge), heads) for t in (q, k, v)))
            return span(out, restore)
        return hook

    def mame(source, as_mask=True):
        # as nodes/dit_patch.py does it: one plan per call on the image tokens (3-D tiles for
        # video), proportional attention as a key mask (what ComfyUI's attention_pytorch gets
        # on a CPU) or through the extra size channel (any other kernel), restore the image part
        def hook(q, k, v):
            qf, kf, vf = flat(q), flat(k), flat(v)
            metric = (vf if source == "v" else kf)[:, start:start + frames * h * w]
            plan = plan_merge(metric, h, w, settings, pattern=0, frames=frames)
            q2, k2, v2 = (span(t, plan.merge) for t in (qf, kf, vf))
            log_size = span(plan.key_log_size.new_zeros(1, q2.shape[1]), lambda _: plan.key_log_size)
            if as_mask:
                out = sdpa(*(heads_first(t, heads) for t in (q2, k2, v2)), mask=key_bias_mask(log_size, q.dtype))
            else:
                q2, k2, v2, drop_channels = add_size_channel(q2, k2, v2, log_size, heads)
                out = drop_channels(sdpa(*(heads_first(t, heads) for t in (q2, k2, v2))))
            return span(out, plan.restore)
        return hook

    def tome(q, k, v):
        from tomesd.merge import bipartite_soft_matching_random2d

        metric = flat(v)[:, start:start + frames * h * w].reshape(frames, h * w, -1)
        gen = torch.Generator().manual_seed(0)
        merge, unmerge = bipartite_soft_matching_random2d(metric, w, h, 2, 2, int(h * w * ratio), no_rand=False,
                                                          generator=gen)
        fold = lambda t: t.reshape(frames, -1, t.shape[-1])  # noqa: E731
        unfold = lambda t: t.reshape(1, -1, t.shape[-1])  # noqa: E731
        return around(lambda t: unfold(merge(fold(t))), lambda t: unfold(unmerge(fold(t))))(q, k, v)

    def todo(q, k, v):
        def pool(img):
            grid_t = img.reshape(frames, h, w, -1).permute(0, 3, 1, 2)
            return F.avg_pool2d(grid_t, (1, 2), ceil_mode=True).permute(0, 2, 3, 1).reshape(1, -1, img.shape[-1])
        return sdpa(q, *(heads_first(span(flat(t), pool), heads) for t in (k, v)))

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


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def run(case: str, ratio: float, rounds: int, dtype, timing: str = "block") -> dict:
    cfg = CASES[case]
    frames, h, w = cfg["grid"]
    dim, heads, text = cfg["dim"], cfg["heads"], cfg["text"]
    text_after = cfg.get("layout") == "image_first"
    n = frames * h * w
    gen = torch.Generator().manual_seed(1)
    x = photo_grid(frames, h, w, dim).to(dtype)
    txt = F.layer_norm(torch.randn(1, text, dim, generator=gen), (dim,)).to(dtype) if text else None
    context = torch.randn(1, cfg.get("cross", 0), dim, generator=gen).to(dtype) if cfg.get("cross") else None
    rope = rope_angles(cfg["grid"], dim // heads, cfg["rope"], text, text_after, heads)
    block = Block(dim, heads, cfg["mlp"], cfg.get("cross", 0), dtype, gated=cfg.get("gated", False),
                  text_after=text_after)
    methods = hooks(cfg["grid"], text, heads, ratio, text_after)
    merged_img = merged_tokens_for(h, w, MergeSettings(ratio=ratio), frames)
    log(f"{case}: {text} + {n} tokens, {timing} timing, error pass")
    with torch.no_grad():
        start = time.perf_counter()
        tokens, q, k, v = block.attention_inputs(x, txt, rope)
        before = time.perf_counter() - start
        after = []

        def finish(out):
            start = time.perf_counter()
            y = block.finish(tokens, out, n, context).float()
            after.append(time.perf_counter() - start)
            return y

        full_out = methods["full"](q, k, v)
        ref = finish(full_out)
        errors = {}
        skipped = ("mame-channel", "mame-k", "todo") if timing == "parts" else ()
        for name, hook in methods.items():
            if name not in ("full", "free-merge", *skipped):
                errors[name] = ((finish(hook(q, k, v)) - ref).norm() / ref.norm()).item()
        log(f"{case}: timing")
        if timing == "parts":
            for name in ("mame-channel", "free-merge"):  # the hooks the error pass did not run
                methods[name](q, k, v)
            timed = {name: (lambda hk=hook: hk(q, k, v)) for name, hook in methods.items() if name != "mame-k"}
            hook_seconds = {name: v["median"] for name, v in time_interleaved(timed, rounds=rounds, warmup=0).items()}
            outside = before + statistics.median(after)
            t = {name: outside + s for name, s in hook_seconds.items()}
            seconds = {"before_hook": before, "after_hook": after, "hooks": hook_seconds, "block": t}
        else:
            # attention alone at full and at the merged length, for reference
            qf = torch.randn(1, heads, text + n, dim // heads, generator=gen).to(dtype)
            qm = qf[:, :, :text + merged_img].contiguous()
            timed = {name: (lambda hk=hook: block(x, txt, rope, hk, context))
                     for name, hook in methods.items() if name != "mame-k"}
            timed["attention-full"] = lambda: F.scaled_dot_product_attention(qf, qf, qf)
            timed["attention-merged"] = lambda: F.scaled_dot_product_attention(qm, qm, qm)
            times = time_interleaved(timed, rounds=rounds, warmup=1)
            t = seconds = {name: v["median"] for name, v in times.items()}
    log(f"{case}: done")
    bound = t["full"] / t["free-merge"]
    return {
        "case": case, "ratio": ratio, "dtype": str(dtype), "rounds": rounds, "timing": timing,
        "tokens": text + n, "merged_tokens": text + merged_img, "seconds": seconds,
        "speedup": {m: t["full"] / t[m] for m in ("mame", "mame-channel", "tome", "todo")},
        "amdahl_bound": bound, "mame_share_of_bound": (t["full"] / t["mame"]) / bound,
        "error": errors, "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=sorted(CASES), action="append", required=True)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timing", choices=("block", "parts"), default="block")
    parser.add_argument("--out-dir", help="also write each case to OUT_DIR/dit-<case>.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    for case in args.case:
        result = json.dumps(run(case, args.ratio, args.rounds, dtype, args.timing), indent=1)
        print(result)
        sys.stdout.flush()
        if args.out_dir:
            with open(f"{args.out_dir}/dit-{case}.json", "w") as f:
                f.write(result + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
