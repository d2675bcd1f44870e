"""LSTM over a dynamic sequence axis -> UNIDIRECTIONAL_SEQUENCE_LSTM (backends/_tflite_ops_seqlstm.py).

Each model is lowered once by the tflite emitter (float pipeline) with the sequence axis dynamic,
then run in LiteRT under both resolvers at three lengths and compared with ONNX Runtime. Each
length is invoked twice on the same interpreter: the LSTM's state tensors are variables that
LiteRT keeps across invocations, and ONNX starts every run from the initial state.
"""

from __future__ import annotations

from contextlib import nullcontext
from unittest import mock

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as oh

import qcc
from qcc import frontend
from qcc.backends import get_backend
from qcc.backends._tflite_litert import interpreter
from qcc.backends.tflite import write_tflite
from qcc.context import PassContext
from qcc.errors import BackendError
from qcc.options import CompileOptions
from qcc.pipeline import run_pipeline
from tests.conftest import run as run_ort

BATCH, INPUTS, HIDDEN = 2, 5, 4
LENGTHS = (7, 3, 12)


def seq_lstm_model(
    direction: str = "forward",
    initial: str = "inputs",
    outputs: tuple[bool, bool, bool] = (True, True, True),
    layout: int = 0,
    peepholes: bool = False,
    extra_inputs: tuple[str, ...] = (),
    seed: int = 0,
    **attributes,
) -> onnx.ModelProto:
    """One LSTM on x [S, B, I] (``layout=1``: [B, S, I]) with S a ``dim_param``; random constant weights."""
    rng = np.random.default_rng(seed)
    dirs = 2 if direction == "bidirectional" else 1

    def const(name, *shape, scale=0.5):
        return onnx.numpy_helper.from_array(rng.normal(0, scale, shape).astype(np.float32), name)

    inits = [const("W", dirs, 4 * HIDDEN, INPUTS), const("R", dirs, 4 * HIDDEN, HIDDEN), const("B", dirs, 8 * HIDDEN)]
    seq = ["S", BATCH] if layout == 0 else [BATCH, "S"]
    state = [dirs, BATCH, HIDDEN] if layout == 0 else [BATCH, dirs, HIDDEN]
    inputs = [oh.make_tensor_value_info("x", TensorProto.FLOAT, [*seq, INPUTS])]
    args = ["x", "W", "R", "B", "", "", ""]
    if initial == "inputs":
        inputs += [oh.make_tensor_value_info(n, TensorProto.FLOAT, state) for n in ("h0", "c0")]
        args[5:7] = ["h0", "c0"]
    elif initial == "constant":
        inits += [const("h0", *state, scale=1.0), const("c0", *state, scale=1.0)]
        args[5:7] = ["h0", "c0"]
    if peepholes:
        inits.append(const("P", dirs, 3 * HIDDEN))
        args.append("P")
    for name in extra_inputs:
        args[4] = name
        inputs.append(oh.make_tensor_value_info(name, TensorProto.INT32, [BATCH]))
    while args[-1] == "":
        args.pop()
    y_shape = [*seq[:1], dirs, BATCH, HIDDEN] if layout == 0 else [BATCH, "S", dirs, HIDDEN]
    names = [n if keep else "" for n, keep in zip(("Y", "Yh", "Yc"), outputs, strict=True)]
    shapes = {"Y": y_shape, "Yh": state, "Yc": state}
    outs = [oh.make_tensor_value_info(n, TensorProto.FLOAT, shapes[n]) for n in names if n]
    node = oh.make_node(
        "LSTM", args, names, hidden_size=HIDDEN, direction=direction, layout=layout, name="lstm", **attributes
    )
    graph = oh.make_graph([node], "g", inputs, outs, inits)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 14)], ir_version=8)


def _feed(model: onnx.ModelProto, steps: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feed = {}
    for value in model.graph.input:
        dims = [steps if d.dim_param == "S" else d.dim_value for d in value.type.tensor_type.shape.dim]
        feed[value.name] = rng.normal(0, 1, dims).astype(np.float32)
    return feed


def _expected(case: dict, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """ONNX Runtime's outputs; ``layout=1`` (which it does not run) via the layout-0 twin on transposed feeds."""
    if not case.get("layout"):
        return run_ort(seq_lstm_model(**case), feed)
    twin = seq_lstm_model(**{**case, "layout": 0})
    swapped = {k: np.ascontiguousarray(np.swapaxes(v, 0, 1)) for k, v in feed.items()}
    outputs = run_ort(twin, swapped)
    names = [o.name for o in twin.graph.output]
    return [np.transpose(o, (2, 0, 1, 3) if n == "Y" else (1, 0, 2)) for n, o in zip(names, outputs, strict=True)]


def _float_tflite(model: onnx.ModelProto, feed) -> bytes:
    """The float model written by the tflite emitter, its sizes taken from ``feed``.

    ONNX Runtime does not run ``layout=1`` recurrent ops, so the frontend's check that it loads the
    model is skipped for those (the reference is the layout-0 twin, see :func:`_expected`).
    """
    batchwise = any(a.name == "layout" and a.i for n in model.graph.node for a in n.attribute)
    skip = mock.patch.object(frontend, "_fit_onnxruntime", lambda serialized, origin: serialized.proto)
    with skip if batchwise else nullcontext():
        loaded = frontend.load(model)
    ctx = PassContext(CompileOptions(target="tflite"), get_backend("tflite").spec)
    run_pipeline(loaded.model, ctx, float_only=True)
    return write_tflite(loaded.model, ctx, feed)


def _invoke(interp, feed) -> list[np.ndarray]:
    """Resizes to the feed, invokes, returns the outputs in order (copies)."""
    details = interp.get_input_details()
    for detail in details:
        interp.resize_tensor_input(detail["index"], list(feed[detail["name"]].shape))
    interp.allocate_tensors()
    for detail in details:
        interp.set_tensor(detail["index"], feed[detail["name"]])
    interp.invoke()
    return [interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()]


def _ops(data: bytes) -> list[str]:
    from tflite.BuiltinOperator import BuiltinOperator
    from tflite.Model import Model

    names = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
    model = Model.GetRootAs(data, 0)
    codes = [model.OperatorCodes(i).BuiltinCode() for i in range(model.OperatorCodesLength())]
    graph = model.Subgraphs(0)
    return [names[codes[graph.Operators(i).OpcodeIndex()]] for i in range(graph.OperatorsLength())]


CASES = {
    "forward": {},
    "reverse": {"direction": "reverse"},
    "bidirectional": {"direction": "bidirectional"},
    "bidirectional_zero_state": {"direction": "bidirectional", "initial": "none"},
    "constant_state_peepholes": {"initial": "constant", "peepholes": True},
    "layout_1": {"layout": 1},
    "layout_1_bidirectional": {"layout": 1, "direction": "bidirectional"},
    "only_y_c": {"outputs": (False, False, True)},
    "only_y_h_reverse": {"outputs": (False, True, False), "direction": "reverse", "initial": "none"},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_dynamic_lstm_runs_at_every_length_on_both_resolvers(case):
    model = seq_lstm_model(**CASES[case])
    data = _float_tflite(model, _feed(model, LENGTHS[0], 0))
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in _ops(data)
    for resolver in ("xnnpack", "builtin"):
        interp = interpreter(data, resolver)
        x = next(d for d in interp.get_input_details() if d["name"] == "x")
        assert list(x["shape_signature"]).count(-1) == 1, x
        for k, steps in enumerate(LENGTHS):
            feed = _feed(model, steps, k + 1)
            expected = _expected(CASES[case], feed)
            first, second = _invoke(interp, feed), _invoke(interp, feed)
            for e, g, again in zip(expected, first, second, strict=True):
                np.testing.assert_allclose(g.reshape(e.shape), e, rtol=1e-5, atol=1e-5, err_msg=f"{resolver} {steps}")
                np.testing.assert_array_equal(again, g)  # the state does not carry over to the next invoke


def test_two_invokes_without_resize_give_identical_outputs():
    # No allocate_tensors() between the invokes (it would zero the variables anyway).
    model = seq_lstm_model(initial="none")
    feed = _feed(model, 9, 5)
    data = _float_tflite(model, feed)
    for resolver in ("xnnpack", "builtin"):
        interp = interpreter(data, resolver)
        runs = []
        for _ in range(3):
            interp.set_tensor(interp.get_input_details()[0]["index"], feed["x"])
            interp.invoke()
            runs.append([interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()])
        for later in runs[1:]:
            for a, b in zip(runs[0], later, strict=True):
                np.testing.assert_array_equal(a, b)


def test_static_sequence_keeps_the_unrolled_lowering():
    model = seq_lstm_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 6
    data = _float_tflite(model, _feed(model, 6, 0))
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" not in _ops(data)


def test_sequence_lens_keeps_a_static_artifact():
    # The builtin has no per-sequence lengths: the emitter falls back to the unrolled, static lowering.
    model = seq_lstm_model(extra_inputs=("lens",))
    feed = _feed(model, 6, 0)
    feed["lens"] = np.array([6, 4], np.int32)
    data = _float_tflite(model, feed)
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" not in _ops(data)
    interp = interpreter(data, "builtin")
    x = next(d for d in interp.get_input_details() if d["name"] == "x")
    assert -1 not in list(x["shape_signature"])
    for e, g in zip(run_ort(model, feed), _invoke(interp, feed), strict=True):
        np.testing.assert_allclose(g.reshape(e.shape), e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("kwargs", "why"), [({"clip": 3.0}, "clip"), ({"input_forget": 1}, "input_forget")])
def test_unsupported_dynamic_lstm_names_the_node(kwargs, why):
    model = seq_lstm_model(**kwargs)
    with pytest.raises(BackendError, match=why):
        _float_tflite(model, _feed(model, 5, 0))


def test_int8_gemm_lstm_compiles_dynamic_and_verifies():
    rng = np.random.default_rng(2)
    hidden = 8
    nodes = [
        oh.make_node("MatMul", ["x", "w1"], ["a"]),
        oh.make_node("LSTM", ["a", "W", "R", "B", "", "h0", "c0"], ["Y", "Yh", "Yc"], hidden_size=hidden),
        oh.make_node("Squeeze", ["Y", "axis1"], ["y2"]),
        oh.make_node("MatMul", ["y2", "w2"], ["y"]),
    ]
    inits = [
        onnx.numpy_helper.from_array(rng.normal(0, 0.4, shape).astype(np.float32), name)
        for name, shape in (
            ("w1", (6, 8)),
            ("W", (1, 4 * hidden, 8)),
            ("R", (1, 4 * hidden, hidden)),
            ("B", (1, 8 * hidden)),
            ("w2", (hidden, 3)),
        )
    ]
    inits.append(onnx.numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    state = [1, 1, hidden]
    inputs = [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["S", 1, 6])]
    inputs += [oh.make_tensor_value_info(n, TensorProto.FLOAT, state) for n in ("h0", "c0")]
    outputs = [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["S", 1, 3])]
    outputs += [oh.make_tensor_value_info(n, TensorProto.FLOAT, state) for n in ("Yh", "Yc")]
    model = oh.make_model(
        oh.make_graph(nodes, "g", inputs, outputs, inits), opset_imports=[oh.make_opsetid("", 14)], ir_version=8
    )
    calibration = [
        {
            "x": rng.normal(0, 1, (steps, 1, 6)).astype(np.float32),
            "h0": rng.normal(0, 0.5, state).astype(np.float32),
            "c0": rng.normal(0, 0.5, state).astype(np.float32),
        }
        for steps in (10, 10, 10, 10, 17, 17, 17, 17)
    ]
    result = qcc.compile(model, target="tflite", calibration=calibration)
    verify = result.report["verify"]
    assert verify["shapes"].get("dynamic"), verify["shapes"]
    assert verify["ok"], verify
