"""What counts as a number in a user's settings: Python's bool is an int, but `True` is
never a step count or a guidance scale."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


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
