"""Weight rounding (GPTQ): the rounded layers move their outputs less than nearest rounding, on
inputs the calibration never saw; the input moments it uses are exact and mergeable."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import qcc
from qcc.annotations import get_quant, get_rounding
from qcc.backends import get_backend
from qcc.context import PassContext
from qcc.data import open_calibration
from qcc.frontend import load
from qcc.irutils import const_array
from qcc.options import CompileOptions
from qcc.passes._input_moments import MAX_ROWS_PER_SAMPLE, InputMoments, Layer
from qcc.passes.weight_rounding import ROWS_PER_COLUMN, WeightRoundingPass
from qcc.pipeline import build_passes
from tests.conftest import build_model, run

# Depthwise 3x3 then pointwise: on smooth images a depthwise kernel's nine rounding errors add up.
CONVS = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[8,1,3,3] wd, float[16,8,1,1] wp, float[N,8,12,12] x) => (float[N,16,12,12] y) {
  d = Conv<group=8, pads=[1,1,1,1]>(x, wd)
  y = Conv(d, wp)
}
"""
MATMUL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[32,16] w, float[N,20,32] x) => (float[N,20,16] y) {
  y = MatMul(x, w)
}
"""


def _smooth_images(count, seed):
    """Images whose pixels are strongly correlated: per-channel levels plus gentle gradients."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(-1, 1, 12, dtype=np.float32)
    feeds = []
    for _ in range(count):
        level = rng.normal(1.0, 0.5, (1, 8, 1, 1))
        slope = rng.normal(0, 0.3, (1, 8, 1, 1))
        x = level + slope * ramp[None, None, :, None] + 0.05 * rng.normal(size=(1, 8, 12, 12))
        feeds.append({"x": x.astype(np.float32)})
    return feeds


def _correlated_rows(count, seed):
    """Token rows from a 4-dimensional subspace plus a little noise: correlated inputs."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(0).normal(size=(4, 32))
    return [{"x": (rng.normal(size=(1, 20, 4)) @ basis + 0.1 * rng.normal(size=(1, 20, 32))).astype(np.float32)}
            for _ in range(count)]


def _rounded(model, feeds, **options):
    """The model after the weight rounding pass, and its weights (the values the backend stores)."""
    loaded = load(model)
    # (without SmoothQuant, which would scale the weights before they are rounded)
    ctx = PassContext(CompileOptions(tolerance=None, smoothquant=False, **options), get_backend("ort").spec,
                      open_calibration(feeds, loaded.input_specs()))
    for pass_ in build_passes(ctx):
        pass_(loaded.model)
        if isinstance(pass_, WeightRoundingPass):
            break
    return loaded.model


def _with_weights(model, weights):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for init in out.graph.initializer:
        if init.name in weights:
            init.CopyFrom(onnx.numpy_helper.from_array(weights[init.name].astype(np.float32), init.name))
    return out


def _layer_error(model, rounded_model, names, feeds):
    """Mean squared output error of the model with the rounded weights against the float model."""
    values = {v.name: v for v in rounded_model.graph.initializers.values()}
    weights = {name: _grid_values(values[name]) for name in names}
    candidate = _with_weights(model, weights)
    return float(np.mean([(run(candidate, f)[0] - run(model, f)[0]) ** 2 for f in feeds]))


def _grid_values(value):
    """What the int8 weight stands for: its (possibly rounded) values, snapped to its grid."""
    return get_quant(value).grid_values(const_array(value))


@pytest.mark.parametrize(
    ("text", "feeds", "names"),
    [(CONVS, _smooth_images, ["wd", "wp"]), (MATMUL, _correlated_rows, ["w"])],
    ids=["depthwise+pointwise", "matmul"],
)
def test_gptq_moves_held_out_outputs_less_than_nearest_rounding(text, feeds, names):
    model = build_model(text, seed=4)
    calibration, held_out = feeds(16, seed=1), feeds(16, seed=2)
    gptq = _rounded(model, calibration)
    nearest = _rounded(model, calibration, weight_rounding="nearest")
    assert all(get_rounding(n).method == "gptq" for n in gptq.graph if n.op_type in ("Conv", "MatMul"))
    gptq_error = _layer_error(model, gptq, names, held_out)
    nearest_error = _layer_error(model, nearest, names, held_out)
    assert gptq_error < 0.7 * nearest_error, (gptq_error, nearest_error)


def test_rounded_weights_sit_on_their_grid_and_the_artifact_stores_them():
    model = build_model(CONVS, seed=4)
    calibration = _smooth_images(16, seed=1)
    rounded = _rounded(model, calibration).graph.initializers
    nearest = _rounded(model, calibration, weight_rounding="nearest").graph.initializers
    result = qcc.compile(model, calibration=calibration, tolerance=None, refit=False)  # GPTQ's levels, as they are
    artifact = onnx.load_from_string(result.artifact.data)
    stored = {i.name: onnx.numpy_helper.to_array(i) for i in artifact.graph.initializer}
    for name in ("wd", "wp"):
        levels = const_array(rounded[name]) / get_quant(rounded[name]).scale.reshape(-1, 1, 1, 1)
        np.testing.assert_allclose(levels, np.rint(levels), atol=1e-4)
        assert np.abs(np.rint(levels)).max() <= 127
        assert not np.array_equal(const_array(rounded[name]), _grid_values(nearest[name]))  # GPTQ moved some
        integers = next(a for k, a in stored.items() if k.startswith(name) and a.dtype == np.int8)
        np.testing.assert_array_equal(integers, np.rint(levels))
    assert result.report["weight_rounding"]["gptq_layers"] == 2
    assert result.report["weight_rounding"]["output_error_vs_nearest"] < 1


@pytest.mark.parametrize(
    ("shape", "weight", "attributes", "layer"),
    [
        ((2, 6, 9, 11), (4, 3, 3, 3), {"group": 2, "pads": [1, 0, 2, 1], "strides": [2, 1], "dilations": [2, 1]},
         Layer("x", "Conv", groups=2, kernel=(3, 3), pads=(1, 0, 2, 1), strides=(2, 1), dilations=(2, 1),
               columns=27)),
        ((1, 4, 10), (6, 4, 3), {"pads": [1, 1]},
         Layer("x", "Conv", kernel=(1, 3), pads=(0, 1, 0, 1), columns=12)),
        ((2, 4, 5, 6), (6, 2, 1, 1), {"group": 2}, Layer("x", "Conv", groups=2, columns=2)),
    ],
    ids=["2-d grouped strided dilated", "1-d", "pointwise grouped"],
)
def test_conv_rows_times_the_weight_are_the_conv_output(shape, weight, attributes, layer):
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=shape).astype(np.float32), rng.normal(size=weight).astype(np.float32)
    node = onnx.helper.make_node("Conv", ["x", "w"], ["y"], **attributes)
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("x", 1, shape)],
                                   [onnx.helper.make_tensor_value_info("y", 1, None)],
                                   [onnx.numpy_helper.from_array(w, "w")])
    y = run(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), {"x": x})[0]
    rows = layer.rows(x, seed=0)  # (groups, columns, positions): every position, since there are few
    flat = w.reshape(layer.groups, w.shape[0] // layer.groups, -1)
    expected = y.reshape(y.shape[0], layer.groups, -1, int(np.prod(y.shape[2:])))  # N, g, O/g, positions
    expected = expected.transpose(1, 2, 0, 3).reshape(layer.groups, w.shape[0] // layer.groups, -1)
    np.testing.assert_allclose(flat @ rows, expected, rtol=1e-4, atol=1e-4)


def test_input_moments_merge_equals_whole_and_hold_a_fixed_size():
    layer = Layer("x", "MatMul", columns=8)
    rng = np.random.default_rng(0)
    samples = [rng.normal(size=(3, 8)).astype(np.float32) for _ in range(10)]
    whole, first, second = InputMoments(layer), InputMoments(layer), InputMoments(layer)
    for i, sample in enumerate(samples):
        whole.update(sample)
        (first if i < 4 else second).update(sample)
    first.merge(second)
    np.testing.assert_allclose(first.sums, whole.sums, rtol=1e-6)
    stacked = np.concatenate(samples).astype(np.float64)
    np.testing.assert_allclose(whole.sums[0], stacked.T @ stacked, rtol=1e-5)
    assert first.rows == whole.rows == 30
    few = InputMoments(Layer("x", "Conv", kernel=(3, 3), pads=(1, 1, 1, 1), columns=27))
    many = InputMoments(few.layer)
    image = rng.normal(size=(1, 3, 80, 80)).astype(np.float32)  # 6400 positions: sampled down
    few.update(image)
    for _ in range(20):
        many.update(image)
    assert few.held_bytes() == many.held_bytes()
    assert MAX_ROWS_PER_SAMPLE / 2 < few.rows <= MAX_ROWS_PER_SAMPLE


def test_too_few_calibration_rows_round_to_nearest_and_say_why():
    model = build_model(MATMUL, seed=4)
    calibration = _correlated_rows(2, seed=1)  # 40 rows for 32 inputs
    assert 40 < ROWS_PER_COLUMN * 32
    node = next(n for n in _rounded(model, calibration).graph if n.op_type == "MatMul")
    rounding = get_rounding(node)
    assert rounding.method == "nearest" and "too few" in rounding.reason
    report = qcc.compile(model, calibration=calibration, tolerance=None).report["weight_rounding"]
    assert report["gptq_layers"] == 0 and report["nearest_layers"] == 1
    assert qcc.compile(model, calibration=calibration, tolerance=None,
                       weight_rounding="nearest").report["weight_rounding"] is None


CHAIN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[8,1,3,3] wd, float[16,8,1,1] wp, float[16,16,1,1] wq, float[16,16,1,1] wr, float[N,8,12,12] x)
    => (float[N,16,12,12] y) {
  d = Conv<group=8, pads=[1,1,1,1]>(x, wd)
  p = Conv(d, wp)
  q = Conv(p, wq)
  y = Conv(q, wr)
}
"""


def test_auto_rounding_is_gptq_and_the_refit_chooses_per_layer_on_the_quantized_inputs():
    model = build_model(CHAIN, seed=4)
    calibration = _smooth_images(16, seed=1)
    result = qcc.compile(model, calibration=calibration, tolerance=1e-5)  # some nodes go float for it
    assert result.report["mixed_precision"]["kept_float"]
    assert result.report["weight_rounding"]["gptq_layers"] >= 1
    assert result.report["options"]["weight_rounding"] == "auto"
    gptq = qcc.compile(model, calibration=calibration, tolerance=1e-5, weight_rounding="gptq")
    assert gptq.artifact.data == result.artifact.data  # auto is gptq: nothing else is compiled
    # Per layer the refit weighs GPTQ's levels ("kept"), nearest rounding and its fits on held-out samples.
    choices = {layer["choice"] for layer in result.report["refit"]["layers"].values()}
    assert choices and choices <= {"kept", "nearest", "d=0.01", "d=0.1", "d=1"}


def test_the_refit_runs_once_after_the_one_search(monkeypatch):
    from qcc.passes.mixed_precision import MixedPrecisionPass
    from qcc.passes.refit_weights import RefitWeightsPass

    model = build_model(CHAIN, seed=4)
    calibration = _smooth_images(16, seed=1)
    refits = []
    call = RefitWeightsPass.call

    def counted(self, ir_model):
        if self.ctx.options.refit:
            refits.append(sorted(self.ctx.keep_float))
        return call(self, ir_model)

    monkeypatch.setattr(RefitWeightsPass, "call", counted)
    searches = []
    search = MixedPrecisionPass._search
    monkeypatch.setattr(MixedPrecisionPass, "_search", lambda self, *a: searches.append(1) or search(self, *a))
    result = qcc.compile(model, calibration=calibration, tolerance=1e-5)
    kept = sorted(n["node"] for n in result.report["mixed_precision"]["kept_float"])
    assert len(searches) == 1
    assert refits == [kept] and kept  # once, on the plan with the search's float nodes
    assert result.report["refit"]["refit_layers"] + result.report["refit"]["kept_layers"] >= 1
    unfitted = qcc.compile(model, calibration=calibration, tolerance=1e-5, refit=False)
    # the refit does not change which nodes are float
    assert kept == sorted(n["node"] for n in unfitted.report["mixed_precision"]["kept_float"])


def test_static_and_dynamic_are_compared_without_the_refit():
    model = build_model("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[32,64] w1, float[64,32] w2, float[32,32] w3, float[N,20,32] x) => (float[N,20,32] y) {
  a = MatMul(x, w1)
  t = Tanh(a)
  b = MatMul(t, w2)
  y = MatMul(b, w3)
}
""")
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(4, 32))
    feeds = [{"x": ((rng.normal(size=(1, 20, 4)) @ basis + 0.1 * rng.normal(size=(1, 20, 32))) * 10.0 ** (i % 3 - 1))
              .astype(np.float32)} for i in range(40)]  # ranges that differ by 100x: static ranges lose
    report = qcc.compile(model, target="ort", calibration=feeds, tolerance=3e-4).report
    assert report["mode_selection"]["chosen"] == "dynamic"
    assert report["mode_selection"]["compared"] == "without the refit"
