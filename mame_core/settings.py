"""Validated settings for one MaMe/MaRe call.

Every bad value raises :class:`MaMeConfigError` naming the field and the values it
accepts, so a ComfyUI node or a script can show the message to the user as it is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

MODES = ("qkv", "kv")
GATES = ("hard", "sigmoid")


class MaMeConfigError(ValueError):
    """A MaMe setting, schedule or input has a value outside what is allowed."""


def check_ratio(value: float, field: str = "ratio") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise MaMeConfigError(f"{field} must be a number in [0, 1), got {value!r}")
    if not 0.0 <= float(value) < 1.0:
        raise MaMeConfigError(f"{field} must be in [0, 1), got {value!r}")
    return float(value)


def _check_choice(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise MaMeConfigError(f"{field} must be one of {', '.join(allowed)}; got {value!r}")


def _check_range(field: str, value: float, low: float, high: float, *, open_low: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    ok = ok and (value > low if open_low else value >= low) and value <= high
    if not ok:
        bracket = "(" if open_low else "["
        raise MaMeConfigError(f"{field} must be in {bracket}{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class MergeSettings:
    """How tokens are merged inside one transformer block.

    ratio:        share of tokens merged away, in [0, 1): a grid of N tokens gives up exactly
                  round(ratio*N), so attention always runs on the same number of tokens.
                  Which tokens go is decided over the whole grid (the most redundant ones),
                  so a flat region gives more than its share and a detailed one less. 0 is
                  the identity.
    threshold:    τ, in [-1, 1]. Inside a tile the tokens most similar to a destination are
                  the ones merged (that count is fixed by the ratio); τ decides what a merged
                  token becomes. A pair whose cosine similarity is at least τ is averaged
                  into one token; a pair below τ is not averaged: the destination keeps its
                  own features and the merged token takes the destination's output back.
                  -1 averages every pair (ToMe's behaviour, smoother); higher τ keeps the
                  destinations' own detail sharper. τ never changes how many tokens attention
                  runs on, nor which tokens stay unmerged.
    mode:         ``qkv`` merges queries, keys and values and restores the output (MaRe);
                  ``kv`` merges only keys and values and keeps full-length queries.
    tile:         (height, width) of the tiles, in tokens, that a token looks for its match
                  in; a grid that is not a multiple is cut into tiles one token longer or
                  shorter, so every token is covered.
    tile_frames:  frames per tile on a video grid (frames > 1); ignored for images.
    gate:         ``hard`` step or ``sigmoid`` (differentiable) for the τ test.
    gate_width:   the sigmoid's width in similarity units (ignored by the hard gate).
    """

    ratio: float = 0.5
    threshold: float = -1.0
    mode: str = "qkv"
    tile: tuple[int, int] = (8, 8)
    gate: str = "hard"
    gate_width: float = 0.02
    tile_frames: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratio", check_ratio(self.ratio))
        _check_range("threshold", self.threshold, -1.0, 1.0)
        _check_choice("mode", self.mode, MODES)
        tile = self.tile
        if isinstance(tile, int) and not isinstance(tile, bool):
            tile = (tile, tile)
        if (
            not isinstance(tile, (tuple, list))
            or len(tile) != 2
            or not all(isinstance(t, int) and not isinstance(t, bool) and 1 <= t <= 64 for t in tile)
        ):
            raise MaMeConfigError(f"tile must be an int or (height, width) of ints in [1, 64], got {self.tile!r}")
        object.__setattr__(self, "tile", (int(tile[0]), int(tile[1])))
        _check_choice("gate", self.gate, GATES)
        _check_range("gate_width", self.gate_width, 0.0, 1.0, open_low=True)
        tf = self.tile_frames
        if isinstance(tf, bool) or not isinstance(tf, int) or not 1 <= tf <= 16:
            raise MaMeConfigError(f"tile_frames must be an int in [1, 16], got {tf!r}")

    def with_ratio(self, ratio: float) -> "MergeSettings":
        return replace(self, ratio=ratio)
