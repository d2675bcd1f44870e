"""Calibrators against brute-force references on known distributions."""

from __future__ import annotations

import numpy as np
import pytest

from qcc.passes._clip_range import clip_range
from qcc.passes._histogram import BINS, TensorHistogram


def _hist(values: np.ndarray, chunks: int = 7) -> TensorHistogram:
    hist = TensorHistogram()
    for part in np.array_split(values, chunks):
        hist.update(part)
    return hist


def _quant_mse(x: np.ndarray, low: float, high: float, levels: int = 256) -> float:
    step = (high - low) / (levels - 1)
    q = np.clip(np.round((x - low) / step), 0, levels - 1) * step + low
    return float(np.mean((x - q) ** 2))


def test_streamed_histogram_equals_one_shot():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1, 5000), rng.normal(0, 40, 50)]).astype(np.float32)
    streamed, whole = _hist(values), TensorHistogram()
    whole.update(values)
    assert streamed.limit == whole.limit
    # Bins may differ only where growth coarsened early counts: totals and range are exact.
    assert streamed.pos.sum() + streamed.neg.sum() == np.count_nonzero(values)
    assert (streamed.min, streamed.max) == (float(values.min()), float(values.max()))
    assert streamed.pos.shape == (BINS,)


def test_minmax_is_the_observed_range():
    values = np.array([-3.0, 0.5, 7.0], np.float32)
    assert clip_range(_hist(values, 1), "minmax", 256, False) == (-3.0, 7.0)


def test_percentile_clips_outliers_only():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.uniform(0, 1, 100_000), [500.0]]).astype(np.float32)
    low, high = clip_range(_hist(values), "percentile", 256, False)
    assert low == 0.0 and 0.99 <= high <= 1.01


@pytest.mark.parametrize("tail", [5.0, 50.0])
def test_mse_is_near_the_brute_force_optimum(tail):
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.laplace(0, 1, 50_000), rng.normal(0, tail, 20)]).astype(np.float32)
    low, high = clip_range(_hist(values), "mse", 256, False)
    chosen = _quant_mse(values, low, high)
    full = _quant_mse(values, float(values.min()), float(values.max()))
    best = min(_quant_mse(values, t * values.min(), t * values.max()) for t in np.linspace(0.02, 1, 300))
    assert chosen <= full
    assert chosen <= best * 1.1


def test_entropy_clips_a_gaussian_tail_but_keeps_its_body():
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(0, 1, 200_000), [60.0, -55.0]]).astype(np.float32)
    low, high = clip_range(_hist(values), "entropy", 256, True)
    assert 2.5 < high < 20 and -20 < low < -2.5  # outliers cut, >= 2.5 sigma kept
    assert clip_range(_hist(np.abs(values)), "entropy", 256, False)[0] == 0.0


def test_entropy_keeps_a_uniform_range():
    values = np.random.default_rng(4).uniform(-1, 1, 100_000).astype(np.float32)
    low, high = clip_range(_hist(values), "entropy", 256, True)
    assert high > 0.9 and low < -0.9
