"""An int8 MatMul between two activations (BATCH_MATMUL) gets a zero-point-0 rhs, so XNNPACK takes it.

XNNPACK's delegate refuses a statically quantized BATCH_MATMUL whose rhs has a non-zero zero
point and LiteRT runs it on the slower builtin kernel (MiniLM's int8 ``.tflite`` at 0.76x fp32).
The spec's ``symmetric_inputs`` makes the rhs (and every tensor sharing its parameters) symmetric;
a Softmax read as the rhs, whose output parameters are fixed, is requantized to zero point 0.
"""

from __future__ import annotations

import numpy as np
import pytest

import qcc
from qcc.backends._tflite_litert import interpreter, run
from tests.backends._tflite_helpers import body_model
from tests.conftest import cosine, random_feeds
from tests.conftest import run as run_ort

_RNG = np.random.default_rng(0)
_WEIGHTS = {f"w{name}": _RNG.normal(0, 0.3, (16, 16)).astype(np.float32) for name in "qkv"}

# Single-head attention: Q.K^T and attn.V both multiply two activations.
_ATTENTION = (
    "q = MatMul(x, wq)\n k = MatMul(x, wk)\n v = MatMul(x, wv)\n kt = Transpose<perm=[0,2,1]>(k)\n"
    " s = MatMul(q, kt)\n p = Softmax<axis=-1>(s)\n y = MatMul(p, v)"
)
# The Softmax output is the rhs: its parameters are fixed at (1/256, -128).
_SOFTMAX_RHS = (
    "q = MatMul(x, wq)\n v = MatMul(x, wv)\n qt = Transpose<perm=[0,2,1]>(q)\n s = MatMul(q, qt)\n"
    " p = Softmax<axis=-1>(s)\n vt = Transpose<perm=[0,2,1]>(v)\n y = MatMul(vt, p)"
)
_CASES = {
    "attention": (_ATTENTION, "float[1,8,16] y"),
    "softmax_rhs": (_SOFTMAX_RHS, "float[1,16,8] y"),
}


def _batch_matmul_operands(data: bytes) -> list[tuple[dict, dict]]:
    """(lhs, rhs) tensor details of every BATCH_MATMUL in the artifact."""
    interp = interpreter(data, "builtin")
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # noqa: SLF001 - no public op listing
    return [(tensors[op["inputs"][0]], tensors[op["inputs"][1]]) for op in ops if op["op_name"] == "BATCH_MATMUL"]


@pytest.mark.parametrize("case", sorted(_CASES))
def test_activation_batch_matmul_has_zero_point_0_rhs_and_is_delegated(case):
    body, out = _CASES[case]
    inputs = "float[1,8,16] x, " + ", ".join(f"float[16,16] {name}" for name in _WEIGHTS)
    model = body_model(inputs, out, body, 17, constants=_WEIGHTS)
    result = qcc.compile(model, target="tflite", calibration=random_feeds(model, 8))
    operands = _batch_matmul_operands(result.artifact.data)
    assert len(operands) == 2
    for lhs, rhs in operands:
        assert lhs["dtype"] == rhs["dtype"] == np.int8, (lhs, rhs)
        assert rhs["quantization_parameters"]["zero_points"].tolist() == [0], rhs
    xnnpack = result.report["verify"]["resolvers"]["xnnpack"]
    assert xnnpack["ok"], xnnpack
    assert "BATCH_MATMUL" not in xnnpack["delegation"]["builtin"], xnnpack["delegation"]
    assert xnnpack["delegation"]["delegated"].get("BATCH_MATMUL") == 2, xnnpack["delegation"]
    # Verify held XNNPACK to the QDQ simulation (one step); the float model, in ONNX Runtime, is
    # within the int8 error of four roundings in a row (worst of 20 samples: cosine 0.997).
    for feed in random_feeds(model, 4, seed=5):
        (expected,) = run_ort(model, feed)
        (got,) = run(interpreter(result.artifact.data), feed, [expected.shape])
        assert cosine(got, expected) > 0.99
