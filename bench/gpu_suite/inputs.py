"""Test grids shared by the unit tests and the GPU suite's correctness stage."""
from __future__ import annotations

import torch

from mame_core.destinations import destination_mask
from mame_core.merge import destinations_in, tiling_for

# (frames, h, w): square, odd, wide, a tile remainder on both axes, and video grids
GRIDS = ((1, 16, 16), (1, 13, 19), (1, 10, 24), (1, 64, 64), (3, 9, 10), (5, 6, 5))


def copies_of_destinations(b, frames, h, w, c, settings, pattern, seed):
    """Tokens ``[b, frames*h*w, c]`` where every non-destination token is an exact copy of a
    destination of its tile, so merging averages equal tokens and restoring gives them back."""
    gen = torch.Generator().manual_seed(seed)
    tiling = tiling_for(h, w, settings, frames)
    parts = []
    for block in tiling.blocks:
        t = block.tile_tokens
        d = destinations_in(block, settings.ratio)
        is_dest = destination_mask(block.shape, block.tiles, block.first_tile, d, torch.tensor(pattern))
        vecs = torch.randn(b, block.tiles, t, c, generator=gen)
        dest_rows = [torch.nonzero(row).flatten() for row in is_dest]  # test-side bookkeeping only
        pick = torch.randint(0, d, (block.tiles, t), generator=gen)
        for g, rows in enumerate(dest_rows):
            source = rows[pick[g]]
            source[rows] = rows  # a destination is itself
            vecs[:, g] = vecs[:, g, source]
        parts.append(vecs.reshape(b * block.tiles, t, c))
    return tiling.join(parts)


def constant_cells(b, frames, h, w, c, seed, cell=4):
    """Tokens ``[b, frames*h*w, c]`` constant on every ``cell x cell`` square (over all frames):
    whichever destinations a route picks inside a 4x4 tile or a 2x2 cell, each merged token is
    an exact copy of its destination, so restoring gives the input back on every route."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(b, 1, -(-h // cell), -(-w // cell), c, generator=gen)
    v = v.repeat_interleave(cell, 2).repeat_interleave(cell, 3)[:, :, :h, :w].expand(b, frames, h, w, c)
    return v.reshape(b, frames * h * w, c)
