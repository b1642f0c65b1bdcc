"""Binning long position axes so a figure has at most MAX_COLUMNS columns.

Attention over original positions is binned by summing the weights of consecutive positions
(`bin_size` of them per bin), so the total mass, and the mass of any range of whole bins, is
unchanged. Held/not-held maps are binned by averaging, giving the fraction of a bin still held.
"""

from __future__ import annotations

import math

import numpy as np  # arrays, not nested lists: Plotly validates a list's every element (~0.1 s a heatmap)

MAX_COLUMNS = 1000  # about a column a pixel of a full-width figure: finer is not seen, only sent


def bin_size(width: int, columns: int = MAX_COLUMNS) -> int:
    """Positions per bin so that `width` positions fit in `columns` bins (1 means no binning)."""
    return max(1, math.ceil(width / max(1, columns)))


def bin_starts(width: int, size: int) -> list[int]:
    """The first original position of each bin."""
    return list(range(0, width, size))


def dense_row(positions: list[int], values, width: int) -> np.ndarray:
    """values (one per position, or one for all) scattered to their positions in a row of `width` zeros."""
    row = np.zeros(width)
    row[np.asarray(positions, dtype=np.int64)] = values
    return row


def binned_sum(row: np.ndarray, size: int) -> np.ndarray:
    return np.pad(row, (0, -len(row) % size)).reshape(-1, size).sum(axis=1)


def binned_mean(row: np.ndarray, size: int) -> np.ndarray:
    counts = np.minimum(size, len(row) - np.arange(0, len(row), size))  # the last bin may be short
    return binned_sum(row, size) / counts
