"""LSTM lowered to TFLite (backends/_tflite_ops_rnn.py): float vs ONNX Runtime, int8 end to end.

float: single-LSTM models written by the tflite emitter (float pipeline) and run in LiteRT under
both resolvers, against ONNX Runtime on the float model. int8: Gemm -> LSTM -> Gemm compiled for
``tflite``, the LSTM a float island, checked by ``verify()`` on both resolvers.
"""

from __future__ import annotations

import numpy as np
import pytest

import qcc
from qcc.backends._tflite_litert import delegated_ops, interpreter, run
from qcc.errors import BackendError
from tests.backends.test_tflite_ops import float_tflite
from tests.conftest import build_model, random_feeds
from tests.conftest import run as run_ort

_HEAD = '<ir_version: 8, opset_import: ["" : 14]>\n'


def lstm_model(
    steps: int = 5,
    batch: int = 2,
    inputs: int = 6,
    hidden: int = 4,
    direction: str = "forward",
    initial: str = "inputs",
    outputs: tuple[bool, bool, bool] = (True, True, True),
    attributes: str = "",
    seed: int = 0,
):
    """One LSTM with random weights; ``initial`` is "inputs", "none" or "constant" (initial_h/c)."""
    rng = np.random.default_rng(seed)
    dirs = 2 if direction == "bidirectional" else 1
    constants = {
        "W": rng.normal(0, 1 / np.sqrt(inputs), (dirs, 4 * hidden, inputs)),
        "R": rng.normal(0, 1 / np.sqrt(hidden), (dirs, 4 * hidden, hidden)),
        "B": rng.normal(0, 0.5, (dirs, 8 * hidden)),
    }
    state = f"[{dirs},{batch},{hidden}]"
    signature = [f"float[{dirs},{4 * hidden},{inputs}] W", f"float[{dirs},{4 * hidden},{hidden}] R"]
    signature.append(f"float[{dirs},{8 * hidden}] B")
    signature.append(f"float[{steps},{batch},{inputs}] x")
    args = "x, W, R, B"
    if initial != "none":
        signature += [f"float{state} h0", f"float{state} c0"]
        args += ", , h0, c0"
        if initial == "constant":
            constants["h0"] = rng.normal(0, 1, (dirs, batch, hidden))
            constants["c0"] = rng.normal(0, 1, (dirs, batch, hidden))
    names = [name if used else "" for name, used in zip(("Y", "Yh", "Yc"), outputs, strict=True)]
    shapes = {"Y": f"[{steps},{dirs},{batch},{hidden}]", "Yh": state, "Yc": state}
    results = ", ".join(f"float{shapes[n]} {n}" for n in names if n)
    attrs = f'hidden_size={hidden}, direction="{direction}"{attributes}'
    body = f"{', '.join(names)} = LSTM<{attrs}>({args})"
    text = f"{_HEAD}g ({', '.join(signature)}) => ({results}) {{\n {body}\n}}\n"
    return build_model(text, constants=constants)


CASES = {
    "forward": {},
    "zero_initial_state": {"initial": "none"},
    "constant_initial_state": {"initial": "constant"},
    "reverse": {"direction": "reverse"},
    "bidirectional": {"direction": "bidirectional"},
    "only_y_h": {"outputs": (False, True, False)},
    "only_y_c_bidirectional": {"outputs": (False, False, True), "direction": "bidirectional", "initial": "none"},
    "silero_sized": {"steps": 62, "batch": 1, "inputs": 128, "hidden": 128},
}


def _float_run(model, resolver: str):
    data = float_tflite(model)
    feed = random_feeds(model, 1, seed=3)[0]
    expected = run_ort(model, feed)
    interp = interpreter(data, resolver)
    return expected, run(interp, feed, [np.shape(e) for e in expected]), interp


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("resolver", ["xnnpack", "builtin"])
def test_float_lstm_matches_onnxruntime(case, resolver):
    expected, got, _ = _float_run(lstm_model(**CASES[case]), resolver)
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


def test_unrolled_lstm_stays_in_one_xnnpack_partition():
    # 62 steps: Y's CONCATENATION is a tree of <= 5 inputs, which XNNPACK takes.
    _, _, interp = _float_run(lstm_model(**CASES["silero_sized"]), "xnnpack")
    delegation = delegated_ops(interp)
    assert delegation["partitions"] == 1, delegation
    assert not delegation["builtin"], delegation
    assert delegation["delegated"]["FULLY_CONNECTED"] == 63  # the input projection + one per step


@pytest.mark.parametrize(
    ("attributes", "why"),
    [
        (", clip=3.0", "clip"),
        (', activations=["Sigmoid", "Relu", "Tanh"]', "activations"),
        (", input_forget=1", "input_forget"),
    ],
)
def test_unsupported_lstm_attributes_name_the_node(attributes, why):
    with pytest.raises(BackendError, match=why):
        float_tflite(lstm_model(attributes=attributes))


def _gemm_lstm_gemm():
    rng = np.random.default_rng(1)
    steps, hidden = 12, 16
    text = f"""{_HEAD}g (float[24,8] w1, float[24] b1, float[1,{4 * hidden},24] W, float[1,{4 * hidden},{hidden}] R,
         float[1,{8 * hidden}] B, float[6,{hidden}] w2, float[6] b2, int64[3] s3, int64[2] s2,
         float[{steps},8] x, float[1,1,{hidden}] h0, float[1,1,{hidden}] c0)
      => (float[{steps},6] y, float[1,1,{hidden}] Yh) {{
        a = Gemm<transB=1>(x, w1, b1)
        a3 = Reshape(a, s3)
        Y, Yh, Yc = LSTM<hidden_size={hidden}>(a3, W, R, B, , h0, c0)
        y2 = Reshape(Y, s2)
        y = Gemm<transB=1>(y2, w2, b2)
    }}
    """
    constants = {
        "W": rng.normal(0, 1 / np.sqrt(24), (1, 4 * hidden, 24)),
        "R": rng.normal(0, 1 / np.sqrt(hidden), (1, 4 * hidden, hidden)),
        "B": rng.normal(0, 0.5, (1, 8 * hidden)),
        "s3": np.array([steps, 1, 24]),
        "s2": np.array([steps, hidden]),
    }
    return build_model(text, constants=constants)


def test_int8_gemm_lstm_gemm_verifies_on_both_resolvers():
    model = _gemm_lstm_gemm()
    result = qcc.compile(model, target="tflite", calibration=random_feeds(model, 16))
    verify = result.report["verify"]
    assert verify["ok"], verify
    for resolver, entry in verify["resolvers"].items():
        assert entry["ok"], (resolver, entry)
        assert entry["within_one_step"] >= 0.99, (resolver, entry)
    float_ops = {op.split(" -> ")[0] for op in verify["float_ops"]}
    assert {"FULLY_CONNECTED", "LOGISTIC", "TANH"} <= float_ops  # the LSTM is a float island
    decisions = {n["op_type"]: n["decision"] for n in result.report["nodes"]}
    assert decisions == {"Gemm": "int8", "Reshape": "int8", "LSTM": "float"}
    assert verify["resolvers"]["xnnpack"]["delegation"]["partitions"] == 1
