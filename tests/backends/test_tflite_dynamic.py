"""Dynamic shapes in TFLite artifacts: compiled once, run at other sizes after ``resize_tensor_input``.

Each model has dynamic input dimensions (a batch, an image width, a sequence length) and shape
subgraphs computed from them (Shape -> Gather -> Concat -> Reshape, Range position ids, Expand).
The artifact keeps ``-1`` in those dimensions' ``shape_signature``; it runs in LiteRT under both
resolvers at sizes the calibration never saw, agrees there with qcc's ORT simulation of the same
quantization (within one int8 step) and with ONNX Runtime's float outputs within the int8 error.
``input_shapes`` (``--input-shape``) pins a static artifact instead.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as oh

import qcc
from qcc.backends._tflite_litert import RESOLVERS, interpreter, output_steps, run_all
from qcc.errors import QccError
from qcc.runtime import session
from tests.conftest import run as run_ort

_RNG = np.random.default_rng(7)  # feeds; each model seeds its own weights


def _const(name: str, array) -> onnx.TensorProto:
    return onnx.numpy_helper.from_array(np.asarray(array), name)


_WEIGHTS = [np.random.default_rng(0)]


def _reseed() -> None:
    _WEIGHTS[0] = np.random.default_rng(0)


def _weights(*shape: int, scale: float = 0.3) -> np.ndarray:
    return (_WEIGHTS[0].normal(size=shape) * scale).astype(np.float32)


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = oh.make_graph(nodes, "g", inputs, outputs, inits)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)


def mlp_batch() -> onnx.ModelProto:
    """Gemm -> Relu -> Gemm on [N, 16]: a dynamic batch."""
    _reseed()
    nodes = [
        oh.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
        oh.make_node("Relu", ["h"], ["r"]),
        oh.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1),
    ]
    inits = [_const("w1", _weights(32, 16)), _const("b1", _weights(32)), _const("w2", _weights(8, 32))]
    inits.append(_const("b2", _weights(8)))
    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])
    y = oh.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])
    return _model(nodes, [x], [y], inits)


def conv_width(height: int = 8) -> onnx.ModelProto:
    """Two convolutions (the second strided), then a Reshape to [N, C, H*W'] built from Shape."""
    _reseed()
    nodes = [
        oh.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        oh.make_node("Relu", ["c1"], ["r1"]),
        oh.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        oh.make_node("Relu", ["c2"], ["r2"]),
        oh.make_node("Shape", ["r2"], ["s"]),
        oh.make_node("Gather", ["s", "i01"], ["nc"], axis=0),
        oh.make_node("Concat", ["nc", "minus1"], ["target"], axis=0),
        oh.make_node("Reshape", ["r2", "target"], ["flat"]),
        oh.make_node("Transpose", ["flat"], ["seq"], perm=[0, 2, 1]),
        oh.make_node("MatMul", ["seq", "wf"], ["y"]),
    ]
    inits = [
        _const("w1", _weights(8, 3, 3, 3)),
        _const("b1", _weights(8)),
        _const("w2", _weights(8, 8, 3, 3, scale=0.2)),
        _const("b2", _weights(8)),
        _const("i01", np.array([0, 1], np.int64)),
        _const("minus1", np.array([-1], np.int64)),
        _const("wf", _weights(8, 5)),
    ]
    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, height, "W"])
    y = oh.make_tensor_value_info("y", TensorProto.FLOAT, None)
    return _model(nodes, [x], [y], inits)


def upsample_image() -> onnx.ModelProto:
    """Conv, nearest Resize x2 (CONCATENATION + RESHAPE) and a stride-2 ConvTranspose on a dynamic [N, 3, H, W]."""
    _reseed()
    nodes = [
        oh.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        oh.make_node("Relu", ["c1"], ["r1"]),
        oh.make_node("Resize", ["r1", "", "scales"], ["up"], mode="nearest"),
        oh.make_node("ConvTranspose", ["up", "wt", "bt"], ["y"], strides=[2, 2]),
    ]
    inits = [
        _const("w1", _weights(4, 3, 3, 3)),
        _const("b1", _weights(4)),
        _const("scales", np.array([1, 1, 2, 2], np.float32)),
        _const("wt", _weights(4, 2, 2, 2)),
        _const("bt", _weights(2)),
    ]
    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = oh.make_tensor_value_info("y", TensorProto.FLOAT, None)
    return _model(nodes, [x], [y], inits)


def encoder_sequence() -> onnx.ModelProto:
    """A one-head attention block over a dynamic [B, S] of token ids, as transformer exports write it.

    Token and position embeddings (positions: ``Range(0, Shape(ids)[1])``), a mask ``[B, S]``
    expanded to ``[B, 1, S, S]`` with a shape built from Shape, Q/K/V projections reshaped to
    ``[B, S, H, D]`` by ``Shape -> Gather -> Unsqueeze -> Concat -> Reshape``, softmax attention, and
    the heads merged back by a Reshape to ``[B, S, -1]``.
    """
    _reseed()
    d, heads = 16, 2
    nodes = [
        oh.make_node("Gather", ["table", "ids"], ["tok"], axis=0),
        oh.make_node("Shape", ["ids"], ["ids_shape"]),
        oh.make_node("Gather", ["ids_shape", "zero"], ["batch"], axis=0),
        oh.make_node("Gather", ["ids_shape", "one"], ["length"], axis=0),
        oh.make_node("Range", ["zero", "length", "one"], ["positions"]),
        oh.make_node("Gather", ["pos_table", "positions"], ["pos"], axis=0),
        oh.make_node("Add", ["tok", "pos"], ["h"]),
        # mask [B, S] -> [B, 1, 1, S] -> Expand to [B, 1, S, S] -> additive bias
        oh.make_node("Unsqueeze", ["mask", "axes12"], ["mask4"]),
        oh.make_node("Unsqueeze", ["batch", "axis0"], ["batch1"]),
        oh.make_node("Unsqueeze", ["length", "axis0"], ["length1"]),
        oh.make_node("Concat", ["batch1", "one1", "length1", "length1"], ["mask_shape"], axis=0),
        oh.make_node("Expand", ["mask4", "mask_shape"], ["mask_full"]),
        oh.make_node("Sub", ["one_f", "mask_full"], ["inverted"]),
        oh.make_node("Mul", ["inverted", "big_negative"], ["bias"]),
        # projections, split into heads
        oh.make_node("MatMul", ["h", "wq"], ["q"]),
        oh.make_node("MatMul", ["h", "wk"], ["k"]),
        oh.make_node("MatMul", ["h", "wv"], ["v"]),
        oh.make_node("Concat", ["batch1", "length1", "heads_dims"], ["split_shape"], axis=0),
        oh.make_node("Reshape", ["q", "split_shape"], ["q4"]),
        oh.make_node("Reshape", ["k", "split_shape"], ["k4"]),
        oh.make_node("Reshape", ["v", "split_shape"], ["v4"]),
        oh.make_node("Transpose", ["q4"], ["qh"], perm=[0, 2, 1, 3]),
        oh.make_node("Transpose", ["k4"], ["kh"], perm=[0, 2, 3, 1]),
        oh.make_node("Transpose", ["v4"], ["vh"], perm=[0, 2, 1, 3]),
        oh.make_node("MatMul", ["qh", "kh"], ["scores"]),
        oh.make_node("Mul", ["scores", "inv_sqrt"], ["scaled"]),
        oh.make_node("Add", ["scaled", "bias"], ["masked"]),
        oh.make_node("Softmax", ["masked"], ["weights"], axis=-1),
        oh.make_node("MatMul", ["weights", "vh"], ["context"]),
        oh.make_node("Transpose", ["context"], ["merged"], perm=[0, 2, 1, 3]),
        oh.make_node("Concat", ["batch1", "length1", "minus1"], ["merge_shape"], axis=0),
        oh.make_node("Reshape", ["merged", "merge_shape"], ["attended"]),
        oh.make_node("MatMul", ["attended", "wo"], ["out"]),
        oh.make_node("Add", ["out", "h"], ["y"]),
    ]
    inits = [
        _const("table", _weights(50, d, scale=1.0)),
        _const("pos_table", _weights(64, d, scale=0.5)),
        _const("zero", np.array(0, np.int64)),
        _const("one", np.array(1, np.int64)),
        _const("axis0", np.array([0], np.int64)),
        _const("axes12", np.array([1, 2], np.int64)),
        _const("one1", np.array([1], np.int64)),
        _const("minus1", np.array([-1], np.int64)),
        _const("heads_dims", np.array([heads, d // heads], np.int64)),
        _const("one_f", np.array(1.0, np.float32)),
        _const("big_negative", np.array(-8.0, np.float32)),
        _const("inv_sqrt", np.array(1 / np.sqrt(d // heads), np.float32)),
        *(_const(name, _weights(d, d)) for name in ("wq", "wk", "wv", "wo")),
    ]
    ids = oh.make_tensor_value_info("ids", TensorProto.INT64, ["B", "S"])
    mask = oh.make_tensor_value_info("mask", TensorProto.FLOAT, ["B", "S"])
    y = oh.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "S", d])
    return _model(nodes, [ids, mask], [y], inits)


def _images(shapes) -> list[dict[str, np.ndarray]]:
    return [{"x": _RNG.normal(size=s).astype(np.float32)} for s in shapes]


def _tokens(shapes) -> list[dict[str, np.ndarray]]:
    feeds = []
    for b, s in shapes:
        mask = np.ones((b, s), np.float32)
        mask[:, s - 1 :] = 0.0  # a padded last position
        feeds.append({"ids": _RNG.integers(0, 50, size=(b, s)).astype(np.int64), "mask": mask})
    return feeds


CASES = {
    # name: (model, calibration shapes, shapes the artifact runs at, feed builder, expected signature)
    "batch": (mlp_batch, [(1, 16), (16, 16)], [(1, 16), (3, 16), (7, 16)], _images, {"x": [-1, 16]}),
    "width": (
        conv_width,
        [(1, 3, 8, 16), (2, 3, 8, 24)],
        [(1, 3, 8, 16), (1, 3, 8, 40), (2, 3, 8, 12)],
        _images,
        {"x": [-1, 3, 8, -1]},
    ),
    # Odd sizes: TF SAME equals the stride-2 pads (1, 1) there but not at even widths.
    "width_odd": (
        lambda: conv_width(height=9),
        [(1, 3, 9, 17), (2, 3, 9, 23)],
        [(1, 3, 9, 17), (1, 3, 9, 40), (2, 3, 9, 13)],
        _images,
        {"x": [-1, 3, 9, -1]},
    ),
    "upsample": (
        upsample_image,
        [(1, 3, 6, 8), (2, 3, 5, 7)],
        [(1, 3, 6, 8), (1, 3, 9, 4), (3, 3, 7, 11)],
        _images,
        {"x": [-1, 3, -1, -1]},
    ),
    "sequence": (encoder_sequence, [(1, 6), (4, 9)], [(1, 6), (1, 17), (3, 4)], _tokens, {"ids": [-1, -1]}),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def compiled(request):
    build, calibration, shapes, feeds, signature = CASES[request.param]
    model = build()
    result = qcc.compile(model, target="tflite", calibration=feeds(calibration), tolerance=None)
    return model, result, feeds(shapes), signature


def _cosine(got: np.ndarray, want: np.ndarray) -> float:
    got, want = got.astype(np.float64).ravel(), want.astype(np.float64).ravel()
    return float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want) + 1e-12))


def test_dynamic_dims_are_minus_one_in_the_signature(compiled):
    _, result, _, signature = compiled
    details = interpreter(result.artifact.data).get_input_details()
    assert {d["name"]: list(d["shape_signature"]) for d in details if d["name"] in signature} == signature
    shapes = result.report["verify"]["shapes"]
    assert shapes["dynamic"], shapes
    assert result.report["verify"]["samples_skipped"] == 0


@pytest.mark.parametrize("resolver", sorted(RESOLVERS))
def test_runs_at_other_sizes_and_matches_onnx_runtime(compiled, resolver):
    """At every size: the simulation's int8 outputs within one step, the float model's within int8 error."""
    model, result, feeds, _ = compiled
    floats = [run_ort(model, feed) for feed in feeds]
    simulation = session(result.artifact.simulation, level="disable")  # as verify() runs it: an exact oracle
    simulated = [simulation.run(None, feed) for feed in feeds]
    steps = output_steps(result.artifact.simulation)
    got = run_all(interpreter(result.artifact.data, resolver), feeds, [[o.shape for o in f] for f in floats])
    for outputs, float_outputs, sim_outputs in zip(got, floats, simulated, strict=True):
        for g, f, q, step in zip(outputs, float_outputs, sim_outputs, steps, strict=True):
            assert g.shape == f.shape
            within = np.mean(np.abs(g - q) <= step * 1.001 + 1e-7) if step is not None else 1.0
            assert within >= 0.98, within
            assert _cosine(g, f) >= 0.97, _cosine(g, f)


def test_input_shape_pins_a_static_artifact():
    model = conv_width()
    feeds = _images([(1, 3, 8, 16), (1, 3, 8, 24)])
    result = qcc.compile(model, target="tflite", calibration=feeds, tolerance=None, input_shapes={"x": (1, 3, 8, 24)})
    (detail,) = interpreter(result.artifact.data).get_input_details()
    assert list(detail["shape"]) == [1, 3, 8, 24] and list(detail["shape_signature"]) == [1, 3, 8, 24]
    verify = result.report["verify"]
    assert not verify["shapes"]["dynamic"] and verify["samples"] == 1 and verify["samples_skipped"] == 1
    ops = {op["op_name"] for op in interpreter(result.artifact.data)._get_ops_details()}  # noqa: SLF001
    assert "SHAPE" not in ops  # a static artifact folds its shape subgraph


@pytest.mark.parametrize(
    ("shapes", "message"),
    [({"y": (1, 3, 8, 16)}, "not an input"), ({"x": (1, 3, 9, 16)}, "does not fit"), ({"x": (1, 0)}, "positive")],
)
def test_a_wrong_input_shape_is_refused(shapes, message):
    with pytest.raises(QccError, match=message):
        qcc.compile(conv_width(), target="tflite", calibration=_images([(1, 3, 8, 16)]), input_shapes=shapes)


@pytest.mark.parametrize("dim", ["named", "minus_one", "unknown"])
def test_every_kind_of_dynamic_batch_is_dynamic(dim):
    """A ``dim_param``, a ``dim_value`` of -1 (Paddle's exporter) and an unknown dimension are all dynamic."""
    model = mlp_batch()
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    if dim != "named":
        batch.Clear()
        if dim == "minus_one":
            batch.dim_value = -1
    result = qcc.compile(model, target="tflite", calibration=_images([(2, 16)]), tolerance=None)
    (detail,) = interpreter(result.artifact.data).get_input_details()
    assert list(detail["shape"]) == [2, 16] and list(detail["shape_signature"]) == [-1, 16]


def test_sizes_the_model_cannot_take_are_probed_quietly(caplog):
    """A stride-2 Conv upsampled back and concatenated with its input (a U-Net or YOLO neck) takes
    only even sizes. Probing the odd ones fails ONNX shape inference, which onnx-ir logs as a
    warning with its traceback; that is not the user's problem and must not reach their console."""
    _reseed()
    nodes = [
        oh.make_node("Conv", ["x", "w1", "b1"], ["down"], strides=[2, 2], pads=[1, 1, 1, 1]),
        oh.make_node("Resize", ["down", "", "scales"], ["up"], mode="nearest"),
        oh.make_node("Concat", ["x", "up"], ["y"], axis=1),
    ]
    inits = [
        _const("w1", _weights(3, 3, 3, 3)),
        _const("b1", _weights(3)),
        _const("scales", np.array([1, 1, 2, 2], np.float32)),
    ]
    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = oh.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = _model(nodes, [x], [y], inits)
    with caplog.at_level("WARNING"):
        result = qcc.compile(model, target="tflite", calibration=_images([(1, 3, 8, 8)]), tolerance=None)
    assert not [r for r in caplog.records if r.name.startswith("onnx_ir")], caplog.text
    assert result.report["verify"]["ok"]
