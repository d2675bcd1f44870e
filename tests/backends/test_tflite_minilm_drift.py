"""An additive attention mask calibrated without padding must still mask padded tokens in int8.

MiniLM's mask is ``Where(keep, 0, -inf)`` added to the attention scores. Its calibration samples
are unpadded, so the mask calibrates to all zeros; the parameters of ``[0, 0]`` (scale 1 at zero
point -128) have no negative value, and a padded token's -inf became 0.0 in the int8 tensor: the
padding was attended to (zoo eval, padded batches: embedding cosine 0.90). ``activation-qparams``
now extends such a mask's range to ``-2 x`` the width of its reader's output range.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

import qcc
from qcc.backends._tflite_litert import RESOLVERS, interpreter, run
from qcc.passes.activation_qparams import mask_values

_SEQ, _DIM = 6, 8


def _attention() -> onnx.ModelProto:
    """One attention head with a BERT-style additive mask built from an int64 attention mask.

    The scores come from a weight (``s = q @ wks``, as if the keys were fixed): on ``tflite`` a
    MatMul of two activations runs float (``TfliteSpec.float_reason``), and the mask's int8 Add
    needs an int8 score to read.
    """
    rng = np.random.default_rng(0)
    weights = {name: rng.normal(0, 0.5, (_DIM, _DIM)).astype(np.float32) for name in ("wq", "wv")}
    weights["wks"] = rng.normal(0, 0.5, (_DIM, _SEQ)).astype(np.float32)
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    attention (float[1,{_SEQ},{_DIM}] x, int64[1,{_SEQ}] m) => (float[1,{_SEQ},{_DIM}] y)
    <float[{_DIM},{_DIM}] wq, float[{_DIM},{_SEQ}] wks, float[{_DIM},{_DIM}] wv, float[1] zero, float[1] fill,
     int64[1] axis>
    {{
        q = MatMul(x, wq)
        v = MatMul(x, wv)
        s = MatMul(q, wks)
        keep = Cast<to=9>(m)
        keep3 = Unsqueeze(keep, axis)
        bias = Where(keep3, zero, fill)
        a = Add(s, bias)
        p = Softmax<axis=-1>(a)
        y = MatMul(p, v)
    }}
    """
    model = onnx.parser.parse_model(text)
    constants = {**weights, "zero": np.zeros(1, np.float32), "fill": np.full(1, -np.inf, np.float32)}
    constants["axis"] = np.array([1], np.int64)
    model.graph.initializer.extend(onnx.numpy_helper.from_array(a, n) for n, a in constants.items())
    return model


def _feed(rng: np.random.Generator, length: int) -> dict[str, np.ndarray]:
    mask = (np.arange(_SEQ) < length).astype(np.int64)[None]
    return {"x": rng.normal(0, 1, (1, _SEQ, _DIM)).astype(np.float32), "m": mask}


def test_mask_values_follow_the_fill_through_moves_not_sums():
    model = ir.serde.deserialize_model(_attention())
    assert mask_values(model.graph) == {"bias": -1}


@pytest.fixture(scope="module")
def compiled():
    rng = np.random.default_rng(1)
    model = _attention()
    calibration = [_feed(rng, _SEQ) for _ in range(8)]  # unpadded, like the zoo's calibration
    result = qcc.compile(model, target="tflite", calibration=calibration, tolerance=None, refit=False)
    return model, result


def test_mask_keeps_a_negative_range(compiled):
    _, result = compiled
    params = result.report["tensors"]["bias"]
    # [-R, 0]: 0 exact at the top of the int8 range, and a step far below it.
    assert params["zero_point"] == 127
    assert params["scale"] > 0.01
    assert {n["op_type"]: n["decision"] for n in result.report["nodes"]}["Add"] == "int8"


@pytest.mark.parametrize("resolver", sorted(RESOLVERS))
def test_padded_tokens_stay_masked(compiled, resolver):
    model, result = compiled
    rng = np.random.default_rng(2)
    feeds = [_feed(rng, length) for length in (2, 3, 4)]
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    simulation = ort.InferenceSession(
        result.artifact.simulation.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    interp = interpreter(result.artifact.data, resolver)
    for feed in feeds:
        expected = reference.run(None, feed)[0].ravel().astype(np.float64)
        for got in (run(interp, feed)[0], simulation.run(None, feed)[0]):
            got = got.ravel().astype(np.float64)
            cosine = got @ expected / np.linalg.norm(got) / np.linalg.norm(expected)
            # Attending to the padding (the old all-zero mask parameters) gave 0.40-0.88 here. A masked
            # score sits at the Add's output minimum, not at -inf: a row whose real scores all lie
            # near that minimum still leaks some weight to the padding (0.97 at worst here).
            assert cosine > 0.95, cosine


def _attention_nan_guard() -> onnx.ModelProto:
    """Attention whose int8 Softmax is read by a float ``Where(IsNaN(p), 0, p)``, as in MiniLM."""
    rng = np.random.default_rng(3)
    weights = {name: rng.normal(0, 0.5, (_DIM, _DIM)).astype(np.float32) for name in ("wq", "wk", "wv")}
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    guarded (float[1,{_SEQ},{_DIM}] x) => (float[1,{_SEQ},{_DIM}] y)
    <float[{_DIM},{_DIM}] wq, float[{_DIM},{_DIM}] wk, float[{_DIM},{_DIM}] wv, float[1] zero>
    {{
        q = MatMul(x, wq)
        k = MatMul(x, wk)
        v = MatMul(x, wv)
        kt = Transpose<perm=[0,2,1]>(k)
        s = MatMul(q, kt)
        p = Softmax<axis=-1>(s)
        nan = IsNaN(p)
        kept = Where(nan, zero, p)
        y = MatMul(kept, v)
    }}
    """
    model = onnx.parser.parse_model(text)
    constants = {**weights, "zero": np.zeros(1, np.float32)}
    model.graph.initializer.extend(onnx.numpy_helper.from_array(a, n) for n, a in constants.items())
    return model


def test_softmax_read_only_in_float_runs_float():
    """MiniLM's Softmax sits between float attention products (XNNPACK takes no int8 BATCH_MATMUL
    with an asymmetric rhs) and a float ``Where(IsNaN(p), 0, p)``: it runs float, and XNNPACK
    matches the simulation.

    Before, the int8 Softmax was read rounded by the float Where (4.4% of the output differed from
    the simulation when it was read unrounded).
    """
    rng = np.random.default_rng(4)
    feeds = [{"x": rng.normal(0, 1, (1, _SEQ, _DIM)).astype(np.float32)} for _ in range(8)]
    result = qcc.compile(_attention_nan_guard(), target="tflite", calibration=feeds, tolerance=None, refit=False)
    decisions = {n["op_type"]: n["decision"] for n in result.report["nodes"] if n["op_type"] != "MatMul"}
    assert decisions["Softmax"] == "float"
    step = result.report["tensors"]["v"]["scale"]  # the int8 values the float attention reads
    simulation = ort.InferenceSession(
        result.artifact.simulation.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    interp = interpreter(result.artifact.data, "xnnpack")
    diffs = np.concatenate([np.abs(run(interp, f)[0] - simulation.run(None, f)[0]).ravel() / step for f in feeds])
    assert np.mean(diffs < 0.5) >= 0.98, np.mean(diffs < 0.5)
