"""argparse `type=` converters for numbers with bounds; a bad value is a usage error (exit 2)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def int_between(low: int, high: int | None = None) -> Callable[[str], int]:
    """A converter accepting integers from `low` to `high` (inclusive; no upper bound if None)."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"{low}-{high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bounds}: {text!r}")
        return value

    return convert


def seconds(*, allow_zero: bool) -> Callable[[str], float]:
    """A converter accepting a finite number of seconds, > 0 (or >= 0 with `allow_zero`)."""

    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            bound = "0 or more" if allow_zero else "more than 0"
            raise argparse.ArgumentTypeError(f"must be {bound} seconds: {text!r}")
        return value

    return convert
