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


def test_meanmax_is_the_mean_of_each_samples_range_and_merges():
    rng = np.random.default_rng(4)
    samples = [rng.normal(0, 1 + i, 500).astype(np.float32) for i in range(6)]
    whole, first, second = TensorHistogram(bins=False), TensorHistogram(bins=False), TensorHistogram(bins=False)
    for i, sample in enumerate(samples):
        whole.update(sample)
        (first if i < 3 else second).update(sample)
    first.merge(second)
    expected = (np.mean([s.min() for s in samples]), np.mean([s.max() for s in samples]))
    for hist in (whole, first):
        low, high = clip_range(hist, "meanmax", 255, symmetric=True)
        np.testing.assert_allclose((low, high), expected, rtol=1e-6)
        assert hist.min <= low and high <= hist.max  # inside the observed range


def test_trt_chooses_between_minmax_and_meanmax_by_default_and_the_user_can_choose():
    import qcc
    from tests.conftest import random_feeds
    from tests.e2e.synthetic import synthetic_model

    model = synthetic_model("residual_cnn")
    feeds = random_feeds(model, 8)
    result = qcc.compile(model, target="trt", calibration=feeds)
    default = result.report
    assert set(default["method_selection"]["output_cosine"]) == {"minmax", "meanmax"}
    assert default["options"]["method"] == default["method_selection"]["chosen"]
    # The candidates share one calibration run; the artifact is the one a direct compile gives.
    direct = qcc.compile(model, target="trt", calibration=feeds, method=default["options"]["method"])
    assert result.artifact.data == direct.artifact.data
    chosen = qcc.compile(model, target="trt", calibration=feeds, method="minmax").report
    assert chosen["options"]["method"] == "minmax" and "method_selection" not in chosen
    assert qcc.compile(model, target="ort", calibration=feeds).report["options"]["method"] == "minmax"
    fp8 = qcc.compile(model, target="trt", calibration=feeds, precision="fp8")
    assert fp8.report["options"]["method"] == "minmax"
