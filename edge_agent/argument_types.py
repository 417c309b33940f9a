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
