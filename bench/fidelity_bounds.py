"""How close any query merge could come to full attention where attention is sharpest, and
where MaMe's own error comes from (the study behind issue #13's missed 0.8x floor).

Same layer, photos and sharpness set-ups as :mod:`bench.fidelity`, ratio 0.5. Every figure is a
multiple of tomesd's error at equal token count. Columns:

* ``mame``: the shipped engine (queries, keys and values merged, MaRe, size bias);
* ``queries only``: the same plan merges the queries; keys and values stay full length;
* ``keys only``: the same plan merges keys and values only (``mode="kv"``);
* ``tile oracle``: MaMe's tiles and destinations, but with knowledge of every token's true
  output: each source takes the true output of the destination of its tile whose output is
  closest, and the ``r`` sources that lose least merge (keys stay full length). No method
  that restores by copying a destination's output inside MaMe's tiles can choose better;
* ``global oracle``: the tokens grouped over the whole grid into as many groups as MaMe keeps,
  by k-means on the true outputs (k-means++ start, 30 Lloyd steps), each token given its
  group's mean output. What any query merge with a copying restore could hope for, knowing
  the answer in advance;
* ``soft restore b``: tried and dropped: a merged token takes a softmax(b * cosine) mix of
  its tile's destinations' outputs instead of its best destination's;
* ``query-light``: tried and dropped: the queries merged at ratio 1/3 and the keys and
  values at 0.625, the same attention cost as 0.5 on both.

Usage: python -m bench.fidelity_bounds [--photos 3] [--out bench/results/fidelity-bounds.json]
       [--text bench/results/fidelity-bounds.txt]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.attention_methods import mame, tome
from bench.fidelity import attention, rel_error, sweep_inputs
from bench.photos import PHOTOS, photo_tokens
from mame_core import MergeSettings, plan_seeded

RATIO = 0.5
SETUPS = (("independent", 4.0), ("independent", 64.0), ("self-similarity", 64.0),
          ("position", 4.0), ("position", 8.0), ("position", 16.0), ("position", 64.0))
SOFT_BETAS = (100.0, 400.0)


def _plan(x, h, w, ratio=RATIO, mode="qkv"):
    """The plan :func:`bench.attention_methods.mame` builds for ``x`` (same seed and keys)."""
    return plan_seeded(x, h, w, MergeSettings(ratio=ratio, mode=mode), 0, "bench")


def _tiles(plan, t):
    """``t`` ``[1, N, C]`` in the plan's tile layout ``[1, G, T, C]`` (one block of tiles)."""
    p = plan.parts[0]
    return plan.tiling.split(t)[0].reshape(1, p.block.tiles, p.block.tile_tokens, t.shape[-1])


def queries_only(attn, plan, x):
    return plan.restore(attn(plan.merge(x), x))


def query_light(attn, x, h, w):
    queries, keys = _plan(x, h, w, 1 / 3), _plan(x, h, w, 0.625, "kv")
    return queries.restore(attn(queries.merge(x), keys.merge(x), key_log_size=keys.key_log_size))


def soft_restore(plan, x, y, beta):
    """``y``, MaMe's restored output for ``x`` under ``plan``, with every merged token's output
    replaced by a softmax(beta * cosine) mix of its tile's destinations' outputs."""
    p = plan.parts[0]
    picks = p.select.to(y.dtype).transpose(-1, -2)  # [G, d, T]
    y_tiles, unit = _tiles(plan, y), F.normalize(_tiles(plan, x), dim=-1)
    cosine = unit @ (picks @ unit).transpose(-1, -2)  # [1, G, T, d]
    mixed = torch.softmax(beta * cosine, dim=-1) @ (picks @ y_tiles)
    out = torch.lerp(y_tiles, mixed, p.merged_weight.to(y.dtype))
    return plan.tiling.join([out.reshape(p.block.tiles, p.block.tile_tokens, -1)])


def tile_oracle(plan, y):
    """Relative error of the best copy restore inside ``plan``'s tiles, knowing the true outputs ``y``."""
    p = plan.parts[0]
    y_tiles = _tiles(plan, y).double()
    dest_out = p.select.double().transpose(-1, -2) @ y_tiles  # [1, G, d, C]
    loss = ((y_tiles.unsqueeze(-2) - dest_out.unsqueeze(-3)) ** 2).sum(-1).min(-1).values  # [1, G, T]
    loss = torch.where(p.is_dest.squeeze(-1), torch.full_like(loss, float("inf")), loss)
    removed = plan.full_tokens - plan.merged_tokens
    return float(loss.flatten().topk(removed, largest=False).values.sum().sqrt() / y.double().norm())


def global_oracle(y, groups, seed=0, steps=30):
    """Relative error of k-means (``groups`` centres) on the true outputs ``y`` ``[1, N, C]``."""
    points = y[0].double()
    gen = torch.Generator().manual_seed(seed)
    first = int(torch.randint(points.shape[0], (1,), generator=gen))
    chosen, nearest = [first], ((points - points[first]) ** 2).sum(-1)
    for _ in range(groups - 1):  # k-means++: each next centre drawn by squared distance
        nxt = int(torch.multinomial(nearest / nearest.sum(), 1, generator=gen))
        chosen.append(nxt)
        nearest = torch.minimum(nearest, ((points - points[nxt]) ** 2).sum(-1))
    centres = points[chosen].clone()
    for _ in range(steps):
        member = F.one_hot(torch.cdist(points, centres).argmin(-1), groups).double()
        count = member.sum(0).unsqueeze(-1)
        centres = torch.where(count > 0, member.T @ points / count.clamp_min(1), centres)
    assigned = centres[torch.cdist(points, centres).argmin(-1)]
    return float((points - assigned).norm() / points.norm())


def measure(photos):
    square = [(photo_tokens(n, 64), 64, 64) for n in photos]
    rows = []
    for setup, scale in SETUPS:
        attn = attention(scale, setup)
        inputs = sweep_inputs(square, setup)
        errors: dict[str, list[float]] = {}
        perplexity = []
        for x, h, w in inputs:
            ref = attn(x)
            perplexity.append(attn.perplexity(x))
            plan, merged = _plan(x, h, w), mame(attn, x, h, w, RATIO)
            found = {
                "tome": rel_error(tome(attn, x, h, w, RATIO), ref),
                "mame": rel_error(merged, ref),
                "queries only": rel_error(queries_only(attn, plan, x), ref),
                "keys only": rel_error(mame(attn, x, h, w, RATIO, "kv"), ref),
                "tile oracle": tile_oracle(plan, ref),
                "global oracle": global_oracle(ref, plan.merged_tokens),
                **{f"soft restore b{b:g}": rel_error(soft_restore(plan, x, merged, b), ref) for b in SOFT_BETAS},
                "query-light": rel_error(query_light(attn, x, h, w), ref),
            }
            for k, v in found.items():
                errors.setdefault(k, []).append(v)
        mean = {k: statistics.fmean(v) for k, v in errors.items()}
        row = {"setup": setup, "query_scale": scale, "perplexity": statistics.fmean(perplexity), "errors": mean,
               "x_tome": {k: v / mean["tome"] for k, v in mean.items() if k != "tome"}}
        rows.append(row)
        print(f"{setup} x{scale:g}: " + " ".join(f"{k} {v:.2f}" for k, v in row["x_tome"].items()), flush=True)
    return rows


def print_report(result):
    print(f"python -m bench.fidelity_bounds --photos {len(result['photos'])} --text bench/results/fidelity-bounds.txt  "
          f"({result['seconds']} s, "
          f"{result['machine']}, torch {result['torch']}, photos {', '.join(result['photos'])})")
    print("\nRatio 0.5, 64x64, equal token count: each method's error as a multiple of tomesd's")
    names = list(result["rows"][0]["x_tome"])
    print("| set-up | query scale | perplexity | tomesd error | " + " | ".join(names) + " |")
    print("|" + " --- |" * (4 + len(names)))
    for row in result["rows"]:
        cells = " | ".join(f"{row['x_tome'][n]:.2f}x" for n in names)
        print(f"| {row['setup']} | {row['query_scale']:g} | {row['perplexity']:.0f} | {row['errors']['tome']:.4f} | {cells} |")
    print("\nQuery-side and key-side errors add about in quadrature: sqrt(queries only^2 + keys only^2) against mame:")
    for row in result["rows"]:
        r = row["x_tome"]
        print(f"- {row['setup']} x{row['query_scale']:g}: {(r['queries only'] ** 2 + r['keys only'] ** 2) ** 0.5:.2f}x "
              f"against {r['mame']:.2f}x; tile oracle with today's keys {(r['tile oracle'] ** 2 + r['keys only'] ** 2) ** 0.5:.2f}x")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=3, help="how many of bench.photos.PHOTOS (default 3)")
    p.add_argument("--out", default="bench/results/fidelity-bounds.json")
    p.add_argument("--text", default=None, help="also write the printed report here")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.time()
    photos = list(PHOTOS[: args.photos])
    with torch.inference_mode():
        rows = measure(photos)
    result = {"photos": photos, "machine": f"{torch.get_num_threads()} CPU threads", "torch": torch.__version__,
              "rows": rows, "seconds": round(time.time() - started, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print()
    print_report(result)
    if args.text:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            print_report(result)
        Path(args.text).write_text(buffer.getvalue())


if __name__ == "__main__":
    main()
