"""Which tokens MaMe merged where, for display: an analysis of one call, not part of merging.

:func:`describe_merges` runs the same matching as :func:`plan_merge` (same tiling, same
destinations, same ranking) on one batch item, on the CPU on purpose (it reads values back,
which the merge path never does), and reduces it to per-token labels: the merged token
each token belongs to, whether it is a destination, and whether it was averaged (cleared τ).
:func:`draw_merge_map` paints those labels over the generated image.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .destinations import cell_count, destination_mask, pattern_for
from .merge import match_tiles, removed_per_tile, tiling_for
from .settings import MergeSettings


@dataclass
class MergeMap:
    h: int
    w: int
    group: torch.Tensor  # [h, w] long: index of the merged token each token belongs to
    is_destination: torch.Tensor  # [h, w] bool
    merged: torch.Tensor  # [h, w] bool: merged into a destination (not kept as its own token)
    above_threshold: torch.Tensor  # [h, w] bool: a merged token averaged into its destination (>= τ)
    threshold: float
    tile: tuple[int, int]

    def stats(self) -> dict:
        sizes = torch.bincount(self.group.flatten())
        sizes = sizes[sizes > 0]
        n = self.h * self.w
        return {
            "tokens": n,
            "groups": int(sizes.numel()),
            "effective_ratio": 1.0 - int(sizes.numel()) / n,
            "border_tokens": 0,
            "mean_group_size": float(sizes.float().mean()),
            "max_group_size": int(sizes.max()),
            "share_merged": float((self.merged & self.above_threshold).sum()) / n,
            "share_below_threshold": float((self.merged & ~self.above_threshold).sum()) / n,
        }


def describe_merges(x: torch.Tensor, h: int, w: int, settings: MergeSettings, pattern=0) -> MergeMap:
    """Labels for the tokens ``x`` (``[N, C]`` or ``[1, N, C]``) of one image (one batch item).

    ``pattern`` is the int (or tensor) given to :func:`plan_merge`; a legacy (dy, dx) tuple is
    mapped the same way plan_merge maps it."""
    x = x.detach().to("cpu", torch.float32).reshape(1, -1, x.shape[-1])
    if isinstance(pattern, tuple):
        pattern = pattern[0] * 65536 + pattern[1]
    pattern = torch.as_tensor(pattern).detach().to("cpu", torch.int64).reshape(()) % (2**62)
    tiling = tiling_for(h, w, settings)
    labels = {name: [] for name in ("group", "dest", "merged", "above")}
    offset = 0
    for block, tiles in zip(tiling.blocks, tiling.split(x)):
        t_count = block.tile_tokens
        removed = removed_per_tile(t_count, settings.ratio)
        kept = t_count - removed
        d = max(1, min(cell_count(block.shape), kept))
        is_dest = destination_mask(block.shape, block.tiles, block.first_tile, d, pattern)
        best, best_sim, merged, _ = match_tiles(tiles.unsqueeze(0), is_dest, d, removed)
        best, best_sim, merged = best[0], best_sim[0], merged[0]  # [G, T, d], [G, T], [G, T]
        keep_slot = torch.cumsum((~merged).long(), dim=-1) - 1  # slot of each kept token
        dest_pos = torch.cumsum(is_dest.long(), dim=-1) - 1  # destination column of each destination
        dest_slot = torch.zeros(block.tiles, d, dtype=torch.long)
        for g in range(block.tiles):
            dest_slot[g, dest_pos[g][is_dest[g]]] = keep_slot[g][is_dest[g]]
        follow = torch.gather(dest_slot, 1, best.argmax(dim=-1))
        slot = torch.where(merged, follow, keep_slot)
        tile_base = offset + torch.arange(block.tiles).unsqueeze(1) * kept
        labels["group"].append((slot + tile_base).unsqueeze(-1).float())
        labels["dest"].append(is_dest.unsqueeze(-1).float())
        labels["merged"].append(merged.unsqueeze(-1).float())
        labels["above"].append((merged & (best_sim >= settings.threshold)).unsqueeze(-1).float())
        offset += block.tiles * kept
    grids = {k: tiling.join(v).reshape(h, w) for k, v in labels.items()}
    return MergeMap(h, w, grids["group"].long(), grids["dest"] > 0.5, grids["merged"] > 0.5, grids["above"] > 0.5,
                    settings.threshold, settings.tile)


def _palette(n: int) -> torch.Tensor:
    """``n`` distinct-looking colours (golden-angle hues), [n, 3] in [0, 1]."""
    hue = (torch.arange(n, dtype=torch.float32) * 0.61803398875) % 1.0
    k = (torch.tensor([5.0, 3.0, 1.0]) + hue.unsqueeze(1) * 6) % 6
    rgb = 1 - 0.65 * torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    shade = 0.75 + 0.25 * ((torch.arange(n) % 3) / 2).unsqueeze(1)
    return rgb * shade


def draw_merge_map(image: torch.Tensor, merge_map: MergeMap, alpha: float = 0.5) -> torch.Tensor:
    """Paint groups over ``image`` (``[H, W, 3]`` in [0, 1]): one colour per merged group,
    destinations marked dark, merged tokens below τ (not averaged) hatched grey, tokens
    kept on their own left clear."""
    height, width = image.shape[:2]
    groups = merge_map.group
    colours = _palette(int(groups.max()) + 1)
    cell = colours[groups]  # [h, w, 3]
    sizes = torch.bincount(groups.flatten())[groups]
    weight = torch.where(sizes > 1, alpha, 0.0)  # tokens kept on their own stay clear
    below = merge_map.merged & ~merge_map.above_threshold
    cell = torch.where(below.unsqueeze(-1), torch.full((3,), 0.5), cell)

    def up(t: torch.Tensor) -> torch.Tensor:
        t = t.float().reshape(1, 1, merge_map.h, merge_map.w) if t.dim() == 2 else t.float().permute(2, 0, 1).unsqueeze(0)
        return F.interpolate(t, size=(height, width), mode="nearest")[0]

    colour = up(cell).permute(1, 2, 0)
    w = up(weight)[0].unsqueeze(-1)
    out = image * (1 - w) + colour * w
    ys = torch.arange(height).unsqueeze(1)
    xs = torch.arange(width).unsqueeze(0)
    stripes = (((ys + xs) // 3) % 2 == 0).unsqueeze(-1)
    out = torch.where(up(below)[0].bool().unsqueeze(-1) & stripes, out * 0.35, out)
    # destinations: a dark dot in the middle of their cell
    cy, cx = height / merge_map.h, width / merge_map.w
    centre = ((ys % cy - cy / 2).abs() < max(1.0, cy / 6)) & ((xs % cx - cx / 2).abs() < max(1.0, cx / 6))
    out = torch.where(up(merge_map.is_destination)[0].bool().unsqueeze(-1) & centre.unsqueeze(-1), torch.zeros(3), out)
    return out.clamp(0, 1)
