"""Indexing and data-movement ops lowered to TFLite (``backends/_tflite_ops_index.py``).

float: the float pipeline written by the tflite emitter, run in LiteRT under both resolvers and
compared with ONNX Runtime on the ONNX model (integer outputs stay integer). int8: the ops that
share their input's parameters (Tile, DepthToSpace, SpaceToDepth, GatherND, GatherElements,
Compress, CenterCropPad, Trilu) after a Conv, checked by ``verify()`` against the ORT simulation
on both resolvers and shown to move int8 tensors. Refusals name their reason.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import qcc
from qcc import optable
from qcc.annotations import Decision, set_decision
from qcc.backends._tflite_litert import interpreter, run
from qcc.backends._tflite_ops_window import unsupported
from qcc.errors import QccError
from tests.backends.test_tflite_ops import float_tflite
from tests.conftest import build_model, random_feeds
from tests.conftest import run as run_ort

_RNG = np.random.default_rng(7)


def _head(opset: int) -> str:
    return f'<ir_version: 8, opset_import: ["" : {opset}]>\n'


def _x(*shape) -> np.ndarray:
    return _RNG.normal(0, 1, shape).astype(np.float32)


# name -> (opset, graph text, feed). A Relu in front keeps a float tensor in integer-output models.
FLOAT_CASES = {
    "argmax_keepdims_last": (
        13,
        "g (float[3,4,5] x) => (int64[3,1,5] y) { r = Relu(x)\n y = ArgMax<axis=1, select_last_index=1>(r) }",
        {"x": np.round(_x(3, 4, 5))},
    ),
    "argmin_flat": (
        13,
        "g (float[3,4] x) => (int64[3] y) { r = Relu(x)\n n = Neg(r)\n y = ArgMin<axis=-1, keepdims=0>(n) }",
        {"x": _x(3, 4)},
    ),
    "topk_axis0_smallest": (
        11,
        "g (float[5,3] x, int64[1] k) => (float[2,3] v, int64[2,3] i) { v, i = TopK<axis=0, largest=0>(x, k) }",
        {"x": _x(5, 3), "k": np.array([2], np.int64)},
    ),
    "cumsum_exclusive_reverse": (
        14,
        "g (float[3,4] x) => (float[3,4] y) { y = CumSum<exclusive=1, reverse=1>(x, ax) }",
        {"x": _x(3, 4)},
    ),
    "cumsum_runtime_axis": (
        14,
        "g (float[3,4] x, int32 a) => (float[3,4] y) { y = CumSum(x, a) }",
        {"x": _x(3, 4), "a": np.array(-2, np.int32)},
    ),
    "topk_ties": (
        11,
        "g (float[2,6] x, int64[1] k) => (float[2,4] v, int64[2,4] i) { v, i = TopK<axis=1>(x, k) }",
        {"x": np.array([[1, 3, 3, 1, 2, 3], [0, 0, 0, 0, 1, 1]], np.float32), "k": np.array([4], np.int64)},
    ),
    "one_hot_runtime_depth": (
        11,
        "g (float[4] i, float[1] d, float[2] v) => (float[4,3] y) { y = OneHot(i, d, v) }",
        {"i": np.array([0, 2.7, -1, 5], np.float32), "d": np.array([3], np.float32), "v": np.array([1, 4], np.float32)},
    ),
    "cumprod_int64_runtime_axis": (
        26,
        "g (int64[2,3] x, int64 a, float[2] f) => (int64[2,3] y, float[2] z) { y = CumProd(x, a)\n z = Relu(f) }",
        {"x": np.array([[1, -2, 3], [4, 0, 5]], np.int64), "a": np.array(0, np.int64), "f": _x(2)},
    ),
    "cumprod_axis1": (
        26,
        "g (float[2,5] x) => (float[2,5] y) { y = CumProd(x, ax) }",
        {"x": _x(2, 5)},
    ),
    "gather_elements_runtime": (
        13,
        "g (float[3,4] x, int64[3,2] i) => (float[3,2] y) { y = GatherElements<axis=1>(x, i) }",
        {"x": _x(3, 4), "i": np.array([[0, -1], [2, 3], [-4, 1]], np.int64)},
    ),
    "gathernd_batch_dims": (
        13,
        "g (float[2,3,4] x, int64[2,2,1] i) => (float[2,2,4] y) { y = GatherND<batch_dims=1>(x, i) }",
        {"x": _x(2, 3, 4), "i": np.array([[[2], [0]], [[1], [-1]]], np.int64)},
    ),
    "scatternd_none": (
        18,
        "g (float[4,3] x, int64[2,1] i, float[2,3] u) => (float[4,3] y) { y = ScatterND(x, i, u) }",
        {"x": _x(4, 3), "i": np.array([[3], [1]], np.int64), "u": _x(2, 3)},
    ),
    "scatternd_mul_repeated": (
        18,
        'g (float[4,3] x, int64[3,1] i, float[3,3] u) => (float[4,3] y) { y = ScatterND<reduction="mul">(x, i, u) }',
        {"x": _x(4, 3), "i": np.array([[1], [1], [2]], np.int64), "u": _x(3, 3)},
    ),
    "scatter_elements_add": (
        18,
        "g (float[3,4] x, int64[3,2] i, float[3,2] u) => (float[3,4] y) "
        '{ y = ScatterElements<axis=1, reduction="add">(x, i, u) }',
        {"x": _x(3, 4), "i": np.array([[0, 0], [3, 1], [-1, 2]], np.int64), "u": _x(3, 2)},
    ),
    "tile": (
        13,
        "g (float[2,3] x, int64[2] r) => (float[4,9] y) { y = Tile(x, r) }",
        {"x": _x(2, 3), "r": np.array([2, 3], np.int64)},
    ),
    "depth_to_space_crd": (
        13,
        'g (float[1,8,2,3] x) => (float[1,2,4,6] y) { y = DepthToSpace<blocksize=2, mode="CRD">(x) }',
        {"x": _x(1, 8, 2, 3)},
    ),
    "space_to_depth_crd": (
        28,
        'g (float[1,2,4,6] x) => (float[1,8,2,3] y) { y = SpaceToDepth<blocksize=2, mode="CRD">(x) }',
        {"x": _x(1, 2, 4, 6)},
    ),
    "trilu_rank5": (
        14,
        "g (float[2,1,2,3,4,5] x) => (float[2,1,2,3,4,5] y) { y = Trilu(x) }",
        {"x": _x(2, 1, 2, 3, 4, 5)},
    ),
    "cumprod_rank5_reverse": (
        26,
        "g (float[2,1,3,2,4] x) => (float[2,1,3,2,4] y) { y = CumProd<reverse=1, exclusive=1>(x, ax) }",
        {"x": _x(2, 1, 3, 2, 4)},
    ),
    "scatternd_runtime_rank5": (
        18,
        "g (float[2,3,2,2,2] x, int64[2,3] i, float[2,2,2] u) => (float[2,3,2,2,2] y) "
        '{ y = ScatterND<reduction="max">(x, i, u) }',
        {"x": _x(2, 3, 2, 2, 2), "i": np.array([[1, -1, 0], [1, 2, 0]], np.int64), "u": _x(2, 2, 2)},
    ),
    "scatternd_none_repeated_constant": (
        18,
        "g (float[4,3] x, float[3,3] u) => (float[4,3] y) { y = ScatterND(x, ci, u) }",
        {"x": _x(4, 3), "u": _x(3, 3)},
    ),
    "space_to_depth": (
        13,
        "g (float[1,2,4,6] x) => (float[1,8,2,3] y) { y = SpaceToDepth<blocksize=2>(x) }",
        {"x": _x(1, 2, 4, 6)},
    ),
    "einsum_batch_matmul": (
        12,
        'g (float[2,3,4] p, float[2,4,5] q) => (float[2,3,5] y) { y = Einsum<equation="bij,bjk->bik">(p, q) }',
        {"p": _x(2, 3, 4), "q": _x(2, 4, 5)},
    ),
    "einsum_transposed_contraction": (
        12,
        'g (float[3,4] p, float[5,4,2] q) => (float[2,5,3] y) { y = Einsum<equation="ij,kjl->lki">(p, q) }',
        {"p": _x(3, 4), "q": _x(5, 4, 2)},
    ),
    "einsum_outer": (
        12,
        'g (float[3] p, float[4] q) => (float[3,4] y) { y = Einsum<equation="i,j">(p, q) }',
        {"p": _x(3), "q": _x(4)},
    ),
    "einsum_diagonal_sum": (
        12,
        'g (float[2,3,3] a) => (float[2] y) { y = Einsum<equation="...ii->...">(a) }',
        {"a": _x(2, 3, 3)},
    ),
    "trilu_lower": (
        14,
        "g (float[2,4,5] x, int64 k) => (float[2,4,5] y) { y = Trilu<upper=0>(x, k) }",
        {"x": _x(2, 4, 5), "k": np.array(1, np.int64)},
    ),
    "one_hot_negative": (
        11,
        "g (int64[4] i, float[2] v) => (float[4,5] y) { r = Relu(v)\n y = OneHot<axis=-1>(i, d, r) }",
        {"i": np.array([0, -1, 7, 3], np.int64), "v": np.array([0.5, 2.0], np.float32)},
    ),
    "reverse_sequence": (
        10,
        "g (float[3,4,2] x, int64[4] s) => (float[3,4,2] y) { y = ReverseSequence<batch_axis=1, time_axis=0>(x, s) }",
        {"x": _x(3, 4, 2), "s": np.array([1, 2, 3, 3], np.int64)},
    ),
    "compress_runtime": (
        13,
        "g (float[4,3] x, bool[4] c) => (float[2,3] y) { y = Compress<axis=0>(x, c) }",
        {"x": _x(4, 3), "c": np.array([False, True, False, True])},
    ),
    "center_crop_pad": (
        18,
        "g (float[6,3,2] x) => (float[3,6,2] y) { y = CenterCropPad(x, s) }",
        {"x": _x(6, 3, 2)},
    ),
    "shape_slice_and_size": (
        15,
        "g (float[2,3,4] x) => (int64[2] s, int64 n) { r = Relu(x)\n s = Shape<start=-2>(r)\n n = Size(r) }",
        {"x": _x(2, 3, 4)},
    ),
    "constant_of_shape": (
        9,
        "g (float[2,3] x) => (float[2,3] y) { c = ConstantOfShape<value=float[1] {1.5}>(s)\n y = Add(x, c) }",
        {"x": _x(2, 3)},
    ),
    "unique_sorted": (
        11,
        "g (float[7] x) => (float[5] y, int64[5] i, int64[7] v, int64[5] n) { y, i, v, n = Unique(x) }",
        {"x": np.array([2, 1, 1, 3, 4, 3, -1.5], np.float32)},
    ),
    "unique_first_seen": (
        11,
        "g (float[6] x) => (float[4] y, int64[4] i, int64[6] v, int64[4] n) { y, i, v, n = Unique<sorted=0>(x) }",
        {"x": np.array([2, 1, 1, 3, 4, 3], np.float32)},
    ),
    "unique_rows": (
        11,
        "g (float[4,3] x) => (float[3,3] y, int64[3] i, int64[4] v, int64[3] n) { y, i, v, n = Unique<axis=0>(x) }",
        {"x": np.array([[1, 0, 2], [1, 0, 0], [1, 0, 2], [0, 5, 9]], np.float32)},
    ),
    "nonzero": (
        13,
        "g (float[3,4] x) => (int64[2,5] y) { r = Relu(x)\n y = NonZero(r) }",
        {"x": np.array([[0, 1, 0, 2], [3, 0, 0, 0], [0, 4, 5, 0]], np.float32)},
    ),
    "range_runtime": (
        11,
        "g (float s, float d) => (float[5] y) { l = Add(s, five)\n y = Range(s, l, d) }",
        {"s": np.array(0.5, np.float32), "d": np.array(1.0, np.float32)},
    ),
    "constant_of_shape_runtime": (
        9,
        "g (int64[2] s, float[2] x) => (float[2,3] y, float[2] z) "
        "{ y = ConstantOfShape<value=float[1] {1.5}>(s)\n z = Relu(x) }",
        {"s": np.array([2, 3], np.int64), "x": _x(2)},
    ),
}
# Constant inputs of the cases (initializers).
_CONSTANTS = {
    "cumsum_exclusive_reverse": {"ax": np.array(1, np.int32)},
    "cumprod_axis1": {"ax": np.array(-1, np.int64)},
    "one_hot_negative": {"d": np.array(5, np.int64)},
    "center_crop_pad": {"s": np.array([3, 6, 2], np.int64)},
    "constant_of_shape": {"s": np.array([2, 3], np.int64)},
    "range_runtime": {"five": np.array(5.0, np.float32)},
    "cumprod_rank5_reverse": {"ax": np.array(2, np.int64)},
    "scatternd_none_repeated_constant": {"ci": np.array([[2], [0], [2]], np.int64)},
}


def _model(name: str) -> onnx.ModelProto:
    opset, graph, _ = FLOAT_CASES[name]
    constants = _CONSTANTS.get(name, {})
    if constants:
        types = {np.dtype(np.int32): "int32", np.dtype(np.int64): "int64", np.dtype(np.float32): "float"}
        extra = ", ".join(f"{types[a.dtype]}[{','.join(map(str, a.shape))}] {n}" for n, a in constants.items())
        graph = graph.replace(") =>", f", {extra}) =>", 1)
    return build_model(_head(opset) + graph, constants=constants)


@pytest.mark.parametrize("resolver", ["xnnpack", "builtin"])
@pytest.mark.parametrize("name", sorted(FLOAT_CASES))
def test_float_op_matches_onnxruntime(name, resolver):
    model = _model(name)
    feed = FLOAT_CASES[name][2]
    expected = run_ort(model, feed)
    interp = interpreter(float_tflite(model), resolver)
    got = run(interp, feed, [np.shape(e) for e in expected])
    kinds = [np.dtype(d["dtype"]).kind for d in interp.get_output_details()]
    assert kinds == [np.asarray(e).dtype.kind for e in expected]  # int64 indices stay integer
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(np.asarray(g).reshape(np.shape(e)), e, rtol=1e-5, atol=1e-5)


def test_the_compiled_argmax_after_relu_runs():
    model = _model("argmax_keepdims_last")
    feed = FLOAT_CASES["argmax_keepdims_last"][2]
    result = qcc.compile(model, target="tflite", calibration=[feed])
    got = run(interpreter(result.artifact.data, "builtin"), feed, [(3, 1, 5)])
    np.testing.assert_array_equal(got[0], run_ort(model, feed)[0])


# int8: Conv then the data-movement op, which keeps the Conv output's parameters.
_INT8_CASES = {
    "tile": ("float[1,16,4,8] y", "int64[4] r", "y = Tile(c, r)", {"r": np.array([1, 2, 1, 2], np.int64)}),
    "depth_to_space_crd": ("float[1,2,8,8] y", "", 'y = DepthToSpace<blocksize=2, mode="CRD">(c)', {}),
    "depth_to_space_dcr": ("float[1,2,8,8] y", "", "y = DepthToSpace<blocksize=2>(c)", {}),
    "space_to_depth": ("float[1,32,2,2] y", "", "y = SpaceToDepth<blocksize=2>(c)", {}),
    "gathernd": (
        "float[1,3,4] y",
        "int64[1,3,2] i",
        "y = GatherND<batch_dims=1>(c, i)",
        {"i": np.array([[[0, 1], [7, -1], [2, 2]]], np.int64)},
    ),
    "gather_elements": (
        "float[1,8,4,2] y",
        "int64[1,8,4,2] i",
        "y = GatherElements<axis=3>(c, i)",
        {"i": np.random.default_rng(0).integers(-4, 4, (1, 8, 4, 2))},
    ),
    "compress": ("float[1,3,4,4] y", "bool[8] m", "y = Compress<axis=1>(c, m)", {"m": np.arange(8) % 3 == 0}),
    "center_crop_pad": (
        "float[1,6,6,2] y",
        "int64[3] s",
        "y = CenterCropPad<axes=[1,2,3]>(c, s)",
        {"s": np.array([6, 6, 2])},
    ),
    "trilu": ("float[1,8,4,4] y", "", "y = Trilu<upper=1>(c)", {}),
    "trilu_k": ("float[1,8,4,4] y", "int64 k", "y = Trilu<upper=0>(c, k)", {"k": np.array(1)}),
}


_MOVERS = (
    "TILE",
    "DEPTH_TO_SPACE",
    "SPACE_TO_DEPTH",
    "GATHER_ND",
    "GATHER",
    "SLICE",
    "PAD",
    "SELECT_V2",
)


# Ops whose only data input is input 0 but that compiler/optable.py does not list yet: the plan
# reads their integer inputs (indices, condition, shape, lengths, k) as data and keeps them float.
# The test gives them the entry they need, to check the int8 lowering itself.
_DATA_INPUT_0 = {
    "gathernd": "GatherND",
    "compress": "Compress",
    "center_crop_pad": "CenterCropPad",
    "trilu_k": "Trilu",
}


@pytest.mark.parametrize("name", sorted(_INT8_CASES))
def test_int8_data_movement_matches_the_simulation(name, monkeypatch):
    if name in _DATA_INPUT_0 and _DATA_INPUT_0[name] not in optable.QUANTIZABLE_INPUTS:
        monkeypatch.setitem(optable.QUANTIZABLE_INPUTS, _DATA_INPUT_0[name], (0,))
    out, extra, body, constants = _INT8_CASES[name]
    signature = ", ".join(s for s in ("float[8,8,1,1] w", extra) if s)
    text = f"{_head(18)}g ({signature}, float[1,8,4,4] x) => ({out}) {{\n c = Conv(x, w)\n {body}\n}}\n"
    model = build_model(text, constants=constants)
    result = qcc.compile(model, target="tflite", calibration=random_feeds(model, 8))
    for resolver, entry in result.report["verify"]["resolvers"].items():
        assert entry["ok"], (resolver, entry)
        assert entry["within_one_step"] >= 0.99, (resolver, entry)
    interp = interpreter(result.artifact.data, "builtin")
    ops = interp._get_ops_details()  # noqa: SLF001 - no public op listing
    moving = [op for op in ops if op["op_name"] in _MOVERS]
    assert moving, [op["op_name"] for op in ops]
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    data = [op["inputs"][1 if op["op_name"] == "SELECT_V2" else 0] for op in moving]  # SELECT_V2: mask first
    assert all(tensors[i]["dtype"] == np.int8 for i in data)


@pytest.mark.parametrize(
    ("text", "feed", "message"),
    [
        (
            "g (float[6] x) => (float[N] y, int64[N] i, int64[6] v, int64[N] n) { y, i, v, n = Unique(x) }",
            {"x": np.array([2, 1, 1, 3, 4, 3], np.float32)},
            "output length that depends on the input values",
        ),
        (
            "g (float[2,3,4] p, float[3,4,5] q, float[5] r) => (float[2] y) "
            '{ y = Einsum<equation="ijk,jkl,l->i">(p, q, r) }',
            None,
            "3 operands",
        ),
    ],
)
def test_refusals_name_the_reason(text, feed, message):
    model = onnx.parser.parse_model(_head(12 if "Einsum" in text else 11) + text)
    feed = feed or random_feeds(model, 1)[0]
    with pytest.raises(QccError, match=message) as error:
        qcc.compile(model, target="tflite", calibration=[feed], verify=False)
    # The float node is refused too, so --exclude (which keeps a node float) cannot be the fix.
    assert "--exclude" not in error.value.fix and "onnx.utils.extract_model" in error.value.fix
    assert "compile for ort or trt" in error.value.fix


@pytest.mark.parametrize(
    ("decision", "why", "excludes"),
    [
        (Decision.INT8, "int8 Sum", True),
        (Decision.INT8, "an int8 average pooling of a 3-D window (run it float)", True),
        (Decision.FLOAT, "int8 Sum", False),  # a float node: --exclude changes nothing
        (Decision.INT8, "Resize mode 'cubic'", False),  # the float Resize is refused too
    ],
)
def test_only_an_int8_only_refusal_suggests_exclude(decision, why, excludes):
    x, y = ir.Value(name="x"), ir.Value(name="y")
    node = ir.Node("", "Sum", [x, x], outputs=[y], name="s")
    set_decision(node, decision, "planned")
    fix = unsupported(node, why).fix
    assert ("--exclude" in fix) is excludes
    assert ("onnx.utils.extract_model" in fix) is not excludes
