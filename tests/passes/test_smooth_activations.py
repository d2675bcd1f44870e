"""SmoothQuant keeps the float function, folds 1/s where the producer allows, and brings the int8
artifact closer to fp32 where a few input channels carry outliers."""

from __future__ import annotations

import numpy as np
import pytest

import qcc
from qcc.backends import get_backend
from qcc.context import PassContext
from qcc.data import CalibrationData
from qcc.frontend import load
from qcc.options import CompileOptions
from qcc.passes.smooth_activations import HELD_ROWS, ChannelStats, SmoothActivationsPass
from tests.conftest import build_model, fidelity, op_types, random_feeds, run, to_proto

# A post-LN block: the LayerNorm output feeds two projections and the residual Add, so 1/s cannot
# go into the LayerNorm's constants.
POST_LN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,16,32] x, float[32] gamma, float[32] beta, float[32,48] wq, float[32,48] wk, float[48,32] wo)
  => (float[1,16,32] y, float[1,16,32] o) {
  h = LayerNormalization<axis=-1>(x, gamma, beta)
  q = MatMul(h, wq)
  k = MatMul(h, wk)
  s = Add(q, k)
  o = MatMul(s, wo)
  y = Add(o, h)
}
"""
# (o is an output too: the residual would hide the projections' error.)
# Pre-LN: only the projections read the LayerNorm output; the residual reads x.
PRE_LN = POST_LN.replace("y = Add(o, h)", "y = Add(o, x)")
# The same LayerNorm decomposed (PP-OCRv5's): norm * gamma + beta.
DECOMPOSED = PRE_LN.replace(
    "h = LayerNormalization<axis=-1>(x, gamma, beta)",
    """m = ReduceMean<axes=[-1]>(x)
  d = Sub(x, m)
  v = Mul(d, d)
  vm = ReduceMean<axes=[-1]>(v)
  e = Add(vm, eps)
  sd = Sqrt(e)
  n = Div(d, sd)
  g = Mul(n, gamma)
  h = Add(g, beta)""",
).replace("float[32] beta,", "float[32] beta, float eps,")
# A Mul by a constant (GELU's final * 0.5) feeding the projection.
SCALED = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,16,32] x, float[32] c, float[32,48] w1, float[48,32] w2) => (float[1,16,32] y) {
  t = Tanh(x)
  h = Mul(t, c)
  a = MatMul(h, w1)
  y = MatMul(a, w2)
}
"""


def _outliers(channels: int = 32) -> np.ndarray:
    gain = np.ones(channels, np.float32)
    gain[[3, 17, 29]] = [40.0, 25.0, 30.0]  # a few channels 25-40x the rest (BERT's LayerNorm outputs)
    return gain


def _model(text: str, **constants) -> object:
    defaults = {"gamma": _outliers(), "c": _outliers(), "eps": np.array(1e-5, np.float32)}
    return build_model(text, seed=2, constants={k: v for k, v in {**defaults, **constants}.items() if k in text})


def _smoothed(model, feeds, target: str = "ort", **options):
    loaded = load(model)
    data = CalibrationData(feeds, loaded.input_specs())
    ctx = PassContext(CompileOptions(target=target, **options), get_backend(target).spec, data, statistics={})
    result = SmoothActivationsPass(ctx)(loaded.model)
    return loaded.model, result.modified


def _section(result) -> dict:
    return result.report["smoothing"]["tensors"]["h"]


@pytest.mark.parametrize(
    ("text", "folded", "inserted"),
    [
        (POST_LN, "Mul (inserted)", True),
        (PRE_LN, "LayerNormalization", False),
        (DECOMPOSED, "Add+Mul", False),
        (SCALED, "Mul", False),
    ],
    ids=["post-ln", "pre-ln", "decomposed-ln", "mul"],
)
def test_the_float_function_is_kept_and_1_over_s_goes_where_it_can(text, folded, inserted):
    model = _model(text)
    feeds = random_feeds(model, 8)
    smoothed, modified = _smoothed(model, feeds)
    assert modified
    extra = op_types(smoothed).count("Mul") - op_types(model).count("Mul")
    assert extra == (1 if inserted else 0)
    for feed in random_feeds(model, 3, seed=7):
        np.testing.assert_allclose(run(to_proto(smoothed), feed)[0], run(model, feed)[0], rtol=1e-4, atol=1e-4)
    result = qcc.compile(model, calibration=feeds, tolerance=None, verify=False)
    assert _section(result)["folded_into"] == folded
    assert _section(result)["error_vs_unsmoothed"] < 0.75


@pytest.mark.parametrize("target", ["ort", "trt"])
@pytest.mark.parametrize("text", [POST_LN, DECOMPOSED, SCALED], ids=["post-ln", "decomposed-ln", "mul"])
def test_the_artifact_is_closer_to_fp32_on_held_out_inputs(text, target):
    model = _model(text)
    feeds, held_out = random_feeds(model, 16), random_feeds(model, 6, seed=5)
    plain = qcc.compile(model, target=target, calibration=feeds, tolerance=None, smoothquant=False)
    smooth = qcc.compile(model, target=target, calibration=feeds, tolerance=None)
    assert smooth.report["verify"]["ok"]
    before, after = fidelity(model, plain.artifact.data, held_out), fidelity(model, smooth.artifact.data, held_out)
    assert 1 - after < 0.7 * (1 - before), (before, after)


def test_tflite_smooths_only_where_the_producer_absorbs_it():
    """A Mul inserted ahead of a TFLite MatMul would run int8 on the unsmoothed tensor."""
    for text, smoothed in ((POST_LN, False), (PRE_LN, True)):
        model = _model(text)
        feeds = random_feeds(model, 8)
        result = qcc.compile(model, target="tflite", calibration=feeds, tolerance=None)
        entry = _section(result)
        assert bool(entry["alpha"]) == smoothed
        if not smoothed:
            assert "would run int8" in entry["reason"]
        assert op_types(result.model if result.model is not None else model)  # the artifact was built
        assert result.report["verify"]["ok"]


def test_inputs_without_outliers_are_left_alone():
    model = _model(POST_LN, gamma=np.ones(32, np.float32))
    feeds = random_feeds(model, 8)
    smoothed, modified = _smoothed(model, feeds)
    assert not modified
    assert op_types(smoothed) == op_types(load(model).model)
    result = qcc.compile(model, calibration=feeds, tolerance=None, verify=False)
    assert _section(result)["alpha"] == 0.0 and "closer" in _section(result)["reason"]


def test_off_and_one_shot_iterators_leave_the_model_alone():
    model = _model(PRE_LN)
    feeds = random_feeds(model, 8)
    off = qcc.compile(model, calibration=feeds, tolerance=None, verify=False, smoothquant=False)
    assert off.report["smoothing"] is None
    once = qcc.compile(model, calibration=iter(feeds), tolerance=None, verify=False)
    assert _section(once)["alpha"] == 0.0 and "one-shot iterator" in _section(once)["reason"]


def test_channel_statistics_merge_and_hold_a_fixed_size():
    rng = np.random.default_rng(0)
    samples = [rng.normal(0, 1, (1, 100, 8)).astype(np.float32) * (i + 1) for i in range(12)]
    whole, first, second = ChannelStats(8), ChannelStats(8), ChannelStats(8)
    for i, sample in enumerate(samples):
        whole.update(sample)
        (first if i < 6 else second).update(sample)
    first.merge(second)
    everything = np.concatenate([s.reshape(-1, 8) for s in samples])
    for stats in (whole, first):
        np.testing.assert_array_equal(stats.low, everything.min(axis=0))
        np.testing.assert_array_equal(stats.high, everything.max(axis=0))
        assert len(stats.rows) == HELD_ROWS and stats.seen == len(everything)
        # every held row is one of the observed rows, from the sample it says
        for row, sample in zip(stats.rows[:20], stats.sample_of[:20], strict=True):
            assert np.any(np.all(samples[sample].reshape(-1, 8) == row, axis=1))
    held = whole.held_bytes()
    for sample in samples:
        whole.update(sample)
    assert whole.held_bytes() == held


def test_too_few_rows_are_not_measured_on():
    """A classifier's Gemm sees one row per sample: 8 rows cannot tell which strength is closer."""
    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1,32] x, float[32] c, float[32,8] w) => (float[1,8] y) {
          h = Mul(x, c)
          y = MatMul(h, w)
        }
        """,
        seed=2,
        constants={"c": _outliers()},
    )
    result = qcc.compile(model, calibration=random_feeds(model, 8), tolerance=None, verify=False)
    assert _section(result)["alpha"] == 0.0 and "too few" in _section(result)["reason"]


def test_a_400x_channel_needs_no_float_node_once_smoothed():
    """Mixed precision's sensitive model: h2's channel 0 is 400x the rest. On trt the inserted Mul
    divides it into w3, and the bound holds with every node int8."""
    from tests.passes.test_mixed_precision import BOUND, _calibration, _sensitive_model

    model = _sensitive_model()
    plain = qcc.compile(model, target="trt", calibration=_calibration(model), tolerance=BOUND, smoothquant=False)
    smooth = qcc.compile(model, target="trt", calibration=_calibration(model), tolerance=BOUND)
    assert plain.report["mixed_precision"]["kept_float"]
    assert smooth.report["mixed_precision"]["met"] and not smooth.report["mixed_precision"]["kept_float"]
    assert smooth.report["smoothing"]["tensors"]["h2"]["folded_into"] == "Mul (inserted)"
    assert smooth.report["verify"]["ok"]


def test_a_layer_that_also_reads_the_tensor_as_its_bias_gets_an_inserted_mul():
    """Gemm(h, W, h): folding 1/s into the LayerNorm would scale the bias term C too."""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[16,32] x, float[32] gamma, float[32] beta, float[32,32] w) => (float[16,32] y) {
      h = LayerNormalization<axis=-1>(x, gamma, beta)
      y = Gemm(h, w, h)
    }
    """
    model = build_model(text, seed=2, constants={"gamma": _outliers()})
    feeds = [{"x": np.random.default_rng(i).normal(0, 1, (16, 32)).astype(np.float32)} for i in range(8)]
    for target, modified in (("ort", True), ("tflite", False)):  # (tflite can insert no Mul)
        smoothed, changed = _smoothed(model, feeds, target=target)
        assert changed == modified
        for feed in feeds[:3]:
            np.testing.assert_allclose(run(to_proto(smoothed), feed)[0], run(model, feed)[0], rtol=1e-4, atol=1e-4)
    result = qcc.compile(model, target="ort", calibration=feeds, tolerance=None)
    assert result.report["smoothing"]["tensors"]["h"]["folded_into"] == "Mul (inserted)"
    assert result.report["verify"]["ok"]


def test_no_fold_into_a_mul_that_runs_int8():
    """Between two int8 MatMuls an ort Mul runs int8 (and a tflite one always): a per-channel
    constant there is rounded per tensor, and the Mul's input still carries the outliers."""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,16,32] x, float[32,32] w0, float[] half, float[32,16] w1) => (float[1,16,16] y) {
      a = MatMul(x, w0)
      h = Mul(a, half)
      y = MatMul(h, w1)
    }
    """
    w0 = np.random.default_rng(3).normal(0, 0.2, (32, 32)) * _outliers()[None, :]
    model = build_model(text, seed=2, constants={"w0": w0, "half": np.array(0.5, np.float32)})
    feeds = random_feeds(model, 8)
    for target in ("ort", "tflite"):
        result = qcc.compile(model, target=target, calibration=feeds, tolerance=None, verify=False)
        entry = _section(result)
        assert entry["alpha"] == 0.0 and "would run int8" in entry["reason"], (target, entry)
    # with --dynamic the Mul runs float: there the constant takes 1/s
    dynamic = qcc.compile(model, target="ort", calibration=feeds, dynamic=True, verify=False)
    assert _section(dynamic)["folded_into"] == "Mul"


def test_analyze_compares_against_the_smoothed_float_model():
    from qcc.analyze import analyze_model

    for text in (POST_LN, PRE_LN):
        model = _model(text)
        feeds = random_feeds(model, 8)
        options = CompileOptions(target="ort", tolerance=None)
        analysis = analyze_model(model, feeds, options)
        sqnr = {t["name"]: t["sqnr_db"] for t in analysis["tensors"]}
        assert "h_smoothed" in sqnr if text is POST_LN else "h" in sqnr
        assert min(sqnr.values()) > 15, sqnr  # int8 tensors: tens of dB; a mismatched reference gives ~0
