"""The kernel timings behind two engine choices, side by side on this machine.

1. The packing select (``out = take where mask else keep`` over ``[B, N, C]``, one shift step):
   ``torch.where`` on the values, ``torch.where`` on the rows read as 64-bit integer words
   (what MaMe runs on large tensors), the 16-bit integer arithmetic MaMe runs on 16-bit
   tensors up to ``compaction.CACHE_RESIDENT_BYTES`` (``keep + w * (take - keep)``), ``lerp`` with a 0/1 weight (fast, but a NaN on the side
   not taken poisons the result) and a plain copy for scale, into a reused buffer; and the
   64-bit form into a fresh tensor (which pays its page faults).
2. The size channel: attention at a merged length with the head width as it is, padded by
   one channel to a multiple of 8 (what ``add_size_channel`` does), and with the log-size bias
   as an additive attention mask instead.

Usage: python -m bench.kernel_costs [--rounds 5] > bench/results/kernel_costs.txt
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from mame_core.compaction import select_words, word_dtype


def best_ms(fn, rounds: int) -> float:
    fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


SELECT_SHAPES = {"2x4096x320 (SD1.5 level 1)": (2, 4096, 320), "1x14040x1536 (Wan-1.3B 480p x 33)": (1, 14040, 1536)}


def select_figures(shape: tuple[int, int, int], dtype: torch.dtype, gen: torch.Generator, rounds: int) -> list[float]:
    shift = 4
    x = torch.randn(*shape, generator=gen).to(dtype)
    buf = torch.empty_like(x)
    mask = torch.rand(shape[0], shape[1], 1, generator=gen) > 0.5
    keep, take, out, m = x[:, :-shift], x[:, shift:], buf[:, :-shift], mask[:, :-shift]
    keep16, take16, out16 = (t.view(torch.int16) for t in (keep, take, out))
    keep64, take64, out64 = (t.view(word_dtype(x)) for t in (keep, take, out))
    diff = torch.empty_like(keep16)
    w16, wf = m.to(torch.int16), m.to(dtype)

    return [
        best_ms(lambda: torch.where(m, take, keep, out=out), rounds),
        best_ms(lambda: torch.where(m, take64, keep64, out=out64), rounds),
        best_ms(lambda: select_words(keep16, take16, w16, out16, diff), rounds),
        best_ms(lambda: torch.lerp(keep, take, wf, out=out), rounds),
        best_ms(lambda: out.copy_(take), rounds),
        best_ms(lambda: torch.where(m, take64, keep64), rounds),
    ]


def select_rows(rounds: int) -> list[str]:
    gen = torch.Generator().manual_seed(0)
    rows = ["| shape | dtype | where on the values | where on 64-bit words (MaMe, otherwise) | 16-bit integer arithmetic "
            "(MaMe, 16-bit values up to 8 MB) | lerp | copy | where on 64-bit words, fresh output |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, shape in SELECT_SHAPES.items():
        for dtype in (torch.bfloat16, torch.float32):
            figures = select_figures(shape, dtype, gen, rounds)
            rows.append(f"| {name} | {str(dtype).replace('torch.', '')} | "
                        + " | ".join(f"{v:.3f} ms" for v in figures) + " |")
    return rows


ATTENTION_SHAPES = {
    # name: batch, heads, merged tokens, head width
    "SD1.5 d1 (2x8 heads, 2048 tokens, width 40)": (2, 8, 2048, 40),
    "SD3.5-medium 1024² (24 heads, 2381 tokens, width 64)": (1, 24, 2381, 64),
    "Flux 1024² (24 heads, 2560 tokens, width 128)": (1, 24, 2560, 128),
    "Flux 2048² (24 heads, 8704 tokens, width 128)": (1, 24, 8704, 128),
    "Wan-1.3B 480p x 33 (12 heads, 7020 tokens, width 128)": (1, 12, 7020, 128),
}


def attention_figures(shape: tuple[int, int, int, int], dtype: torch.dtype, gen: torch.Generator,
                      rounds: int) -> tuple[float, float, float, int]:
    b, h, n, d = shape
    padded = (d + 1 + 7) // 8 * 8
    q = torch.randn(b, h, n, d, generator=gen).to(dtype)
    q2 = torch.randn(b, h, n, padded, generator=gen).to(dtype)
    bias = torch.randn(b, 1, 1, n, generator=gen).to(dtype)
    turns = rounds if n < 8000 else 1
    plain = best_ms(lambda: F.scaled_dot_product_attention(q, q, q), turns)
    channel = best_ms(lambda: F.scaled_dot_product_attention(q2, q2, q2), turns)
    masked = best_ms(lambda: F.scaled_dot_product_attention(q, q, q, attn_mask=bias), turns)
    return plain, channel, masked, padded


def attention_rows(rounds: int, dtype: torch.dtype) -> list[str]:
    gen = torch.Generator().manual_seed(1)
    rows = ["| shape | plain | size channel (padded width) | size bias as a mask | channel / plain | mask / plain |",
            "| --- | --- | --- | --- | --- | --- |"]
    for name, shape in ATTENTION_SHAPES.items():
        plain, channel, masked, padded = attention_figures(shape, dtype, gen, rounds)
        rows.append(f"| {name} | {plain:.0f} ms | {channel:.0f} ms ({padded}) | {masked:.0f} ms | "
                    f"{channel / plain:.2f}x | {masked / plain:.2f}x |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from bench.timing import pick_dtype

    dtype = getattr(torch, pick_dtype(None, "cpu"))  # prints the dtype and why
    print(f"python -m bench.kernel_costs --rounds {args.rounds}  ({args.threads} CPU threads, "
          f"torch {torch.__version__}; best of the rounds)\n")
    print("## One packing select step (shift 4)\n")
    print("\n".join(select_rows(args.rounds)))
    print(f"\n## Attention at the merged length, {str(dtype).replace('torch.', '')}\n")
    print("\n".join(attention_rows(args.rounds, dtype)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
