"""Micro-benchmark: MaMe merge + MaRe restore cost next to the self-attention time it saves.

One self-attention layer (q, k, v, out projections, 8 heads) on N tokens of width C, as in
an SD1.5 block at 512 px (N=4096, C=320). Measured side by side in one run:

* full:        attention on all N tokens
* mame-qkv:    merge -> attention on the merged tokens -> restore
* attn-merged: attention alone on the merged length (what a free merge would cost)
* merge+restore alone

Usage: python -m bench.micro_merge [--tokens 4096] [--channels 320] [--ratio 0.5]
"""
from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

from bench.timing import time_interleaved
from mame_core import MergeSettings, plan_seeded


class SelfAttention(torch.nn.Module):
    def __init__(self, channels: int, heads: int, generator: torch.Generator):
        super().__init__()
        self.heads = heads
        self.proj = torch.nn.ModuleList(torch.nn.Linear(channels, channels) for _ in range(4))
        with torch.no_grad():
            for layer in self.proj:
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) / math.sqrt(channels))
                layer.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = (p(x).reshape(b, n, self.heads, c // self.heads).transpose(1, 2) for p in self.proj[:3])
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj[3](out.transpose(1, 2).reshape(b, n, c))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=4096, help="N, a square number (default 4096)")
    parser.add_argument("--channels", type=int, default=320)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tile", type=int, default=None, help="tile side (default: MergeSettings' default)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    side = math.isqrt(args.tokens)
    if side * side != args.tokens:
        parser.error("--tokens must be a square number, e.g. 4096")
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(0)
    attn = SelfAttention(args.channels, 8, gen).to(args.device, dtype).eval()
    x = torch.randn(args.batch, args.tokens, args.channels, generator=gen).to(args.device, dtype)
    settings = MergeSettings(ratio=args.ratio) if args.tile is None else MergeSettings(ratio=args.ratio, tile=args.tile)
    plan = plan_seeded(x, side, side, settings, 0, "bench")
    merged = plan.merge(x)

    def mame_qkv():
        p = plan_seeded(x, side, side, settings, 0, "bench")
        return p.restore(attn(p.merge(x)))

    def merge_restore():
        p = plan_seeded(x, side, side, settings, 0, "bench")
        return p.restore(p.merge(x))

    with torch.inference_mode():
        res = time_interleaved(
            {
                "full": lambda: attn(x),
                "mame-qkv": mame_qkv,
                "attn-merged": lambda: attn(merged),
                "merge+restore": merge_restore,
            },
            rounds=args.rounds,
            device=args.device,
        )
    med = {k: v["median"] for k, v in res.items()}
    saved = med["full"] - med["attn-merged"]
    print(
        f"N={args.tokens} C={args.channels} batch={args.batch} ratio={args.ratio} "
        f"({plan.merged_tokens} tokens after merge) tile {settings.tile} {args.dtype} on {args.device}, "
        f"{args.rounds} rounds"
    )
    print(f"{'case':<16}{'min ms':>10}{'median ms':>12}")
    for name, r in res.items():
        print(f"{name:<16}{r['min'] * 1e3:>10.1f}{r['median'] * 1e3:>12.1f}")
    print(f"attention time saved by merging: {saved * 1e3:.1f} ms")
    print(f"merge+restore overhead: {med['merge+restore'] * 1e3:.1f} ms = {med['merge+restore'] / saved:.1%} of the time saved")
    print(f"speed-up of the layer: {med['full'] / med['mame-qkv']:.2f}x (ideal {med['full'] / med['attn-merged']:.2f}x)")
    return med


if __name__ == "__main__":
    main()
