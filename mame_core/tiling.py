"""Cutting a token grid into tiles and putting it back, with static slices only.

Tokens of a ``[B, N, C]`` sequence lie on an ``h x w`` grid in raster order. The grid is
cut into ``G = (h // th) * (w // tw)`` whole tiles; the remainder strips on the right and
at the bottom form the *border*, whose tokens are never merged. Nothing is padded: a fake
token would take part in the attention softmax of the real ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TileGrid:
    h: int
    w: int
    th: int
    tw: int

    @classmethod
    def fit(cls, h: int, w: int, tile: tuple[int, int]) -> "TileGrid":
        """Tiles larger than the grid shrink to it, so a small grid is still one tile."""
        return cls(h, w, min(tile[0], h), min(tile[1], w))

    @property
    def gh(self) -> int:
        return self.h // self.th

    @property
    def gw(self) -> int:
        return self.w // self.tw

    @property
    def tiles(self) -> int:
        return self.gh * self.gw

    @property
    def tile_tokens(self) -> int:
        return self.th * self.tw

    @property
    def right_tokens(self) -> int:
        return self.gh * self.th * (self.w - self.gw * self.tw)

    @property
    def border_tokens(self) -> int:
        return self.right_tokens + (self.h - self.gh * self.th) * self.w

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, N, C]`` to tiles ``[B*G, T, C]`` and border ``[B, border, C]``."""
        b, _, c = x.shape
        hh, ww = self.gh * self.th, self.gw * self.tw
        grid = x.reshape(b, self.h, self.w, c)
        tiles = (
            grid[:, :hh, :ww]
            .reshape(b, self.gh, self.th, self.gw, self.tw, c)
            .permute(0, 1, 3, 2, 4, 5)
            .reshape(b * self.tiles, self.tile_tokens, c)
        )
        if self.border_tokens == 0:
            return tiles, grid[:, :0, 0]  # an empty [B, 0, C] view: no copy
        right = grid[:, :hh, ww:].reshape(b, self.right_tokens, c)
        bottom = grid[:, hh:].reshape(b, (self.h - hh) * self.w, c)
        return tiles, torch.cat([right, bottom], dim=1)

    def join(self, tiles: torch.Tensor, border: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`split`: tiles ``[B*G, T, C]`` and border back to ``[B, N, C]``."""
        b, c = border.shape[0], tiles.shape[-1]
        hh, ww = self.gh * self.th, self.gw * self.tw
        main = tiles.reshape(b, self.gh, self.gw, self.th, self.tw, c).permute(0, 1, 3, 2, 4, 5)
        if self.border_tokens == 0:
            return main.reshape(b, self.h * self.w, c)
        main = main.reshape(b, hh, ww, c)
        right = border[:, : self.right_tokens].reshape(b, hh, self.w - ww, c)
        bottom = border[:, self.right_tokens :].reshape(b, self.h - hh, self.w, c)
        grid = torch.cat([torch.cat([main, right], dim=2), bottom], dim=1)
        return grid.reshape(b, self.h * self.w, c)
