"""argparse types shared by the command lines: each refuses bad input with one clear line."""

from __future__ import annotations

import argparse
import math
from typing import NoReturn

from messaging.lifecycle import EXIT_USAGE


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr (`calc-producer bulk: error: ...`), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def positive_int(text: str) -> int:
    """A count: 1 or more."""
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """A limit where 0 means none: 0 or more."""
    value = _whole(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    """A rate or a duration: finite and above 0.

    0, negative, NaN and inf would each silently mean "unpaced" or "forever"; leaving the
    option out says that.
    """
    value = _number(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def share(text: str) -> float:
    """A share of the whole: 0 to 1, both included."""
    value = _number(text)
    if not 0.0 <= value <= 1.0:  # false for NaN too
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value
