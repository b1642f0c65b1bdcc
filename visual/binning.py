"""Binning long position axes so a figure has at most MAX_COLUMNS columns.

Attention over original positions is binned by summing the weights of consecutive positions
(`bin_size` of them per bin), so the total mass, and the mass of any range of whole bins, is
unchanged. Held/not-held maps are binned by averaging, giving the fraction of a bin still held.
"""

from __future__ import annotations

import math

MAX_COLUMNS = 1000


def bin_size(width: int) -> int:
    """Positions per bin so that `width` positions fit in MAX_COLUMNS bins (1 means no binning)."""
    return max(1, math.ceil(width / MAX_COLUMNS))


def bin_starts(width: int, size: int) -> list[int]:
    """The first original position of each bin."""
    return list(range(0, width, size))


def dense_row(positions: list[int], values: list[float], width: int) -> list[float]:
    """values scattered to their positions in a row of `width` zeros."""
    row = [0.0] * width
    for p, v in zip(positions, values):
        row[p] = v
    return row


def binned_sum(row: list[float], size: int) -> list[float]:
    return [sum(row[i:i + size]) for i in range(0, len(row), size)]


def binned_mean(row: list[float], size: int) -> list[float]:
    return [sum(row[i:i + size]) / len(row[i:i + size]) for i in range(0, len(row), size)]
