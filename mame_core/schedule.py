"""Which merge ratio each transformer block gets, and during which part of sampling.

A UNet block is addressed by its stage (``input``, ``middle``, ``output``), its index in
that stage (ComfyUI's ``block`` numbering, e.g. ``input_4``) and its resolution level, the
downsample factor of its token grid (``d1`` full latent resolution, then ``d2``, ``d4``,
``d8``). A DiT block is addressed by its stage (``double``, ``single`` for Flux-style
models, ``blocks`` for the others) and its block number; levels do not apply to DiTs.

The text form is a list of ``key = ratio`` entries separated by commas, semicolons or new
lines; ``#`` starts a comment. Keys, from weakest to strongest:

==================  ==========================================
``default``         every block
``input``           a stage (also ``middle``, ``output``)
``d2``              a level (``d1``, ``d2``, ``d4``, ``d8``)
``output.d2``       one stage at one level
``input_4``         one block; ``output_3-5`` a range of blocks
==================  ==========================================

DiT keys: ``double``, ``single``, ``blocks`` (a stage; ``single_*`` is the same) and
``double_0-18``, ``blocks_10`` (blocks by number). Level keys (``d1``, ``output.d2``)
match UNet blocks only.

A ratio is a number in [0, 1) or ``off`` (= 0). Blocks no rule names get the base ratio
when their level is among the schedule's levels (DiT blocks: always), else 0. Example::

    d1 = 0.6, d2 = 0.4
    output_9-11 = 0.7   # the last full-resolution decoder blocks

Rules come in tiers, by where they were written: the MaMe node's overrides
(:data:`NODE_OVERRIDES`) win over a Block Schedule node's overrides
(:data:`SCHEDULE_OVERRIDES`), which win over its sliders (:data:`SLIDERS`), which win over
the node's ratio and levels. Specificity decides only between rules of the same tier.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from .settings import MaMeConfigError, check_ratio

UNET_STAGES = ("input", "middle", "output")
# The stage names of the DiT families (nodes/families.py checks its entries against this list;
# mame_core never imports the nodes): the one place a DiT stage name is spelled.
DIT_STAGES = ("double", "single", "blocks")
STAGES = UNET_STAGES + DIT_STAGES
LEVELS = (1, 2, 4, 8)
LEVEL_CHOICES = ("auto", "d1", "d2", "d1,d2", "d2,d4", "d1,d2,d4", "all")

# Rule tiers, weakest first (issue 15: the documented order of the MaMe and Block Schedule nodes).
SLIDERS, SCHEDULE_OVERRIDES, NODE_OVERRIDES = 0, 1, 2

_KEY_FORMS = (f"default, {'|'.join(STAGES)}, d1|d2|d4|d8, <stage>.d<level>, "
              "<stage>_<n>, <stage>_<n>-<m> or <stage>_*")
_LEVEL_RE = re.compile(r"d?(1|2|4|8)")
_EXACT_RE = re.compile(rf"({'|'.join(STAGES)})_(\d+)(?:-(\d+))?")


class MaMeScheduleError(MaMeConfigError):
    """The schedule text or window is not valid."""


@dataclass(frozen=True)
class Rule:
    """One ``key = ratio`` entry. ``None`` fields match anything; ``tier`` says which
    input it came from (see the module docstring)."""

    ratio: float
    stage: str | None = None
    level: int | None = None
    first: int | None = None
    last: int | None = None
    tier: int = NODE_OVERRIDES

    @property
    def rank(self) -> int:
        if self.first is not None:
            return 4
        if self.stage is not None and self.level is not None:
            return 3
        if self.level is not None:
            return 2
        return 1 if self.stage is not None else 0

    def matches(self, stage: str, index: int, level: int) -> bool:
        if self.stage is not None and self.stage != stage:
            return False
        if self.level is not None and (self.level != level or stage in DIT_STAGES):
            return False
        return self.first is None or self.first <= index <= self.last

    @property
    def key(self) -> str:
        if self.first is not None:
            span = str(self.first) if self.first == self.last else f"{self.first}-{self.last}"
            return f"{self.stage}_{span}"
        if self.stage is not None and self.level is not None:
            return f"{self.stage}.d{self.level}"
        if self.level is not None:
            return f"d{self.level}"
        return self.stage or "default"


def _parse_key(key: str, where: str) -> dict:
    key = key.strip().lower()
    if key in ("default", "all", "*"):
        return {}
    if key in STAGES:
        return {"stage": key}
    stage, underscore, rest = key.partition("_")
    if underscore and stage in STAGES and rest == "*":
        return {"stage": stage}
    if _LEVEL_RE.fullmatch(key) and key.startswith("d"):
        return {"level": int(key[1:])}
    stage, dot, level = key.partition(".")
    if dot and stage in UNET_STAGES and _LEVEL_RE.fullmatch(level) and level.startswith("d"):
        return {"stage": stage, "level": int(level[1:])}
    exact = _EXACT_RE.fullmatch(key)
    if exact:
        first = int(exact.group(2))
        last = int(exact.group(3)) if exact.group(3) is not None else first
        if last < first:
            raise MaMeScheduleError(f"{where}: block range {key!r} runs backwards; write {exact.group(1)}_{last}-{first}")
        return {"stage": exact.group(1), "first": first, "last": last}
    raise MaMeScheduleError(f"{where}: unknown block key {key!r}; allowed keys: {_KEY_FORMS}")


def _parse_ratio(value: str, where: str) -> float:
    value = value.strip().lower()
    if value == "off":
        return 0.0
    try:
        number = float(value)
    except ValueError:
        raise MaMeScheduleError(f"{where}: ratio {value!r} is not a number; use a number in [0, 1) or 'off'") from None
    try:
        return check_ratio(number)
    except MaMeConfigError as err:
        raise MaMeScheduleError(f"{where}: {err}") from None


def parse_rules(text: str, tier: int = NODE_OVERRIDES) -> tuple[Rule, ...]:
    """Parse the schedule text form into rules of ``tier``. Raises :class:`MaMeScheduleError`."""
    if not isinstance(text, str):
        raise MaMeScheduleError(f"schedule must be text, got {type(text).__name__}")
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    entries = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        entries.extend(part for part in re.split(r"[;,]", line) if part.strip())
    for number, entry in enumerate(entries, start=1):
        where = f"schedule entry {number} ({entry.strip()!r})"
        key, eq, value = entry.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise MaMeScheduleError(f"{where}: expected 'key = ratio', e.g. 'd1 = 0.5' or 'output_3-5 = off'")
        rule = Rule(_parse_ratio(value, where), tier=tier, **_parse_key(key, where))
        if rule.key in seen:
            raise MaMeScheduleError(f"{where}: {rule.key!r} is already set by entry {seen[rule.key]}")
        seen[rule.key] = number
        rules.append(rule)
    return tuple(rules)


def parse_levels(spec: str | None) -> frozenset[int] | None:
    """``"d1,d2"`` or ``"1,2"`` to ``{1, 2}``; ``"all"`` to every level; ``"auto"`` to None."""
    text = "auto" if spec is None else str(spec).strip().lower()
    if text == "auto":
        return None
    if text == "all":
        return frozenset(LEVELS)
    levels = set()
    for part in re.split(r"[,+ ]+", text):
        if not _LEVEL_RE.fullmatch(part):
            raise MaMeScheduleError(
                f"levels: {part!r} is not a level; use auto, all, or a list of d1, d2, d4, d8 (e.g. 'd1,d2')"
            )
        levels.add(int(part.lstrip("d")))
    return frozenset(levels)


def check_window(start_percent: float, end_percent: float) -> None:
    for name, value in (("start_percent", start_percent), ("end_percent", end_percent)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise MaMeScheduleError(f"{name} must be in [0, 1], got {value!r}")
    if start_percent > end_percent:
        raise MaMeScheduleError(f"start_percent ({start_percent}) must not be after end_percent ({end_percent})")


@dataclass(frozen=True)
class Schedule:
    """Per-block ratios plus the sampling window in which merging is on.

    ``levels`` None means "auto": the caller picks the finest level that has
    self-attention in its model (d1 on SD1.x/2.x, d2 on SDXL).
    """

    ratio: float = 0.5
    levels: frozenset[int] | None = None
    rules: tuple[Rule, ...] = field(default=())
    start_percent: float = 0.0
    end_percent: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratio", check_ratio(self.ratio))
        check_window(self.start_percent, self.end_percent)
        if self.levels is not None:
            bad = set(self.levels) - set(LEVELS)
            if bad:
                raise MaMeScheduleError(f"levels must be among d1, d2, d4, d8; got {sorted(bad)}")
            object.__setattr__(self, "levels", frozenset(self.levels))

    @classmethod
    def from_text(cls, text: str, **kwargs) -> "Schedule":
        return cls(rules=parse_rules(text), **kwargs)

    def with_rules(self, rules: tuple[Rule, ...]) -> "Schedule":
        """A copy where ``rules`` are added after (and so win over) the existing ones."""
        return replace(self, rules=self.rules + tuple(rules))

    def resolve_levels(self, attention_levels: list[int] | tuple[int, ...]) -> "Schedule":
        """Fix "auto" levels to the finest of the model's attention levels."""
        if self.levels is not None or not attention_levels:
            return self
        return replace(self, levels=frozenset({min(attention_levels)}))

    def ratio_for(self, stage: str, index: int, level: int = 1) -> float:
        """The ratio of one block: the strongest tier's rule that matches, the most specific
        within that tier (the later one on a tie); else the base ratio on the chosen levels."""
        best: Rule | None = None
        for rule in self.rules:
            if rule.matches(stage, index, level) and (
                best is None or (rule.tier, rule.rank) >= (best.tier, best.rank)
            ):
                best = rule
        if best is not None:
            return best.ratio
        if stage in DIT_STAGES or self.levels is None or level in self.levels:
            return self.ratio
        return 0.0

    def active_at(self, progress: float) -> bool:
        """Whether merging is on at ``progress`` (0 = first step, 1 = the end of sampling)."""
        return self.start_percent <= progress <= self.end_percent

    def describe(self) -> str:
        levels = "auto" if self.levels is None else ",".join(f"d{x}" for x in sorted(self.levels))
        parts = [f"ratio {self.ratio:g} on {levels}"]
        parts += [f"{r.key}={r.ratio:g}" for r in self.rules]
        parts.append(f"window {self.start_percent:g}-{self.end_percent:g}")
        return "; ".join(parts)
