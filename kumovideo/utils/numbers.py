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


def _number(value: float) -> str:
    """A bound as people write it: 2147483647, not 2.14748e+09; 0.5 and 1e-06 as %g does."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


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
            what += f" in {'(' if self.above_low else '['}{self.low:g}, {_number(self.high)}]"
        elif self.low is not None:
            what += f" {'>' if self.above_low else '>='} {self.low:g}"
        elif self.high is not None:
            what += f" <= {_number(self.high)}"
        return what + (" (or null)" if self.optional else "")


# Seeds: torch.Generator.manual_seed takes 0 .. 2**64 - 1 (larger ones overflow in C, with
# "Overflow when unpacking long long"); seed + offset (one per clip of a batch) must stay
# inside, so the bound leaves room below 2**64.
SEED_MAX = 2**63 - 1


def check_seed(value: Any, name: str = "seed") -> int:
    """`value` if it is a seed every generator here accepts, else a one-line KumoInputError."""
    negative = "{name} {value} is negative; pass 0 or more"
    return check_whole(value, name, low=0, high=SEED_MAX, too_small=negative, high_text=f"2**63 - 1 ({SEED_MAX})")


# Counts and sizes a user types (steps, frames, pixels, clips, runs): torch, numpy and PyAV
# take them as C integers, where a larger one overflows with a traceback ("Python int too
# large to convert to C ssize_t"); no run comes near it.
COUNT_MAX = 2**31 - 1
# Frame rates of written video: PyAV's rate is a C int fraction and libvpx refuses one over
# 10**9; no player shows more than a few hundred frames a second.
FPS_MAX = 1000
# Worker processes and CPU threads: each is an OS process or thread, started up front.
WORKERS_MAX = 1024


def check_interpolated_fps(fps: float, factor: int, name: str = "the clip's frame rate") -> float:
    """The frame rate of a clip interpolated x`factor` (fps * factor), or a one-line
    KumoInputError when that is over FPS_MAX: one rule for `kumo interpolate` and for
    `kumo generate --interpolate`, so neither writes a file the other refuses."""
    interpolated = fps * factor
    if interpolated > FPS_MAX:
        raise KumoInputError(
            f"{name} {fps:g} interpolated x{factor} would be {interpolated:g} fps, over the {FPS_MAX} fps limit; "
            f"use at most {FPS_MAX / factor:g} fps for x{factor}"
        )
    return interpolated


def _too_small(template: str | None, name: str, value: Any, low: float) -> KumoInputError:
    text = template or "{name} {value}: pass {low:g} or more"
    return KumoInputError(text.format(name=name, value=value, low=low))


def check_whole(
    value: Any,
    name: str,
    *,
    low: int = 1,
    high: int = COUNT_MAX,
    too_small: str | None = None,
    high_text: str | None = None,
) -> int:
    """`value` if it is a whole number from `low` to `high`, else a one-line KumoInputError.
    Below `low` the message is `too_small` (a str.format template with {name}, {value} and
    {low}: a command keeps its own wording), above `high` "NAME VALUE is too large; use at
    most HIGH" (HIGH written as `high_text` when given)."""
    if not is_int(value):
        raise KumoInputError(f"{name} {value!r} is not a whole number; pass {low} or more")
    if value < low:
        raise _too_small(too_small, name, value, low)
    if value > high:
        raise KumoInputError(f"{name} {value} is too large; use at most {high_text or high}")
    return value


def check_real(
    value: Any, name: str, *, low: float = 0, high: float, above_low: bool = True, too_small: str | None = None
) -> float:
    """`value` if it is a finite number from `low` (excluded if `above_low`) to `high`, else a
    one-line KumoInputError: `too_small` (as in `check_whole`) below `low` or for NaN,
    "... is too large; use at most HIGH" above `high` or for infinity."""
    if not is_real(value):
        raise KumoInputError(f"{name} {value!r} is not a number")
    if math.isnan(value) or (value <= low if above_low else value < low):
        raise _too_small(too_small, name, value, low)
    if value > high:
        raise KumoInputError(f"{name} {value:g} is too large; use at most {high:g}")
    return float(value)
