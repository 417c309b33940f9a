"""argparse types shared by the command-line tools: a number out of range is refused by argparse, with the
usage line, instead of ending in a traceback or doing nothing further on."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def at_least(least: int) -> Callable[[str], int]:
    """An integer of at least ``least``."""

    def number(text: str) -> int:
        value = int(text)
        if value < least:
            raise argparse.ArgumentTypeError(f"{text!r}: give at least {least}")
        return value

    return number


def positive_seconds(most: float) -> Callable[[str], float]:
    """A number of seconds above 0 and at most ``most``: float() also takes "nan", "inf" and "-1", which
    ended in a traceback from the socket layer (or, for 0, in a misleading connection error)."""

    def seconds(text: str) -> float:
        value = float(text)
        if not 0 < value <= most:  # false for nan too
            raise argparse.ArgumentTypeError(f"{text!r}: give seconds above 0 and at most {most:g}")
        return value

    return seconds
