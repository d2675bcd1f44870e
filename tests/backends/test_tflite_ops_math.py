"""Element-wise math and activation lowerings (``backends/_tflite_ops_math.py`` and the concept
modules it collects: ``_tflite_ops_trig``, ``_tflite_ops_variadic``, ``_tflite_ops_passthrough``)
run in LiteRT.

Float: each single-op model is compiled for ``tflite`` (the op is a float node, read and written
in float32), run under both resolvers and compared with ONNX Runtime on the float model, inputs
drawn from the op's domain. Int8: ops between two quantized Convs become float islands, checked
by ``verify()`` against qcc's ORT QDQ simulation; int8 Max/Min (no spec lists them) is checked
with a spec that does.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest

import qcc
from qcc.backends import _tflite_writer
from qcc.backends._tflite_litert import interpreter, run
from qcc.backends.tflite import TFLITE_SPEC, TfliteBackend
from qcc.errors import QccError
from tests.backends._tflite_helpers import body_model, builtin_ops
from tests.conftest import build_model, random_feeds
from tests.conftest import run as run_ort

_SHAPE = [2, 3, 4, 5]
_X = "float[2,3,4,5] x"


def _uniform(low: float, high: float):
    return lambda rng, shape: rng.uniform(low, high, shape)


_NORMAL = lambda rng, shape: rng.normal(0, 2, shape)  # noqa: E731 - a table entry
# Inputs that land on Round's ties (half to even in ONNX), and on integers for Ceil/Floor/Sign.
_STEPS = lambda rng, shape: rng.integers(-12, 13, shape) / 4  # noqa: E731 - a table entry

# name -> (body over x, input sampler, builtins the lowering must use)
UNARY = {
    "log": ("y = Log(x)", _uniform(0.01, 20), {"LOG"}),
    "ceil": ("y = Ceil(x)", _STEPS, {"CEIL"}),
    "floor": ("y = Floor(x)", _STEPS, {"FLOOR"}),
    "round": ("y = Round(x)", _STEPS, {"ROUND"}),
    "sign": ("y = Sign(x)", _STEPS, {"SIGN"}),
    "sin": ("y = Sin(x)", _NORMAL, {"SIN"}),
    "cos": ("y = Cos(x)", _NORMAL, {"COS"}),
    "tan": ("y = Tan(x)", _uniform(-1.4, 1.4), {"SIN", "COS", "DIV"}),
    "asin": ("y = Asin(x)", _uniform(-1, 1), {"ATAN2"}),
    "acos": ("y = Acos(x)", _uniform(-1, 1), {"ATAN2"}),
    "atan": ("y = Atan(x)", _NORMAL, {"ATAN2", "FILL"}),
    "sinh": ("y = Sinh(x)", _NORMAL, {"EXP"}),
    "cosh": ("y = Cosh(x)", _NORMAL, {"EXP"}),
    "asinh": ("y = Asinh(x)", _uniform(-50, 50), {"LOG", "SQRT"}),
    "acosh": ("y = Acosh(x)", _uniform(1, 50), {"LOG", "SQRT"}),
    "atanh": ("y = Atanh(x)", _uniform(-0.99, 0.99), {"LOG"}),
    "elu": ("y = Elu(x)", _NORMAL, {"ELU"}),
    "elu_alpha": ("y = Elu<alpha=0.5>(x)", _NORMAL, {"EXP", "RELU", "MINIMUM"}),
    "selu": ("y = Selu(x)", _NORMAL, {"EXP"}),
    "celu": ("y = Celu<alpha=2.0>(x)", _NORMAL, {"EXP"}),
    "softplus": ("y = Softplus(x)", lambda rng, shape: rng.normal(0, 30, shape), {"EXP", "LOG"}),
    "softsign": ("y = Softsign(x)", _NORMAL, {"ABS", "DIV"}),
    "mish": ("y = Mish(x)", lambda rng, shape: rng.normal(0, 10, shape), {"EXP", "DIV"}),
    "thresholded_relu": ("y = ThresholdedRelu<alpha=0.5>(x)", _STEPS, {"GREATER", "SELECT_V2"}),
    "shrink_soft": ("y = Shrink<lambd=1.5, bias=1.5>(x)", _STEPS, {"LESS", "GREATER", "SELECT_V2"}),
    "shrink_hard": ("y = Shrink<lambd=0.5>(x)", _STEPS, {"SELECT_V2"}),
}


def _model(body: str, inputs: str = _X, opset: int = 22, out: str = "float[2,3,4,5] y", constants=None):
    return body_model(inputs, out, body, opset, constants)


def _check_float(model, feed, calibration=None, rtol=2e-5, atol=2e-6) -> bytes:
    """Compiles for tflite, runs under both resolvers, compares with ONNX Runtime; returns the artifact."""
    result = qcc.compile(model, target="tflite", calibration=[calibration or feed], verify=False)
    expected = run_ort(model, feed)
    for resolver in ("xnnpack", "builtin"):
        got = run(interpreter(result.artifact.data, resolver), feed, [np.shape(e) for e in expected])
        for e, g in zip(expected, got, strict=True):
            np.testing.assert_allclose(g, e.astype(np.float32), rtol=rtol, atol=atol, err_msg=resolver)
    return result.artifact.data


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_op_matches_onnxruntime_on_both_resolvers(name):
    body, sample, builtins = UNARY[name]
    model = _model(body)
    feed = {"x": sample(np.random.default_rng(0), _SHAPE).astype(np.float32)}
    data = _check_float(model, feed)
    assert builtins <= builtin_ops(data)


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_op_keeps_nan_and_inf_like_onnxruntime(name):
    body = UNARY[name][0]
    model = _model(body, "float[6] x", out="float[6] y")
    result = qcc.compile(model, target="tflite", calibration=[{"x": np.linspace(0.1, 0.9, 6, dtype=np.float32)}])
    feed = {"x": np.array([np.nan, -np.inf, np.inf, 0.5, -0.5, 0.0], np.float32)}
    expected = run_ort(model, feed)[0]
    for resolver in ("xnnpack", "builtin"):
        got = run(interpreter(result.artifact.data, resolver), feed)[0]
        # LiteRT's builtin float ADD/MUL/DIV saturate at +-FLT_MAX: infinite inputs are checked on XNNPACK.
        kept = ~np.isinf(feed["x"]) if resolver == "builtin" else slice(None)
        np.testing.assert_allclose(got[kept], expected[kept], rtol=2e-6, atol=1e-7, err_msg=resolver)


def test_round_is_half_to_even():
    model = _model("y = Round(x)", "float[8] x", out="float[8] y")
    feed = {"x": np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, 3.5], np.float32)}
    data = _check_float(model, feed, atol=0)
    got = run(interpreter(data, "builtin"), feed)[0]
    np.testing.assert_array_equal(got, [0, 2, 2, -0, -2, -2, 0, 4])


@pytest.mark.parametrize(
    "op, reference, x",
    [
        ("Cosh", np.cosh, [-89.4, -89.0, 88.9, 0.0]),  # e^x overflows float32 from 88.72
        ("Sinh", np.sinh, [-89.4, -89.0, 88.9, 1e-3]),
        ("Asinh", np.arcsinh, [-1e30, 3e19, 1e38, 0.0]),  # x^2 overflows float32 from 1.8e19
        ("Acosh", np.arccosh, [1e30, 3e19, 3.4e38, 1.0]),
        ("Asinh", np.arcsinh, [np.nan, np.inf, -np.inf, -0.0]),
        ("Acosh", np.arccosh, [np.nan, np.inf, 0.5, 0.0]),
    ],
)
def test_hyperbolic_functions_are_finite_wherever_the_result_is(op, reference, x):
    model = _model(f"y = {op}(x)", "float[4] x", out="float[4] y")
    feed = {"x": np.array(x, np.float32)}
    result = qcc.compile(model, target="tflite", calibration=[{"x": np.linspace(-2, 2, 4, dtype=np.float32) + 3}])
    with np.errstate(invalid="ignore"):  # acosh below 1 is NaN, as it should be
        expected = reference(feed["x"].astype(np.float64))
    for resolver in ("xnnpack", "builtin"):
        got = run(interpreter(result.artifact.data, resolver), feed)[0]
        # LiteRT's builtin float ADD/MUL/DIV saturate at +-FLT_MAX, so an infinite input comes out
        # finite there; NaN stays NaN on both.
        kept = ~np.isinf(feed["x"]) if resolver == "builtin" else slice(None)
        # XNNPACK's EXP is within 3.3e-6 of e^x for large x; its builtin twin within 1e-7.
        rtol = 5e-6 if resolver == "xnnpack" else 5e-7
        np.testing.assert_allclose(got[kept], expected[kept], rtol=rtol, atol=1e-7, err_msg=resolver)


def test_rank5_comparisons_run_on_a_flat_view():
    model = _model("y = ThresholdedRelu<alpha=0.2>(x)", "float[1,2,3,4,5] x", out="float[1,2,3,4,5] y")
    feed = {"x": np.random.default_rng(1).normal(0, 1, (1, 2, 3, 4, 5)).astype(np.float32)}
    _check_float(model, feed)


@pytest.mark.parametrize(
    "body, rank",
    [
        ("y = Atan(x)", 3),  # FILL(SHAPE(x), 1)
        ("y = ThresholdedRelu<alpha=0.2>(x)", 5),  # RESHAPE to [-1] and back
        ("y = Max(x, x)", 3),
        ("y = Sum(x)", 3),
    ],
)
def test_dynamic_batch_runs_at_another_size(body, rank):
    dims = ",".join(["N"] + [str(d) for d in (2, 3, 4, 5)[: rank - 1]])
    model = _model(body, f"float[{dims}] x", out=f"float[{dims}] y")
    rng = np.random.default_rng(5)
    sample = {"x": rng.normal(0, 1, (1, 2, 3, 4, 5)[:rank]).astype(np.float32)}
    result = qcc.compile(model, target="tflite", calibration=[sample], verify=False)
    feed = {"x": rng.normal(0, 1, (3, 2, 3, 4, 5)[:rank]).astype(np.float32)}
    expected = run_ort(model, feed)[0]
    for resolver in ("xnnpack", "builtin"):
        got = interpreter(result.artifact.data, resolver).get_signature_runner()(**feed)["y"]
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-6, err_msg=resolver)


def test_swish_opset24():
    model = _model("y = Swish<alpha=0.7>(x)", opset=24)
    feed = {"x": np.random.default_rng(2).normal(0, 2, _SHAPE).astype(np.float32)}
    try:
        expected = run_ort(model, feed)
    except Exception:  # noqa: BLE001 - an ONNX Runtime without opset 24
        pytest.skip("this ONNX Runtime does not run Swish (opset 24)")
    result = qcc.compile(model, target="tflite", calibration=[feed], verify=False)
    for resolver in ("xnnpack", "builtin"):
        got = run(interpreter(result.artifact.data, resolver), feed)
        np.testing.assert_allclose(got[0], expected[0], rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("fmod", [0, 1])
@pytest.mark.parametrize("variant", ["inputs", "constant"])
def test_mod_float_matches_onnxruntime(fmod, variant):
    rng = np.random.default_rng(fmod)
    divisor = (rng.uniform(0.5, 3, (4, 5)) * rng.choice([-1, 1], (4, 5))).astype(np.float32)
    constants = {"q": divisor} if variant == "constant" else {}
    # Floor modulus of floats is ONNX's from opset 28.
    model = _model(f"y = Mod<fmod={fmod}>(x, q)", f"{_X}, float[4,5] q", opset=28, constants=constants)
    feed = {"x": rng.normal(0, 5, _SHAPE).astype(np.float32)}
    if variant == "inputs":
        feed["q"] = divisor
    # fmod=1 on floats is exact; the floor modulus adds b to a remainder of the other sign (one rounding).
    _check_float(model, feed, rtol=1e-5, atol=1e-5 if fmod == 0 else 0)


def test_mod_integer_fmod1_is_the_c_remainder():
    model = _model(
        "a = Cast<to=6>(x)\n r = Mod<fmod=1>(a, b)\n y = Cast<to=1>(r)",
        "float[12] x, int32[12] b",
        out="float[12] y",
        constants={"b": np.array([3, -3, 5, -5, 7, 2, -2, 4, 3, -3, 1, -1], np.int32)},
    )
    feed = {"x": np.array([7, 7, -7, -7, 0, 9, -9, -8, -6, 6, 5, -5], np.float32)}
    _check_float(model, feed, atol=0)


@pytest.mark.parametrize(
    "attrs, expected",
    [
        ("", [False, False, True, False, True, True]),
        ("<detect_negative=0>", [False, False, True, False, False, True]),
        ("<detect_positive=0>", [False, False, False, False, True, False]),
        ("<detect_positive=0, detect_negative=0>", [False] * 6),
    ],
)
def test_isinf(attrs, expected):
    model = _model(f"y = IsInf{attrs}(x)\n z = Abs(x)", "float[6] x", out="bool[6] y, float[6] z")
    calibration = {"x": np.arange(6, dtype=np.float32)}
    result = qcc.compile(model, target="tflite", calibration=[calibration], verify=False)
    x = np.array([-1.2, np.nan, np.inf, 2.8, -np.inf, np.inf], np.float32)
    for resolver in ("xnnpack", "builtin"):
        got = interpreter(result.artifact.data, resolver).get_signature_runner()(x=x)["y"]
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("op", ["Sum", "Mean", "Max", "Min"])
@pytest.mark.parametrize("count", [1, 2, 3])
def test_variadic_op_folds_every_input(op, count):
    shapes = [[2, 3, 4], [4], [3, 1]][:count]
    signature = ", ".join(f"float[{','.join(map(str, s))}] x{i}" for i, s in enumerate(shapes))
    names = ", ".join(f"x{i}" for i in range(count))
    out = np.broadcast_shapes(*map(tuple, shapes))
    model = _model(f"y = {op}({names})", signature, out=f"float[{','.join(map(str, out))}] y")
    feed = random_feeds(model, 1, seed=count)[0]
    data = _check_float(model, feed)
    if count > 1:
        folded = {"Sum": "ADD", "Mean": "ADD", "Max": "MAXIMUM", "Min": "MINIMUM"}[op]
        assert folded in builtin_ops(data)


def test_max_of_integer_shapes_stays_integer():
    model = _model(
        "a = Cast<to=6>(x)\n m = Max(a, b, c)\n y = Cast<to=1>(m)",
        "float[6] x, int32[6] b, int32[] c",
        out="float[6] y",
        constants={"b": np.array([3, -3, 5, -5, 7, 2], np.int32), "c": np.int32(0)},
    )
    feed = {"x": np.array([7, 1, -7, -7, 0, 9], np.float32)}
    _check_float(model, feed, atol=0)


@pytest.mark.parametrize("mask", [False, True])
def test_dropout_is_a_copy_and_its_mask_all_true(mask):
    outputs = "float[2,3,4,5] y, bool[2,3,4,5] m" if mask else "float[2,3,4,5] y"
    body = "y, m = Dropout(x, r)" if mask else "y = Dropout(x, r)"
    model = _model(body, f"{_X}, float r", out=outputs, constants={"r": np.float32(0.3)})
    feed = random_feeds(model, 1)[0]
    _check_float(model, feed, atol=0)


def test_training_dropout_is_refused():
    model = _model(
        "y, m = Dropout(x, r, t)",
        f"{_X}, float r, bool t",
        out="float[2,3,4,5] y, bool[2,3,4,5] m",
        constants={"r": np.float32(0.3), "t": np.bool_(True)},
    )
    with pytest.raises(QccError, match="training mode"):
        qcc.compile(model, target="tflite", calibration=random_feeds(model, 1), verify=False)


def test_castlike():
    model = _model(
        "i = CastLike(x, like)\n y = Cast<to=1>(i)",
        f"{_X}, int32[1] like",
        constants={"like": np.array([0], np.int32)},
    )
    feed = {"x": np.random.default_rng(3).normal(0, 5, _SHAPE).astype(np.float32)}
    data = _check_float(model, feed, atol=0)
    assert "CAST" in builtin_ops(data)


@pytest.mark.parametrize("direction", ["RIGHT", "LEFT"])
@pytest.mark.parametrize(
    "kind, to, x", [("uint8", 2, [255, 200, 17, 8, 100, 129]), ("int32", 6, [-7, 1e6, 17, -8, 5, 1])]
)
def test_bit_shift(direction, kind, to, x):
    # Signed BitShift is ONNX's from opset 28; uint8 shifted left wraps (200 << 1 = 144).
    model = _model(
        f'a = Cast<to={to}>(x)\n s = BitShift<direction="{direction}">(a, k)\n y = Cast<to=1>(s)',
        f"float[6] x, {kind}[6] k",
        opset=28,
        out="float[6] y",
        constants={"k": np.array([0, 1, 2, 3, 4, 7], kind)},
    )
    _check_float(model, {"x": np.array(x, np.float32)}, atol=0)


# Float islands between quantized Convs: checked by verify() against the ORT QDQ simulation.
ISLANDS = {
    "softplus": "s = Softplus(c)",
    "mish": "s = Mish(c)",
    "elu_alpha": "s = Elu<alpha=0.3>(c)",
    "sin": "s = Sin(c)",
    "max3": "s = Max(c, x, m)",
    "mean3": "s = Mean(c, x, m)",
    "mod": "s = Mod<fmod=1>(c, d)",
}


@pytest.mark.parametrize("name", sorted(ISLANDS))
def test_float_island_between_int8_convs_matches_the_simulation(name):
    text = (
        '<ir_version: 8, opset_import: ["" : 18]>\n'
        "g (float[8,8,1,1] w, float[8,8,1,1] w2, float[1,8,1,1] m, float[1,8,1,1] d, float[1,8,8,8] x)"
        f" => (float[1,8,8,8] y) {{\n c = Conv(x, w)\n {ISLANDS[name]}\n y = Conv(s, w2)\n}}\n"
    )
    model = build_model(text, constants={"m": np.full((1, 8, 1, 1), 0.1), "d": np.full((1, 8, 1, 1), 0.7)})
    result = qcc.compile(model, target="tflite", calibration=random_feeds(model, 8))
    decisions = {node["op_type"]: node["decision"] for node in result.report["nodes"]}
    assert decisions["Conv"] == "int8"
    for resolver, entry in result.report["verify"]["resolvers"].items():
        assert entry["ok"], (resolver, entry)


def test_int8_max_requantizes_its_inputs_to_the_output_parameters(monkeypatch):
    # No spec lists Max (XNNPACK has no int8 MAXIMUM); one that does exercises the int8 rule.
    spec = dataclasses.replace(TFLITE_SPEC, int8_ops=TFLITE_SPEC.int8_ops | {"Max", "Min"})
    monkeypatch.setattr(TfliteBackend, "spec", spec)
    text = (
        '<ir_version: 8, opset_import: ["" : 17]>\n'
        "g (float[8,8,1,1] w, float[8,8,1,1] w2, float[8,8,1,1] w3, float[1,8,1,1] k, float[1,8,8,8] x)"
        " => (float[1,8,8,8] y) {\n"
        " a = Conv(x, w)\n b = Conv(x, w2)\n s = Max(a, b, x, k)\n t = Min(s)\n y = Conv(t, w3)\n}\n"
    )
    model = build_model(text, constants={"k": np.linspace(-0.5, 0.5, 8).reshape(1, 8, 1, 1)})
    result = qcc.compile(model, target="tflite", calibration=random_feeds(model, 8))
    decisions = {node["name"]: node["decision"] for node in result.report["nodes"]}
    assert decisions["s"] == decisions["t"] == "int8"
    assert "MAXIMUM" in builtin_ops(result.artifact.data)
    for resolver, entry in result.report["verify"]["resolvers"].items():
        assert entry["ok"], (resolver, entry)
        assert entry["within_one_step"] >= 0.99, (resolver, entry)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_float16_and_float64_run_in_float32_or_are_refused(dtype):
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    name = {onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.DOUBLE: "double"}[elem]
    model = _model(
        "y = Max(x, p, q)",
        f"{name}[2,3,4,5] x, {name}[5] p, {name}[2,3,4,5] q",
        out=f"{name}[2,3,4,5] y",
    )
    rng = np.random.default_rng(4)
    # float32 values, so that the float32 maximum is the float64 one.
    feed = {
        k: rng.normal(0, 1, s).astype(np.float32).astype(dtype) for k, s in (("x", _SHAPE), ("p", [5]), ("q", _SHAPE))
    }
    if np.dtype(dtype) not in _tflite_writer.TENSOR_TYPES:
        # A writer without the type: the lowering cannot CAST at the edges, so the rule refuses.
        with pytest.raises(QccError, match="compute in float32"):
            qcc.compile(model, target="tflite", calibration=[feed], verify=False)
        return
    result = qcc.compile(model, target="tflite", calibration=[feed], verify=False)
    expected = run_ort(model, feed)[0]
    for resolver in ("xnnpack", "builtin"):
        got = interpreter(result.artifact.data, resolver).get_signature_runner()(**feed)["y"]
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, expected)
    assert "CAST" in builtin_ops(result.artifact.data)


@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
def test_signed_int8_bit_shift_with_a_broadcast_amount(direction):
    from tests.e2e.conformance import run_onnx, run_tflite

    model = onnx.parser.parse_model(
        f"""
        <ir_version: 10, opset_import: ["" : 28]>
        g (int8[4] x, float[4] f) => (int8[4] y, float[4] g2) {{
          s = Constant<value=int8[1] {{2}}>()
          y = BitShift<direction="{direction}">(x, s)
          g2 = Relu(f)
        }}
        """
    )
    feed = {"x": np.array([1, 2, 3, -4], np.int8), "f": np.ones(4, np.float32)}
    result = qcc.compile(model, target="tflite", calibration=[feed])
    want = run_onnx(model.SerializeToString(), feed)[0]
    for resolver in ("xnnpack", "builtin"):
        np.testing.assert_array_equal(run_tflite(result.artifact.data, feed, resolver)[0], want)
