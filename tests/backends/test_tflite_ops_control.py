"""Control flow and recurrent ops lowered to TFLite (backends/_tflite_ops_control.py, _tflite_ops_rnn.py).

GRU/RNN/LSTM: single-node models written by the tflite emitter (float pipeline), run in LiteRT
under both resolvers, against ONNX Runtime (``layout=1``, which ONNX Runtime refuses: against
ONNX's reference evaluator). If: a run-time condition becomes both branches + SELECT_V2, checked
float and int8 (``qcc.compile`` + ``verify()``); a constant condition is inlined by canonicalize.
Loop: a constant trip count is unrolled; Scan and a run-time trip count are refused by name.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx.reference import ReferenceEvaluator

import qcc
from qcc.backends import get_backend
from qcc.backends._tflite_litert import interpreter, run
from qcc.backends.tflite import write_tflite
from qcc.context import PassContext
from qcc.errors import BackendError, QccError
from qcc.options import CompileOptions
from qcc.pipeline import run_pipeline
from tests.backends.test_tflite_ops import float_tflite
from tests.conftest import build_model, random_feeds
from tests.conftest import run as run_ort

_HEAD = '<ir_version: 8, opset_import: ["" : 14]>\n'
_GATES = {"GRU": 3, "RNN": 1, "LSTM": 4}


def recurrent_model(
    op: str,
    steps: int = 4,
    batch: int = 2,
    inputs: int = 3,
    hidden: int = 5,
    direction: str = "forward",
    initial: str = "inputs",
    weights: str = "constant",
    attributes: str = "",
    outputs: tuple[bool, bool] = (True, True),
    layout: int = 0,
    peepholes: bool = False,
    lengths: str = "none",
    seed: int = 0,
) -> onnx.ModelProto:
    """One GRU/RNN/LSTM; ``initial``: "inputs", "none" or "constant"; ``weights``: "constant" or "inputs";
    ``lengths`` (sequence_lens, shorter sequences in the batch): "none", "inputs" or "constant"."""
    rng = np.random.default_rng(seed)
    dirs, gates = (2 if direction == "bidirectional" else 1), _GATES[op]
    arrays = {
        "W": rng.normal(0, 1 / np.sqrt(inputs), (dirs, gates * hidden, inputs)),
        "R": rng.normal(0, 1 / np.sqrt(hidden), (dirs, gates * hidden, hidden)),
        "B": rng.normal(0, 0.5, (dirs, 2 * gates * hidden)),
    }
    state = (batch, dirs, hidden) if layout else (dirs, batch, hidden)
    x_shape = (batch, steps, inputs) if layout else (steps, batch, inputs)
    dims = {"W": arrays["W"].shape, "R": arrays["R"].shape, "B": arrays["B"].shape, "x": x_shape}
    names = ["x", "W", "R", "B"]
    args = ["x", "W", "R", "B", "", "h0"]
    if initial != "none":
        dims["h0"] = state
        names.append("h0")
        if initial == "constant":
            arrays["h0"] = rng.normal(0, 1, state)
        if op == "LSTM":
            dims["c0"] = state
            names.append("c0")
            args.append("c0")
            if initial == "constant":
                arrays["c0"] = rng.normal(0, 1, state)
    else:
        args = args[:4]
    if lengths != "none":
        arrays["L"] = np.array([steps - 1 - k % steps for k in range(batch)], np.int32)
        args += [""] * max(0, 5 - len(args))
        args[4] = "L"
        names.append("L")
    if peepholes:
        arrays["P"] = rng.normal(0, 0.5, (dirs, 3 * hidden))
        dims["P"] = arrays["P"].shape
        names.append("P")
        args += [""] * (7 - len(args)) + ["P"]
    constants = {k: v for k, v in arrays.items() if weights == "constant" or k not in ("W", "R", "B", "P")}
    if lengths == "inputs":
        constants.pop("L")
    dims["L"] = (batch,)
    signature = ", ".join(f"{'int32' if n == 'L' else 'float'}[{','.join(map(str, dims[n]))}] {n}" for n in names)
    y_shape = (batch, steps, dirs, hidden) if layout else (steps, dirs, batch, hidden)
    results = [("Y", y_shape), ("Yh", state)]
    used = [name if keep else "" for (name, _), keep in zip(results, outputs, strict=True)]
    declared = ", ".join(f"float[{','.join(map(str, s))}] {n}" for (n, s), keep in zip(results, outputs, strict=True)
                         if keep)
    attrs = f'hidden_size={hidden}, direction="{direction}", layout={layout}{attributes}'
    body = f"{', '.join(used)} = {op}<{attrs}>({', '.join(args)})"
    text = f"{_HEAD}g ({signature}) => ({declared}) {{\n {body}\n}}\n"
    model = build_model(text, constants=constants)
    feeds = {n: arrays[n].astype(np.float32) for n in ("W", "R", "B", "P") if n in arrays and n not in constants}
    if "L" in arrays and "L" not in constants:
        feeds["L"] = arrays["L"]
    return model, feeds


RECURRENT = {
    "gru_forward": ("GRU", {}),
    "gru_zero_state": ("GRU", {"initial": "none"}),
    "gru_constant_state": ("GRU", {"initial": "constant"}),
    "gru_reverse": ("GRU", {"direction": "reverse"}),
    "gru_bidirectional": ("GRU", {"direction": "bidirectional"}),
    "gru_linear_before_reset": ("GRU", {"attributes": ", linear_before_reset=1"}),
    "gru_linear_before_reset_zero_state": ("GRU", {"attributes": ", linear_before_reset=1", "initial": "none"}),
    "gru_bidirectional_lbr_runtime_weights": (
        "GRU",
        {"direction": "bidirectional", "attributes": ", linear_before_reset=1", "weights": "inputs"},
    ),
    "gru_runtime_weights": ("GRU", {"weights": "inputs", "initial": "none"}),
    "gru_clip_relu": ("GRU", {"attributes": ', clip=0.5, activations=["Sigmoid", "Relu"]'}),
    "gru_only_y_h": ("GRU", {"outputs": (False, True)}),
    "rnn_forward": ("RNN", {}),
    "rnn_zero_state": ("RNN", {"initial": "none"}),
    "rnn_reverse": ("RNN", {"direction": "reverse"}),
    "rnn_bidirectional_runtime_weights": ("RNN", {"direction": "bidirectional", "weights": "inputs"}),
    "rnn_relu_clip": ("RNN", {"attributes": ', clip=1.0, activations=["Relu"]'}),
    "rnn_bidirectional_two_activations": (
        "RNN",
        {"direction": "bidirectional", "attributes": ', activations=["Tanh", "Sigmoid"]'},
    ),
    "gru_sequence_lens_bidirectional": ("GRU", {"lengths": "inputs", "direction": "bidirectional"}),
    "gru_sequence_lens_constant_zero_state": ("GRU", {"lengths": "constant", "initial": "none"}),
    "rnn_sequence_lens_reverse": ("RNN", {"lengths": "inputs", "direction": "reverse"}),
    "lstm_sequence_lens_bidirectional": ("LSTM", {"lengths": "inputs", "direction": "bidirectional", "batch": 3}),
    "lstm_runtime_weights": ("LSTM", {"weights": "inputs"}),
    "lstm_peepholes": ("LSTM", {"peepholes": True}),
    "lstm_peepholes_runtime_bidirectional": (
        "LSTM",
        {"peepholes": True, "weights": "inputs", "direction": "bidirectional"},
    ),
}


def _run_tflite(data: bytes, feed: dict, resolver: str, like) -> list[np.ndarray]:
    return run(interpreter(data, resolver), feed, like)


@pytest.mark.parametrize("case", sorted(RECURRENT))
@pytest.mark.parametrize("resolver", ["xnnpack", "builtin"])
def test_float_recurrent_matches_onnxruntime(case, resolver):
    op, kwargs = RECURRENT[case]
    model, weights = recurrent_model(op, **kwargs)
    feed = {**random_feeds(model, 1, seed=3)[0], **weights}
    expected = run_ort(model, feed)
    got = _run_tflite(float_tflite(model), feed, resolver, [np.shape(e) for e in expected])
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("op", ["GRU", "RNN", "LSTM"])
def test_float_batch_major_layout_matches_the_reference(op):
    # ONNX Runtime refuses layout=1 (so qcc's frontend does too); the lowering is checked past the
    # frontend against ONNX's reference evaluator.
    model, _ = recurrent_model(op, layout=1, direction="bidirectional", initial="inputs")
    feed = random_feeds(model, 1, seed=3)[0]
    expected = ReferenceEvaluator(model).run(None, feed)
    loaded = ir.serde.deserialize_model(onnx.shape_inference.infer_shapes(model))
    ctx = PassContext(CompileOptions(target="tflite"), get_backend("tflite").spec)
    run_pipeline(loaded, ctx, float_only=True)
    got = _run_tflite(write_tflite(loaded, ctx, None), feed, "xnnpack", [np.shape(e) for e in expected])
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


def test_int8_gemm_gru_gemm_verifies_on_both_resolvers():
    rng = np.random.default_rng(1)
    steps, hidden = 6, 8
    text = f"""{_HEAD}g (float[12,8] w1, float[12] b1, float[1,{3 * hidden},12] W, float[1,{3 * hidden},{hidden}] R,
         float[1,{6 * hidden}] B, float[4,{hidden}] w2, float[4] b2, int64[3] s3, int64[2] s2, float[{steps},8] x)
      => (float[{steps},4] y) {{
        a = Gemm<transB=1>(x, w1, b1)
        a3 = Reshape(a, s3)
        Y, Yh = GRU<hidden_size={hidden}, linear_before_reset=1>(a3, W, R, B)
        y2 = Reshape(Y, s2)
        y = Gemm<transB=1>(y2, w2, b2)
    }}
    """
    constants = {
        "W": rng.normal(0, 1 / np.sqrt(12), (1, 3 * hidden, 12)),
        "R": rng.normal(0, 1 / np.sqrt(hidden), (1, 3 * hidden, hidden)),
        "B": rng.normal(0, 0.5, (1, 6 * hidden)),
        "s3": np.array([steps, 1, 12]),
        "s2": np.array([steps, hidden]),
    }
    model = build_model(text, constants=constants)
    result = qcc.compile(model, target="tflite", calibration=random_feeds(model, 8))
    verify = result.report["verify"]
    assert verify["ok"], verify
    decisions = {n["op_type"]: n["decision"] for n in result.report["nodes"]}
    assert decisions["GRU"] == "float"


@pytest.mark.parametrize(
    ("op", "attributes", "why"),
    [
        ("GRU", ', activations=["HardSigmoid", "Tanh"]', "activations"),
        ("RNN", ", activation_alpha=[0.5]", "activation_alpha"),
        ("LSTM", ", clip=3.0", "clip"),
    ],
)
def test_unsupported_recurrent_attributes_name_the_node(op, attributes, why):
    model, _ = recurrent_model(op, attributes=attributes)
    with pytest.raises(BackendError, match=why):
        float_tflite(model)


_IF = """<ir_version: 8, opset_import: ["" : 17]>
g (bool[1] c, float[1,8] x, float[6,8] w1, float[6] b1, float[4,6] w2, float[4] b2, float[] two) => (float[1,4] y) {
  h = Gemm<transB=1>(x, w1, b1)
  r = If(c) <then_branch = g1 () => (float[1,6] a) { t = Relu(h)
 a = Mul(t, two) }, else_branch = g2 () => (float[1,6] b) { b = Sigmoid(h) }>
  y = Gemm<transB=1>(r, w2, b2)
}
"""


def _if_feeds(count: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"c": np.array([i % 2 == 0]), "x": rng.normal(0, 1, (1, 8)).astype(np.float32)} for i in range(count)]


@pytest.mark.parametrize("resolver", ["xnnpack", "builtin"])
def test_float_run_time_if_selects_the_taken_branch(resolver):
    model = build_model(_IF, constants={"two": np.float32(2)})
    data = float_tflite(model)
    for feed in _if_feeds(2):
        expected = run_ort(model, feed)
        got = _run_tflite(data, feed, resolver, [np.shape(e) for e in expected])
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-5, atol=1e-5)


def test_int8_run_time_if_is_a_float_island_between_int8_ops():
    model = build_model(_IF, constants={"two": np.float32(2)})
    result = qcc.compile(model, target="tflite", calibration=_if_feeds(8))
    verify = result.report["verify"]
    assert verify["ok"], verify
    decisions = [(n["op_type"], n["decision"]) for n in result.report["nodes"]]
    assert decisions == [("Gemm", "int8"), ("If", "float"), ("Gemm", "int8")]
    assert {"RELU", "MUL", "LOGISTIC"} <= {op.split(" -> ")[0] for op in verify["float_ops"]}  # both branches


def test_if_branches_of_different_shapes_are_refused_naming_them():
    model = build_model(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (bool c, float[1,6] x) => (float[?] y) {
          y = If(c) <then_branch = g1 () => (float[6] a) { a = Relu(x) }, else_branch = g2 () => (float[2] b) {
            b = Constant<value=float[2] {1.0, 2.0}>() }>
        }
        """
    )
    with pytest.raises(BackendError, match=r"then_branch and .* else_branch.*SELECT_V2"):
        float_tflite(model)


_LOOP = """<ir_version: 8, opset_import: ["" : 17]>
g (int64 m, float[1,4] x) => (float[1,4] y, float[3,1,4] s) {
  y, s = Loop(m, , x) <body = body (int64 i, bool c, float[1,4] v) => (bool co, float[1,4] vo, float[1,4] so) {
    co = Identity(c)
    vo = Tanh(v)
    so = Relu(v) }>
}
"""


def test_loop_with_run_time_trip_count_is_refused_naming_while():
    model = build_model(_LOOP)
    feed = {"m": np.array(3, np.int64), "x": np.zeros((1, 4), np.float32)}
    with pytest.raises(QccError, match="trip count is not a constant.*WHILE"):
        qcc.compile(model, target="tflite", calibration=[feed])


def test_scan_is_refused_naming_while():
    model = build_model(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[2] init, float[3,2] x) => (float[2] y, float[3,2] z) {
          y, z = Scan<num_scan_inputs=1, body = body (float[2] s, float[2] e) => (float[2] so, float[2] eo) {
            so = Add(s, e)
            eo = Identity(so) }>(init, x)
        }
        """
    )
    with pytest.raises(BackendError, match="Scan.*WHILE"):
        float_tflite(model)


# ONNX's test_loop11 with a constant trip count: the body slices a constant by the iteration number.
_LOOP_CONSTANT = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4] x, float[4,4] w) => (float[1,4] y, float[3,1,4] s) {
  m = Constant<value=int64 {3}>()
  t = Constant<value=bool {1}>()
  y, s = Loop(m, t, x) <body = body (int64 i, bool c, float[1,4] v) => (bool co, float[1,4] vo, float[1,4] so) {
    co = Identity(c)
    k = Constant<value=float[3] {0.5, -1.0, 2.0}>()
    one = Constant<value=int64 {1}>()
    e = Add(i, one)
    zero = Constant<value=int64[1] {0}>()
    a = Unsqueeze(i, zero)
    b = Unsqueeze(e, zero)
    f = Slice(k, a, b)
    p = MatMul(v, w)
    q = Mul(p, f)
    vo = Tanh(q)
    so = Relu(q) }>
}
"""


def _loop_model():
    return build_model(_LOOP_CONSTANT)


@pytest.mark.parametrize("resolver", ["xnnpack", "builtin"])
def test_float_loop_with_constant_trip_count_is_unrolled(resolver):
    model = _loop_model()
    feed = random_feeds(model, 1, seed=3)[0]
    expected = run_ort(model, feed)
    data = float_tflite(model)
    got = _run_tflite(data, feed, resolver, [np.shape(e) for e in expected])
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def test_int8_unrolled_loop_verifies_and_quantizes_the_body():
    model = _loop_model()
    result = qcc.compile(model, target="tflite", calibration=random_feeds(model, 8))
    assert result.report["verify"]["ok"], result.report["verify"]
    decisions = {(n["op_type"], n["decision"]) for n in result.report["nodes"]}
    assert ("MatMul", "int8") in decisions and not any(op == "Loop" for op, _ in decisions)


def test_ort_keeps_the_loop():
    model = _loop_model()
    result = qcc.compile(model, target="ort", calibration=random_feeds(model, 8))
    assert "Loop" in {n["op_type"] for n in result.report["nodes"]}


def test_int8_run_time_if_between_nhwc_convs_reads_logical_layout():
    # The branches read a Conv output the layout pass made NHWC; they must see it NCHW (the pass
    # rewires every use, the branches' too, to the transpose back), and a transpose in a branch
    # must move the logical axes.
    model = build_model(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (bool[1] c, float[1,4,6,6] x, float[8,4,3,3] w, float[8] b, float[8,8,1,1] w2)
          => (float[1,8,6,6] y, float[1,8,6,6] z) {
          h = Conv<pads=[1,1,1,1]>(x, w, b)
          r = If(c) <then_branch = g1 () => (float[1,8,6,6] a) { t = Relu(h)
            a = Transpose<perm=[0,1,3,2]>(t) }, else_branch = g2 () => (float[1,8,6,6] e) { e = Sigmoid(h) }>
          y = Conv(r, w2)
          z = Add(r, h)
        }
        """
    )
    rng = np.random.default_rng(0)
    feeds = [{"c": np.array([i % 2 == 0]), "x": rng.normal(0, 1, (1, 4, 6, 6)).astype(np.float32)} for i in range(8)]
    data = float_tflite(model)
    for feed in feeds[:2]:
        expected = run_ort(model, feed)
        got = _run_tflite(data, feed, "xnnpack", [np.shape(e) for e in expected])
        for e, g in zip(expected, got, strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
    result = qcc.compile(model, target="tflite", calibration=feeds)
    assert result.report["verify"]["ok"], result.report["verify"]
