"""Self-attention with each token-reduction method, on one layer, for side-by-side study.

Every method returns the full-length output of the layer so it can be compared with full
attention. The baselines are labelled by what they are:

* ``tome``: ToMe for SD, using the ``tomesd`` package's own matcher (queries, keys and
  values merged, copied back).
* ``tome-prop``: the same matcher with ToMe's proportional attention (the paper's, which
  tomesd leaves out): a merged key that stands for ``n`` tokens gets ``+ log n`` on its
  logits; ``n`` comes from merging a column of ones with tomesd's own ``mode="sum"``. The fair
  reference for MaMe, which has the same bias.
* ``tome-q``: the scheme of ComfyUI's built-in ToMe node: the same matcher, but only the
  queries are merged; keys and values stay full length.
* ``todo``: ToDo-style key/value downsampling, this project's small re-implementation:
  average pooling of the key/value token grid (2x1 for ratio 0.5, 2x2 for 0.75).
* ``mame-qkv`` / ``mame-kv``: this project, at its defaults, with proportional attention
  (the plan's ``key_log_size`` through :func:`mame_core.size_bias.add_size_channel`).
  ``route="gpu"`` plans with the engine's GPU route (on CPU tensors too), where the engine
  has one (:func:`gpu_route_available`).
"""
from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F

from mame_core import MergeSettings, plan_merge, plan_seeded
from mame_core.size_bias import add_size_channel


def multihead(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, key_log_size=None) -> torch.Tensor:
    """SDPA over ``heads`` heads folded into the channels (``[B, N, heads*d]``, keys may be
    fewer than queries), with ``key_log_size`` ``[B, keys]`` added to each key's logits
    (proportional attention, through the size channel) when given."""
    b, n, _ = q.shape
    back = None
    if key_log_size is not None:
        q, k, v, back = add_size_channel(q, k, v, key_log_size.to(q.dtype), heads)
    width = q.shape[-1] // heads
    split = lambda t: t.reshape(b, t.shape[1], heads, width).transpose(1, 2)  # noqa: E731
    out = F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(b, n, -1)
    return out if back is None else back(out)


class Attention(torch.nn.Module):
    """q/k/v/out projections and multi-head SDPA; ``kv`` may differ from the query tokens."""

    def __init__(self, channels: int, heads: int, generator: torch.Generator, query_scale: float = 1.0,
                 shared_qk: bool = False):
        """``query_scale`` sharpens attention. ``shared_qk``: the key projection is the query
        projection (unscaled), so every head scores self-similarity: a query attends most to the
        tokens that resemble it, and near-duplicate tokens get near-equal weights."""
        super().__init__()
        self.heads = heads
        self.proj = torch.nn.ModuleList(torch.nn.Linear(channels, channels, bias=False) for _ in range(4))
        with torch.no_grad():
            for i, layer in enumerate(self.proj):
                scale = query_scale if i == 0 else 1.0
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * scale / math.sqrt(channels))
            if shared_qk:
                self.proj[1].weight.copy_(self.proj[0].weight / query_scale)

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None = None, key_log_size=None) -> torch.Tensor:
        kv = x if kv is None else kv
        return self.proj[3](multihead(self.proj[0](x), self.proj[1](kv), self.proj[2](kv), self.heads, key_log_size))

    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """The keys averaged over heads, ``[B, N, C/heads]`` (ToMe's similarity metric)."""
        b, n, c = x.shape
        return self.proj[1](x).reshape(b, n, self.heads, c // self.heads).mean(dim=2)

    def perplexity(self, x: torch.Tensor) -> float:
        """Mean over heads and rows of exp(entropy) of the attention rows: how many tokens a
        query effectively attends to."""
        b, n, c = x.shape
        split = lambda t: t.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)  # noqa: E731
        q, k = split(self.proj[0](x)), split(self.proj[1](x))
        total = 0.0
        for start in range(0, n, 1024):  # query chunks: a 16384-token map would not fit
            logits = q[:, :, start : start + 1024] @ k.transpose(-1, -2) * (c // self.heads) ** -0.5
            p = torch.softmax(logits, dim=-1)
            entropy = -(p * torch.log_softmax(logits, dim=-1)).sum(-1)
            total += float(torch.exp(entropy).sum())
        return total / (b * self.heads * n)


def gpu_route_available() -> bool:
    """Whether this engine has a route to choose (``plan_merge(..., route=...)``)."""
    return "route" in inspect.signature(plan_merge).parameters


def bench_plan(x, h, w, settings: MergeSettings, seed=0, route=None):
    """The plan every benchmark builds: seeded by ``seed`` and the key ``"bench"``; ``route``
    (``cpu`` or ``gpu``) only where the engine has routes, else it must be None."""
    if route is None:
        return plan_seeded(x, h, w, settings, seed, "bench")
    if not gpu_route_available():
        raise RuntimeError("this engine has no route parameter")
    return plan_seeded(x, h, w, settings, seed, "bench", route=route)


def mame(attn, x, h, w, ratio, mode="qkv", seed=0, size_bias=True, metric="input", route=None, **settings):
    """MaMe around ``attn``. metric: ``input`` (the block input, what the hosts pass) or
    ``keys`` (keys averaged over heads, what ToMe uses); size_bias: proportional attention;
    route: the engine route (None: the engine's choice for the device)."""
    plan_on = x if metric == "input" else attn.keys(x)
    plan = bench_plan(plan_on, h, w, MergeSettings(ratio=ratio, mode=mode, **settings), seed, route)
    bias = plan.key_log_size if size_bias else None
    if mode == "qkv":
        return plan.restore(attn(plan.merge(x), key_log_size=bias))
    return attn(x, plan.merge(x), key_log_size=bias)


def _tome_functions(x, h, w, ratio, seed=0):
    from tomesd.merge import bipartite_soft_matching_random2d

    gen = torch.Generator(device=x.device).manual_seed(seed)
    return bipartite_soft_matching_random2d(x, w, h, 2, 2, int(x.shape[1] * ratio), no_rand=False, generator=gen)


def tome(attn, x, h, w, ratio, seed=0):
    merge, unmerge = _tome_functions(x, h, w, ratio, seed)
    return unmerge(attn(merge(x)))


def tome_log_size(merge, x):
    """``[B, M]`` log of how many tokens each of tomesd's merged tokens stands for: a column of
    ones merged with tomesd's own ``mode="sum"``."""
    return merge(x.new_ones(*x.shape[:2], 1), mode="sum").squeeze(-1).log()


def tome_prop(attn, x, h, w, ratio, seed=0):
    """tomesd's matcher with proportional attention (ToMe's paper)."""
    merge, unmerge = _tome_functions(x, h, w, ratio, seed)
    return unmerge(attn(merge(x), key_log_size=tome_log_size(merge, x)))


def tome_queries(attn, x, h, w, ratio, seed=0):
    merge, unmerge = _tome_functions(x, h, w, ratio, seed)
    return unmerge(attn(merge(x), x))


TODO_POOL = {0.5: (1, 2), 0.75: (2, 2)}


def pool_tokens(x, h, w, ratio):
    """``x`` ``[B, h*w, C]`` average-pooled on its grid as ToDo pools keys and values (2x1 for
    ratio 0.5, 2x2 for 0.75)."""
    if ratio not in TODO_POOL:
        raise ValueError(f"ToDo pooling supports ratios {sorted(TODO_POOL)}, got {ratio}")
    fy, fx = TODO_POOL[ratio]
    b, n, c = x.shape
    grid = x.transpose(1, 2).reshape(b, c, h, w)
    return F.avg_pool2d(grid, (fy, fx), ceil_mode=True).flatten(2).transpose(1, 2)


def todo(attn, x, h, w, ratio):
    return attn(x, pool_tokens(x, h, w, ratio))


def methods(ratio: float) -> dict:
    """name -> fn(attn, x, h, w) for every method that supports ``ratio``."""
    out = {
        "mame-qkv": lambda a, x, h, w: mame(a, x, h, w, ratio, "qkv"),
        "mame-kv": lambda a, x, h, w: mame(a, x, h, w, ratio, "kv"),
        "tome": lambda a, x, h, w: tome(a, x, h, w, ratio),
        "tome-prop": lambda a, x, h, w: tome_prop(a, x, h, w, ratio),
        "tome-q": lambda a, x, h, w: tome_queries(a, x, h, w, ratio),
    }
    if ratio in TODO_POOL:
        out["todo"] = lambda a, x, h, w: todo(a, x, h, w, ratio)
    if gpu_route_available():
        out["mame-qkv (gpu route)"] = lambda a, x, h, w: mame(a, x, h, w, ratio, "qkv", route="gpu")
    return out
