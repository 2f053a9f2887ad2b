"""Which tokens MaMe merged where, for display: an analysis of one call, not part of merging.

:func:`describe_merges` builds the plan of :func:`plan_merge` for one batch item, on the CPU
on purpose (it reads values back, which the merge path never does), and reduces it to
per-token labels: the merged token each token belongs to, whether it is a destination, and
whether it was averaged (cleared τ).
:func:`draw_merge_map` paints those labels over the generated image.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .merge import plan_merge
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
    mapped the same way plan_merge maps it. The labels are read off the very plan that
    :func:`plan_merge` builds, so the map shows what merging does."""
    x = x.detach().to("cpu", torch.float32).reshape(1, -1, x.shape[-1])
    if isinstance(pattern, tuple):
        pattern = pattern[0] * 65536 + pattern[1]
    pattern = torch.as_tensor(pattern).detach().to("cpu", torch.int64).reshape(()) % (2**62)
    plan = plan_merge(x, h, w, settings, pattern)
    if plan.is_identity:
        none = torch.zeros(h, w, dtype=torch.bool)
        return MergeMap(h, w, torch.arange(h * w).reshape(h, w), none, none, none, settings.threshold, settings.tile)

    def grid(per_part) -> torch.Tensor:
        tiles = [per_part(p).reshape(p.block.tiles, p.block.tile_tokens, 1).float() for p in plan.parts]
        return plan.tiling.join(tiles).reshape(h, w) > 0.5

    is_dest = grid(lambda p: p.is_dest)
    merged = grid(lambda p: p.merged[0])
    above = grid(lambda p: p.merged[0] & (p.score[0] >= settings.threshold))
    return MergeMap(h, w, plan.groups()[0].reshape(h, w), is_dest, merged, above, settings.threshold, settings.tile)


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
