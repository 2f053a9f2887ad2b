"""Which tokens MaMe merged where, for display: an analysis of one call, not part of merging.

:func:`describe_merges` recomputes the similarity of one batch item's tokens to their
tiles' destinations with the same function as :func:`plan_merge`, and reduces it to per-token labels
(which destination group a token joins, whether it cleared τ). It uses argmax and host
reads, which the merge path itself never does. :func:`draw_merge_map` paints those labels
over the generated image.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .destinations import destination_indices, pattern_period, pattern_selection
from .merge import destinations_per_tile, tile_similarity
from .settings import MergeSettings
from .tiling import TileGrid


@dataclass
class MergeMap:
    h: int
    w: int
    group: torch.Tensor  # [h, w] long: destination group id of each token; -1 on the border
    is_destination: torch.Tensor  # [h, w] bool
    above_threshold: torch.Tensor  # [h, w] bool: similarity to its destination > τ (averaged into it)
    threshold: float
    tile: tuple[int, int]

    def stats(self) -> dict:
        tiled = self.group >= 0
        groups = self.group[tiled]
        sizes = torch.bincount(groups) if groups.numel() else torch.zeros(0, dtype=torch.long)
        sizes = sizes[sizes > 0]
        merged = tiled & ~self.is_destination & self.above_threshold
        below = tiled & ~self.is_destination & ~self.above_threshold
        n = self.h * self.w
        return {
            "tokens": n,
            "groups": int(sizes.numel()),
            "border_tokens": int((~tiled).sum()),
            "mean_group_size": float(sizes.float().mean()) if sizes.numel() else 0.0,
            "max_group_size": int(sizes.max()) if sizes.numel() else 0,
            "share_merged": float(merged.sum()) / n,
            "share_below_threshold": float(below.sum()) / n,
        }


def describe_merges(x: torch.Tensor, h: int, w: int, settings: MergeSettings, pattern=0) -> MergeMap:
    """Labels for the tokens ``x`` (``[N, C]`` or ``[1, N, C]``) of one batch item.

    Runs on the host on purpose (the input is moved to the CPU first): it reads values back."""
    x = x.detach().reshape(-1, x.shape[-1]).to("cpu", torch.float32)
    if isinstance(pattern, torch.Tensor):
        pattern = int(pattern.detach().cpu())
    grid = TileGrid.fit(h, w, settings.tile)
    k = destinations_per_tile(grid.tile_tokens, settings.ratio)
    period = pattern_period(grid.th, grid.tw)
    if isinstance(pattern, tuple):
        pattern = (pattern[0] % period) * period + pattern[1] % period
    shift = ((pattern // period) % period, pattern % period)
    dest = torch.tensor(destination_indices(grid.th, grid.tw, k, *shift))
    tiles, _ = grid.split(x.unsqueeze(0))
    sim = tile_similarity(tiles, pattern_selection(grid.th, grid.tw, k, pattern, tiles.device, tiles.dtype))  # [G, T, k]
    best, choice = sim.max(dim=-1)
    choice[:, dest] = torch.arange(k)  # a destination keeps itself even when another ties with it
    tile_ids = torch.arange(grid.tiles).unsqueeze(1)
    group_tiles = tile_ids * k + choice  # [G, T]
    is_dest = torch.zeros(grid.tiles, grid.tile_tokens, dtype=torch.bool)
    is_dest[:, dest] = True
    above = best > settings.threshold
    fields = [group_tiles.float(), is_dest.float(), above.float()]
    border = torch.full((1, grid.border_tokens, 1), -1.0)
    out = [grid.join(f.unsqueeze(-1), border).reshape(h, w) for f in fields]
    return MergeMap(h, w, out[0].long(), out[1] > 0.5, out[2] > 0.5, settings.threshold, (grid.th, grid.tw))


def _palette(n: int) -> torch.Tensor:
    """``n`` distinct-looking colours (golden-angle hues), [n, 3] in [0, 1]."""
    hue = (torch.arange(n, dtype=torch.float32) * 0.61803398875) % 1.0
    k = (torch.tensor([5.0, 3.0, 1.0]) + hue.unsqueeze(1) * 6) % 6
    rgb = 1 - 0.65 * torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    shade = 0.75 + 0.25 * ((torch.arange(n) % 3) / 2).unsqueeze(1)
    return rgb * shade


def draw_merge_map(image: torch.Tensor, merge_map: MergeMap, alpha: float = 0.5) -> torch.Tensor:
    """Paint groups over ``image`` (``[H, W, 3]`` in [0, 1]): one colour per destination group,
    destinations outlined dark, tokens below τ hatched grey, border tokens left clear."""
    height, width = image.shape[:2]
    groups = merge_map.group
    colours = _palette(int(groups.max()) + 1 if (groups >= 0).any() else 1)
    cell = colours[groups.clamp(min=0)]  # [h, w, 3]
    cell = torch.where((groups < 0).unsqueeze(-1), torch.ones(3), cell)
    weight = torch.where(groups < 0, 0.0, alpha)
    below = ~merge_map.above_threshold & ~merge_map.is_destination & (groups >= 0)
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
