"""What counts as a number in a user's settings: Python's bool is an int, but `True` is
never a step count or a guidance scale."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from kumovideo.utils.errors import KumoInputError


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class NumberRange:
    """The values a numeric setting may take: a number (an integer if `integer`) from `low`
    to `high` (None: no bound), `low` itself excluded when `above_low` (rates and sizes,
    where 0 would mean "never" or "empty"); null too when `optional`. One class for the
    training and the data-pipeline configs, so their messages read alike."""

    low: float | None = None
    high: float | None = None
    above_low: bool = False
    integer: bool = False
    optional: bool = False

    def admits(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if not is_real(value) or not math.isfinite(value):
            return False
        if self.integer and not is_int(value):
            return False
        if self.low is not None and (value <= self.low if self.above_low else value < self.low):
            return False
        return self.high is None or value <= self.high

    def describe(self) -> str:
        what = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            what += f" in {'(' if self.above_low else '['}{self.low:g}, {self.high:g}]"
        elif self.low is not None:
            what += f" {'>' if self.above_low else '>='} {self.low:g}"
        elif self.high is not None:
            what += f" <= {self.high:g}"
        return what + (" (or null)" if self.optional else "")


# Seeds: torch.Generator.manual_seed takes 0 .. 2**64 - 1 (larger ones overflow in C, with
# "Overflow when unpacking long long"); seed + offset (one per clip of a batch) must stay
# inside, so the bound leaves room below 2**64.
SEED_MAX = 2**63 - 1
SEED_RANGE = NumberRange(low=0, high=SEED_MAX, integer=True)


def check_seed(value: Any, name: str = "seed") -> int:
    """`value` if it is a seed every generator here accepts, else a one-line KumoInputError."""
    if not is_int(value):
        raise KumoInputError(f"{name} {value!r} is not a whole number; pass 0 or more")
    if value < 0:
        raise KumoInputError(f"{name} {value} is negative; pass 0 or more")
    if not SEED_RANGE.admits(value):
        raise KumoInputError(f"{name} {value} is too large; use at most 2**63 - 1 ({SEED_MAX})")
    return value
