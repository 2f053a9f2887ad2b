"""Draw MaMe's merge groups over the real photographs of the fidelity benchmark, across τ,
as one PNG grid (docs/merge-maps.png). Same tokens as bench.fidelity: 8x8-pixel patches of
each photo at 512 px (a 64x64 grid, SD1.5's full-resolution level), ratio 0.5, 8x8 tiles.

Usage: python -m bench.merge_maps [--taus 0,0.7,0.95,0.99] [--out docs/merge-maps.png]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from bench.photos import load_photo, photo_tokens
from mame_core import MergeSettings, describe_merges, draw_merge_map


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", default="astronaut,coffee,rocket,brick")
    p.add_argument("--taus", default="0,0.7,0.95,0.99")
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--out", default="docs/merge-maps.png")
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    photos = args.photos.split(",")
    taus = [float(t) for t in args.taus.split(",")]
    fig, axes = plt.subplots(len(photos), len(taus) + 1, figsize=(2.6 * (len(taus) + 1), 2.6 * len(photos)), dpi=110)
    for row, name in enumerate(photos):
        image = torch.from_numpy(load_photo(name, 512))
        tokens = photo_tokens(name, 64)
        axes[row][0].imshow(image.numpy())
        axes[row][0].set_title(name if row else f"{name}\n(photo)", fontsize=9)
        for col, tau in enumerate(taus, start=1):
            m = describe_merges(tokens, 64, 64, MergeSettings(ratio=args.ratio, threshold=tau))
            s = m.stats()
            axes[row][col].imshow(draw_merge_map(image, m).numpy())
            axes[row][col].set_title(f"tau {tau:g}: {s['share_merged']:.0%} averaged", fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(f"MaMe groups at ratio {args.ratio}, 8x8 tiles (hatched: below tau, kept apart)", fontsize=10)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
