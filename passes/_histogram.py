"""Streamed, mergeable activation histograms for calibration.

Each tensor keeps two histograms of magnitudes, one for positive and one for negative values,
over ``[0, R]`` in ``BINS`` equal bins, plus its exact min and max. When a sample holds a value
beyond ``R``, ``R`` is doubled (as often as needed) and adjacent bins are summed pairwise, so the
histogram stays exact up to its bin width and memory stays ``2 x BINS`` counts per tensor whatever
the number of samples. Two histograms of the same tensor merge by bringing both to the larger
``R`` and adding: the result equals observing both streams into one. The sums of each sample's
own min and max are kept too (the ``meanmax`` clip range averages them).
"""

from __future__ import annotations

import numpy as np

BINS = 2048


class TensorHistogram:
    """Magnitude histograms (positive and negative side) of one tensor, plus its exact range."""

    def __init__(self, bins: bool = True) -> None:
        self.bins = bins  # False: track only min and max (the minmax method needs nothing else)
        self.limit = 0.0  # R; 0 until the first non-zero value
        self.pos = np.zeros(BINS, dtype=np.int64)
        self.neg = np.zeros(BINS, dtype=np.int64)
        self.min = np.inf
        self.max = -np.inf
        self.samples = 0  # samples observed, and the sums of their own extremes
        self.sum_min = 0.0
        self.sum_max = 0.0

    def update(self, array: np.ndarray) -> None:
        """Folds one sample's values (finite) into the histogram."""
        if not array.size:
            return
        flat = array.ravel()
        low, high = float(flat.min()), float(flat.max())
        self.min, self.max = min(self.min, low), max(self.max, high)
        self.samples += 1
        self.sum_min += low
        self.sum_max += high
        if not self.bins:
            return
        peak = max(abs(self.min), abs(self.max))
        if peak > self.limit:
            self._grow(peak)
        if self.limit == 0.0:
            return
        scale = BINS / self.limit
        positive = flat[flat > 0]
        negative = -flat[flat < 0]
        self.pos += np.bincount(np.minimum((positive * scale).astype(np.int64), BINS - 1), minlength=BINS)
        self.neg += np.bincount(np.minimum((negative * scale).astype(np.int64), BINS - 1), minlength=BINS)

    def merge(self, other: TensorHistogram) -> None:
        """Folds another histogram of the same tensor into this one."""
        if other.limit > self.limit:
            self._grow(other.limit)
        pos, neg = other.pos, other.neg
        if other.limit and other.limit < self.limit:
            factor = int(round(self.limit / other.limit))
            pos, neg = _coarsen(pos, factor), _coarsen(neg, factor)
        self.pos += pos
        self.neg += neg
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.samples += other.samples
        self.sum_min += other.sum_min
        self.sum_max += other.sum_max

    def _grow(self, peak: float) -> None:
        if self.limit == 0.0:
            # Start at a power of two so that histograms of one tensor always align when merged.
            self.limit = float(2.0 ** np.ceil(np.log2(peak)))
            return
        factor = 1
        while self.limit * factor < peak:
            factor *= 2
        self.pos = _coarsen(self.pos, factor)
        self.neg = _coarsen(self.neg, factor)
        self.limit *= factor

    def centers(self) -> np.ndarray:
        """Bin centres of the magnitude axis."""
        return (np.arange(BINS) + 0.5) * (self.limit / BINS)


def _coarsen(counts: np.ndarray, factor: int) -> np.ndarray:
    """Sums groups of ``factor`` adjacent bins into the low end of a same-size array."""
    if factor == 1:
        return counts
    merged = np.zeros_like(counts)
    summed = counts.reshape(-1, factor).sum(axis=1) if factor <= len(counts) else np.array([counts.sum()])
    merged[: len(summed)] = summed
    return merged
