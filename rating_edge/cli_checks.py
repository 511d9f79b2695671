"""Option values checked at the CLI's edge, so a bad number is a one-line error (exit 2) before any
work starts, not a crash or a silent wrong run later (`verify --phantom 0`, `--gate nan`)."""
from __future__ import annotations

import math

from rating_edge.errors import RatingEdgeError


def check_range(option: str, value, lo=None, hi=None, lo_open: bool = False, hi_open: bool = False):
    """`value` unchanged (None passes: the option was not given), or RatingEdgeError naming `option`."""
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        raise RatingEdgeError(f"{option} must be a finite number, got {value}")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise RatingEdgeError(f"{option} must be {'>' if lo_open else '>='} {lo}, got {value}")
    if hi is not None and (value >= hi if hi_open else value > hi):
        raise RatingEdgeError(f"{option} must be {'<' if hi_open else '<='} {hi}, got {value}")
    return value


def check_count(option: str, value, lo: int = 1, hi=None):
    """A count of things (pairs, epochs, threads): an integer >= `lo`."""
    return check_range(option, value, lo, hi)


def check_fraction(option: str, value, lo_open: bool = False):
    """A share or an agreement: a finite number in [0, 1] ((0, 1] with `lo_open`)."""
    return check_range(option, value, 0.0, 1.0, lo_open=lo_open)


def check_positive(option: str, value):
    """A finite number > 0 (a rate, a duration, a temperature)."""
    return check_range(option, value, 0.0, lo_open=True)
