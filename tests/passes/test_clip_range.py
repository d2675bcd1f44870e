"""Calibrators against brute-force references on known distributions."""

from __future__ import annotations

import numpy as np
import pytest

import qcc.frontend
from qcc.passes._clip_range import clip_range, consumer_bounds
from qcc.passes._histogram import BINS, TensorHistogram
from tests.conftest import build_model


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


# ------------------------------------------------------------------------- consumer saturation bounds


def _consumers_of_c(body: str, outputs: str = "float[1,2,4,4] y") -> tuple[float, float]:
    """The bounds of tensor ``c`` (a Conv output) in a graph whose remaining nodes are ``body``
    (``lo`` and ``hi`` are the constants -1.5 and 6)."""
    proto = build_model(
        '<ir_version: 10, opset_import: ["" : 18]>\n'
        f"g (float[1,2,4,4] x, float[2,2,1,1] w, float lo, float hi) => ({outputs}) {{"
        f" c = Conv(x, w)\n {body} }}",
        constants={"lo": np.float32(-1.5), "hi": np.float32(6.0)},
    )
    graph = qcc.frontend.load(proto).model.graph
    return consumer_bounds(next(v for n in graph for v in n.outputs if v.name == "c"))


@pytest.mark.parametrize(
    ("body", "bounds"),
    [
        ("y = Sigmoid(c)", (-8.0, 8.0)),
        ("s = Sigmoid(c)\n y = Mul(c, s)", (-8.0, np.inf)),  # SiLU: x Sigmoid(x)
        ("s = Sigmoid(c)\n y = Mul(s, c)", (-8.0, np.inf)),
        ("y = Relu(c)", (0.0, np.inf)),
        ("y = HardSwish(c)", (-3.0, np.inf)),
        ("y = HardSigmoid<alpha=0.25, beta=0.5>(c)", (-2.0, 2.0)),
        ("h = HardSigmoid<alpha=0.25, beta=0.75>(c)\n y = Mul(c, h)", (-3.0, np.inf)),
        ("y = Clip(c, lo, hi)", (-1.5, 6.0)),
        # Both readers saturate, each on its own interval: the wider one holds.
        ("s = Sigmoid(c)\n t = HardSigmoid<alpha=0.25, beta=0.5>(c)\n y = Add(s, t)", (-8.0, 8.0)),
    ],
)
def test_saturating_consumers_bound_their_input(body, bounds):
    assert _consumers_of_c(body) == bounds


@pytest.mark.parametrize(
    "body",
    [
        "s = Sigmoid(c)\n y = Add(c, s)",  # c is also read as it is
        "s = Sigmoid(x)\n y = Mul(c, s)",  # a gate on another tensor: not SiLU
        "y = Exp(c)",
        "y = Tanh(c)",  # saturates, left unbounded (passes/_clip_range.py says why)
        "y = Clip(lo, lo, c)",  # c is a bound, not the input
    ],
)
def test_a_reader_that_sees_the_tail_leaves_the_range_alone(body):
    assert _consumers_of_c(body) == (-np.inf, np.inf)


def test_a_graph_output_is_never_bounded():
    assert _consumers_of_c("y = Sigmoid(c)", outputs="float[1,2,4,4] y, float[1,2,4,4] c") == (-np.inf, np.inf)


def test_bounds_clip_within_the_observed_range_and_keep_zero():
    values = np.array([-144.0, -1.0, 0.5, 30.0], np.float32)
    assert clip_range(_hist(values, 1), "minmax", 256, False, (-8.0, np.inf)) == (-8.0, 30.0)
    assert clip_range(_hist(values, 1), "minmax", 256, False, (-200.0, 200.0)) == (-144.0, 30.0)
    # A bound that excludes 0 (Clip(x, 1, 6)) still keeps 0 representable.
    assert clip_range(_hist(values, 1), "minmax", 256, False, (1.0, 6.0)) == (0.0, 6.0)
