from __future__ import annotations

import numpy as np
import pytest

from qcc.annotations import Role, get_quant, get_range, quantized_values
from qcc.backends import get_backend
from qcc.context import PassContext
from qcc.data import open_calibration
from qcc.frontend import input_specs
from qcc.options import CompileOptions
from qcc.passes._input_moments import layers
from qcc.passes.calibrate import CalibratePass, CalibrationStats
from qcc.passes.canonicalize import CanonicalizePass
from qcc.passes.plan import PlanPass
from tests.conftest import float_passes, random_feeds, to_proto
from tests.e2e.synthetic import synthetic_model


def test_merge_equals_whole():
    rng = np.random.default_rng(0)
    batches = [[rng.normal(size=(3, 4)), rng.normal(size=5) * 3] for _ in range(6)]
    whole, first, second = CalibrationStats(["a", "b"]), CalibrationStats(["a", "b"]), CalibrationStats(["a", "b"])
    for i, batch in enumerate(batches):
        whole.update(batch)
        (first if i < 3 else second).update(batch)
    first.merge(second)
    np.testing.assert_array_equal(first.min, whole.min)
    np.testing.assert_array_equal(first.max, whole.max)
    for merged, single in zip(first.histograms, whole.histograms, strict=True):
        assert merged.limit == single.limit
        np.testing.assert_array_equal(merged.pos, single.pos)
        np.testing.assert_array_equal(merged.neg, single.neg)


def test_ranges_equal_brute_force_over_a_stream():
    model = synthetic_model("residual_cnn")
    planned = float_passes(model, CanonicalizePass, PlanPass)
    feeds = random_feeds(model, 40, seed=3)
    stream = open_calibration(iter(feeds), input_specs(planned))  # a one-shot generator
    ctx = PassContext(CompileOptions(method="minmax"), get_backend("ort").spec, stream)
    CalibratePass(ctx)(planned)
    calibrated = [v for v in quantized_values(planned.graph) if get_range(v) is not None]
    assert calibrated and all(get_quant(v).role == Role.ACTIVATION for v in calibrated)
    # Brute force: every intermediate tensor of every sample, kept in memory, then min/max.
    import onnx

    from qcc.runtime import session

    proto = to_proto(planned)
    names = [v.name for v in calibrated]
    for name in names:
        if name not in {o.name for o in proto.graph.output}:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    sess = session(proto)
    outputs = [sess.run(names, feed) for feed in feeds]
    for i, value in enumerate(calibrated):
        everything = np.concatenate([o[i].ravel() for o in outputs])
        # Same values up to ONNX Runtime's fusion-dependent float rounding (basic vs all levels).
        assert get_range(value).min == pytest.approx(float(everything.min()), rel=1e-5)
        assert get_range(value).max == pytest.approx(float(everything.max()), rel=1e-5)


def test_what_is_held_does_not_grow_with_samples():
    model = synthetic_model("mlp")
    held = []
    for count in (16, 256):
        planned = float_passes(model, CanonicalizePass, PlanPass)
        stream = open_calibration(iter(random_feeds(model, count)), input_specs(planned))
        stats = CalibratePass(PassContext(CompileOptions(), get_backend("ort").spec, stream))._observe(
            planned, [v.name for v in quantized_values(planned.graph) if v.const_value is None], layers(planned.graph)
        )
        assert stats.moments  # the weight rounding's input moments are held too
        held.append((stats.held_bytes(), len(stream._head)))
    assert held[0] == held[1]


def test_meanmax_never_clips_a_graph_output():
    """meanmax averages each sample's range, so an outlier sample is clipped inside the model; a
    graph output keeps its whole observed range (a clipped result is wrong outright)."""
    model = synthetic_model("residual_cnn")
    planned = float_passes(model, CanonicalizePass, PlanPass)
    feeds = random_feeds(model, 6, seed=5)
    feeds[2] = {name: array * 8 for name, array in feeds[2].items()}  # one outlier sample
    stream = open_calibration(iter(feeds), input_specs(planned))
    CalibratePass(PassContext(CompileOptions(method="meanmax"), get_backend("ort").spec, stream))(planned)
    from qcc.runtime import session

    proto = to_proto(planned)
    observed = {}
    for value in quantized_values(planned.graph):
        if get_range(value) is None or not value.is_graph_output():
            continue
        index = [o.name for o in proto.graph.output].index(value.name)
        outputs = [session(proto).run(None, feed)[index] for feed in feeds]
        observed[value.name] = max(float(o.max()) for o in outputs)
        assert get_range(value).max == pytest.approx(observed[value.name], rel=1e-5)
    assert observed, "the model's outputs are quantized on ort"


def test_a_silu_input_is_clipped_where_silu_is_flat(monkeypatch):
    """A Conv output feeding SiLU with one channel far below -8 (SiLU there is 0): calibrated to
    [-8, max], the other channels get a step five times finer. The .tflite, run in LiteRT, is
    checked against ONNX Runtime's float output, with and without the bound."""
    import qcc
    import qcc.passes.calibrate as calibrate
    from tests.conftest import build_model, cosine, run
    from tests.e2e.conformance import run_tflite

    bias = np.zeros(4, np.float32)
    bias[3] = -40.0
    model = build_model(
        '<ir_version: 10, opset_import: ["" : 18]>\n'
        "g (float[1,4,8,8] x, float[4,4,3,3] w1, float[4] b1, float[4,4,1,1] w2) => (float[1,4,8,8] y) {"
        " c = Conv<pads=[1,1,1,1]>(x, w1, b1)\n s = Sigmoid(c)\n a = Mul(c, s)\n y = Conv(a, w2) }",
        constants={"b1": bias},
    )
    feeds = random_feeds(model, 8, seed=5)

    def error() -> tuple[float, float | None]:
        result = qcc.compile(model, target="tflite", calibration=feeds, tolerance=None)
        worst = min(
            cosine(run(model, feed)[0], run_tflite(result.artifact.data, feed, "xnnpack")[0]) for feed in feeds
        )
        return 1.0 - worst, result.report["tensors"].get("c", {}).get("scale")

    bounded, scale = error()
    monkeypatch.setattr(calibrate, "consumer_bounds", lambda value: (-np.inf, np.inf))
    observed, scale_observed = error()
    assert bounded < 0.5 * observed, (bounded, observed, scale, scale_observed)
