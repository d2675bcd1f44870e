"""``qcc.inspection`` on real artifacts: qcc's own (ort, trt, tflite), ONNX Runtime's quantize_static
output (QDQ and QOperator), a hand-built ModelOpt-style graph and files that are not models."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console

import qcc
from qcc.backends._tflite_litert import interpreter
from qcc.errors import ModelLoadError
from qcc.inspection import inspect_artifact, is_quantized_artifact, render_inspection
from qcc.runtime import session
from tests.conftest import random_feeds

QDQ = ("QuantizeLinear", "DequantizeLinear")


def _float_model() -> onnx.ModelProto:
    """Conv(3->16) -> Relu -> Reshape -> MatMul(576->16), batch 2: every target quantizes all of it
    (trt keeps a Conv with few channels, a tiny GEMM or a GEMV float)."""
    rng = np.random.default_rng(0)
    initializers = {
        "w": rng.normal(0, 0.3, (16, 3, 3, 3)).astype(np.float32),
        "b": rng.normal(0, 0.1, (16,)).astype(np.float32),
        "shape": np.array([2, -1], np.int64),
        "wm": rng.normal(0, 0.05, (576, 16)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "shape"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "wm"], ["y"], name="matmul"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 16])],
        [numpy_helper.from_array(a, n) for n, a in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def float_model() -> onnx.ModelProto:
    return _float_model()


@pytest.fixture(scope="module")
def float_path(float_model, tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("float") / "float.onnx")
    onnx.save(float_model, path)
    return path


def _by_name(info: dict) -> dict[str, dict]:
    return {node["name"]: node for node in info["nodes"]}


def _constant(model: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


def _assert_params_match_qdq_nodes(info: dict, model: onnx.ModelProto) -> None:
    """Every Q/DQ's integer tensor is listed with exactly its node's scale and zero point."""
    for node in model.graph.node:
        if node.op_type not in QDQ:
            continue
        tensor = info["tensors"][node.output[0] if node.op_type == "QuantizeLinear" else node.input[0]]
        np.testing.assert_array_equal(np.float32(tensor["scale"]), _constant(model, node.input[1]))
        np.testing.assert_array_equal(tensor["zero_point"], _constant(model, node.input[2]))
        scale_is_vector = _constant(model, node.input[1]).ndim == 1
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        assert tensor["axis"] == (axis if scale_is_vector else None)


@pytest.mark.parametrize("target", ["ort", "trt"])
def test_qcc_onnx_artifact_precision_and_scales_match_the_compile(target, float_model, tmp_path):
    result = qcc.compile(float_model, target=target, calibration=random_feeds(float_model, 8, batch=2))
    path = tmp_path / "model.int8.onnx"
    result.save(path)
    assert is_quantized_artifact(path)
    info = inspect_artifact(path)
    assert info["schema_version"] == 1 and info["kind"] == "qdq-onnx"
    nodes = _by_name(info)
    present = [n for n in result.report["nodes"] if n["name"] in nodes]
    # A Relu fused into its Conv is gone from the ort artifact and kept (and fused) in trt's.
    assert [n["name"] for n in present] == (
        ["conv", "flatten", "matmul"] if target == "ort" else ["conv", "relu", "flatten", "matmul"]
    )
    for planned in present:
        expected = "int8" if planned["decision"] in ("int8", "fused") else "float"
        assert nodes[planned["name"]]["precision"] == expected, (planned, nodes[planned["name"]])
    assert info["totals"]["int8"] == sum(n["decision"] in ("int8", "fused") for n in present) >= 3
    assert info["totals"]["float"] == 0
    assert info["totals"]["conversion"] == sum(n.op_type in QDQ for n in result.model.graph.node)
    if target == "trt":
        assert "fused into 'conv'" in nodes["relu"]["why"] and "float output" in nodes["matmul"]["why"]
    _assert_params_match_qdq_nodes(info, result.model)
    assert info["tensors"]["w_quantized"]["axis"] == 0 and len(info["tensors"]["w_quantized"]["scale"]) == 16


def test_qcc_onnx_artifact_names_the_float_node_and_why(float_model, tmp_path):
    result = qcc.compile(
        float_model, target="ort", calibration=random_feeds(float_model, 8, batch=2), exclude=["matmul"]
    )
    result.save(tmp_path / "m.onnx")
    info = inspect_artifact(tmp_path / "m.onnx")
    assert _by_name(info)["matmul"] == {
        "name": "matmul",
        "op": "MatMul",
        "precision": "float",
        "why": "weight 'wm' is float",
    }
    assert info["totals"]["int8"] == result.report["totals"]["int8"] == 2
    assert info["totals"]["by_op"]["MatMul"] == {"float": 1}


@pytest.mark.parametrize(
    ("options", "kind", "matmul"),
    [
        ({"precision": "int4"}, "qdq-onnx", {"name": "matmul", "precision": "weight-only"}),
        ({"dynamic": True}, "qoperator-onnx", {"op": "MatMulInteger", "precision": "int8"}),
    ],
)
def test_qcc_weight_only_and_dynamic_artifacts(options, kind, matmul, float_model, tmp_path):
    result = qcc.compile(float_model, target="ort", **options)
    result.save(tmp_path / "m.onnx")
    info = inspect_artifact(tmp_path / "m.onnx")
    assert info["kind"] == kind
    (node,) = [n for n in info["nodes"] if all(n[k] == v for k, v in matmul.items())]
    planned = result.report["totals"]["by_op"]["MatMul"]
    assert planned == {node["precision"]: 1}
    for name in ("conv", "relu", "flatten"):
        assert _by_name(info)[name]["precision"] == "float"
    if "dynamic" in options:
        (dynamic,) = [t for t in info["tensors"].values() if t.get("dynamic")]
        assert dynamic["scale"] is None and dynamic["float"] == "f"
    else:
        assert node["why"] == "int4 weight 'wm_quantized' dequantized in the kernel; input 'f' is float"
        tensor = info["tensors"]["wm_quantized"]
        assert tensor["dtype"] == "int4" and tensor["axis"] == 0 and tensor["block_size"] == 64
        np.testing.assert_array_equal(np.float32(tensor["scale"]), _constant(result.model, "wm_scale"))
        console = Console(record=True, width=160)
        render_inspection(info, console)  # blocked scales render too
        text = console.export_text()
        assert "float nodes (4, 1 of them weight-only):" in text and "144 values" in text


@pytest.mark.parametrize("exclude", [(), ("matmul",)])
def test_qcc_tflite_artifact_precision_and_scales_match_litert(exclude, float_model, tmp_path):
    result = qcc.compile(
        float_model, target="tflite", calibration=random_feeds(float_model, 8, batch=2), exclude=list(exclude)
    )
    path = tmp_path / "model.tflite"
    result.save(path)
    assert is_quantized_artifact(path)
    info = inspect_artifact(path)
    assert info["kind"] == "tflite"
    by_op = info["totals"]["by_op"]
    assert by_op["CONV_2D"] == {"int8": 1} and by_op["RESHAPE"] == {"int8": 1}
    assert by_op["FULLY_CONNECTED"] == ({"float": 1} if exclude else {"int8": 1})
    assert by_op["QUANTIZE"] == by_op["DEQUANTIZE"] == {"conversion": 1}
    # The layout TRANSPOSEs (NCHW <-> NHWC) are the tflite backend's own; the rest are the report's nodes.
    layout = by_op["TRANSPOSE"]["int8"]
    assert info["totals"]["int8"] - layout == result.report["totals"]["int8"]
    assert info["totals"]["float"] == result.report["totals"]["float"]
    if exclude:
        (fc,) = [n for n in info["nodes"] if n["op"] == "FULLY_CONNECTED"]
        assert fc["why"].startswith("input ") and fc["why"].endswith("is float32")
    details = [
        d for d in interpreter(path.read_bytes()).get_tensor_details() if len(d["quantization_parameters"]["scales"])
    ]
    assert {d["name"] for d in details} == set(info["tensors"])
    for detail in details:
        tensor, params = info["tensors"][detail["name"]], detail["quantization_parameters"]
        np.testing.assert_array_equal(np.atleast_1d(np.float32(tensor["scale"])), params["scales"])
        np.testing.assert_array_equal(np.atleast_1d(tensor["zero_point"]), params["zero_points"])
        assert tensor["dtype"] == np.dtype(detail["dtype"]).name
        per_channel = len(params["scales"]) > 1
        assert tensor["axis"] == (params["quantized_dimension"] if per_channel else None)


class _Reader:
    """An ONNX Runtime CalibrationDataReader over a few random feeds."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.feeds = iter(random_feeds(model, 4, batch=2))

    def get_next(self):
        return next(self.feeds, None)


@pytest.mark.parametrize(("quant_format", "activations"), [("QDQ", "int8"), ("QOperator", "int8"), ("QDQ", "int16")])
def test_onnxruntime_quantize_static_output(quant_format, activations, float_model, float_path, tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    reader = type("Reader", (_Reader, CalibrationDataReader), {})(float_model)
    path = str(tmp_path / f"{quant_format}.onnx")
    activation_type = QuantType.QInt16 if activations == "int16" else QuantType.QInt8
    quantize_static(
        float_path,
        path,
        reader,
        quant_format=getattr(QuantFormat, quant_format),
        per_channel=True,
        activation_type=activation_type,
    )
    model = onnx.load(path)
    assert is_quantized_artifact(path)
    info = inspect_artifact(path)
    ops = {n.name: n.op_type for n in model.graph.node}
    precision = {n["name"]: n["precision"] for n in info["nodes"]}
    compute = [name for name, op in ops.items() if op not in QDQ]
    assert all(precision[name] == activations for name in compute) and len(compute) == 3
    assert info["totals"][activations] == 3 and info["totals"]["float"] == 0
    if quant_format == "QDQ":
        assert info["kind"] == "qdq-onnx"
        _assert_params_match_qdq_nodes(info, model)
        return
    assert info["kind"] == "qoperator-onnx"
    assert sorted(ops.values()) == ["DequantizeLinear", "QLinearConv", "QLinearMatMul", "QuantizeLinear", "Reshape"]
    (conv,) = [n for n in model.graph.node if n.op_type == "QLinearConv"]
    (matmul,) = [n for n in model.graph.node if n.op_type == "QLinearMatMul"]
    for node, triples in ((conv, [(0, 1, 2), (3, 4, 5)]), (matmul, [(0, 1, 2), (3, 4, 5), (None, 6, 7)])):
        for tensor, scale, zero_point in triples:
            entry = info["tensors"][node.output[0] if tensor is None else node.input[tensor]]
            np.testing.assert_array_equal(np.float32(entry["scale"]), _constant(model, node.input[scale]))
            np.testing.assert_array_equal(entry["zero_point"], _constant(model, node.input[zero_point]))
    assert info["tensors"][conv.input[3]]["axis"] == 0 and info["tensors"][matmul.input[3]]["axis"] == 1
    # The Reshape moves the QLinearConv's integers as they are.
    assert info["tensors"][conv.output[0]]["scale"] == info["tensors"][matmul.input[0]]["scale"]


def _modelopt_style() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """What ModelOpt exports for TensorRT: symmetric int8 Q/DQ pairs on activations, DQ on int8
    weight initializers (per channel, axis 0), Q/DQ only on layer inputs, a residual Add whose skip
    input is quantized, a pooling layer with a float output, float Softmax at the end."""
    rng = np.random.default_rng(3)
    consts: dict[str, np.ndarray] = {}

    def q_dq(name: str, scale: float) -> list[onnx.NodeProto]:
        consts[f"{name}_scale"] = np.float32(scale)
        consts[f"{name}_zp"] = np.int8(0)
        return [
            helper.make_node("QuantizeLinear", [name, f"{name}_scale", f"{name}_zp"], [f"{name}_q"], name=f"{name}_Q"),
            helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_scale", f"{name}_zp"], [f"{name}_dq"],
                             name=f"{name}_DQ"),
        ]  # fmt: skip

    def weight(name: str, shape: tuple[int, ...]) -> onnx.NodeProto:
        w = rng.normal(0, 0.1, shape).astype(np.float32)
        scale = np.abs(w).reshape(shape[0], -1).max(axis=1) / 127
        consts[f"{name}_int8"] = np.clip(np.rint(w / scale.reshape(-1, *[1] * (len(shape) - 1))), -127, 127).astype(
            np.int8
        )
        consts[f"{name}_scale"], consts[f"{name}_zp"] = scale.astype(np.float32), np.zeros(shape[0], np.int8)
        return helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale", f"{name}_zp"], [f"{name}_dq"],
                                name=f"{name}_DQ", axis=0)  # fmt: skip

    consts["b1"] = rng.normal(0, 0.1, 16).astype(np.float32)
    consts["bg"] = rng.normal(0, 0.1, 10).astype(np.float32)
    nodes = [
        *q_dq("x", 0.03),
        weight("w1", (16, 16, 3, 3)),
        helper.make_node("Conv", ["x_dq", "w1_dq", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        *q_dq("r1", 0.02),
        weight("w2", (16, 16, 3, 3)),
        helper.make_node("Conv", ["r1_dq", "w2_dq"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "x_dq"], ["s"], name="residual"),
        helper.make_node("Relu", ["s"], ["r2"], name="relu2"),
        *q_dq("r2", 0.02),
        helper.make_node("GlobalAveragePool", ["r2_dq"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        *q_dq("f", 0.01),
        weight("wg", (10, 16)),
        helper.make_node("Gemm", ["f_dq", "wg_dq", "bg"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax"),
    ]
    graph = helper.make_graph(
        nodes,
        "modelopt_style",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model, consts


def test_modelopt_style_qdq_graph(tmp_path):
    model, consts = _modelopt_style()
    (y,) = session(model).run(None, {"x": np.random.default_rng(0).normal(0, 1, (1, 16, 8, 8)).astype(np.float32)})
    assert np.isclose(y.sum(), 1.0, atol=1e-5)  # a valid graph ONNX Runtime runs
    path = tmp_path / "modelopt.onnx"
    onnx.save(model, path)
    assert is_quantized_artifact(path)
    info = inspect_artifact(path)
    assert info["kind"] == "qdq-onnx"
    precision = {n["name"]: n["precision"] for n in info["nodes"] if n["op"] not in QDQ}
    assert precision == {
        "conv1": "int8",
        "relu1": "int8",
        "conv2": "int8",
        "residual": "int8",
        "relu2": "int8",
        "pool": "int8",
        "flatten": "float",
        "fc": "int8",
        "softmax": "float",
    }
    nodes = _by_name(info)
    assert nodes["residual"]["why"] == "fused into 'conv2' (the epilogue of its int8 kernel)"
    assert nodes["relu2"]["why"] == nodes["residual"]["why"]
    assert nodes["pool"]["why"].startswith("int8 inputs, float output (TensorRT runs it int8")
    assert nodes["flatten"]["why"] == "input 'p' is float" and nodes["softmax"]["why"] == "input 'logits' is float"
    assert info["totals"]["int8"] == 7 and info["totals"]["conversion"] == 11 and info["totals"]["float"] == 2
    for name in ("w1", "w2", "wg"):
        tensor = info["tensors"][f"{name}_int8"]
        assert tensor["dtype"] == "int8" and tensor["axis"] == 0 and tensor["float"] == f"{name}_dq"
        np.testing.assert_array_equal(np.float32(tensor["scale"]), consts[f"{name}_scale"])
        assert tensor["zero_point"] == [0] * len(consts[f"{name}_scale"])
    for name in ("x", "r1", "r2", "f"):
        assert info["tensors"][f"{name}_q"] == {
            "dtype": "int8",
            "scale": float(consts[f"{name}_scale"]),
            "zero_point": 0,
            "axis": None,
            "float": name,
        }


def test_nodes_inside_control_flow_are_inspected(tmp_path):
    rng = np.random.default_rng(2)
    then_branch = helper.make_graph(
        [
            helper.make_node("DequantizeLinear", ["w_int8", "w_scale"], ["w_dq"], name="w_DQ", axis=1),
            helper.make_node("MatMul", ["x_dq", "w_dq"], ["m"], name="mm"),
            helper.make_node("QuantizeLinear", ["m", "m_scale", "m_zp"], ["m_q"], name="m_Q"),
            helper.make_node("DequantizeLinear", ["m_q", "m_scale", "m_zp"], ["then_y"], name="m_DQ"),
        ],
        "then",
        [],
        [helper.make_tensor_value_info("then_y", TensorProto.FLOAT, [1, 4])],
        [
            numpy_helper.from_array(rng.integers(-127, 128, (4, 4)).astype(np.int8), "w_int8"),
            numpy_helper.from_array(np.full(4, 0.01, np.float32), "w_scale"),
        ],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Sigmoid", ["x_dq"], ["else_y"], name="sigmoid")],
        "else",
        [],
        [helper.make_tensor_value_info("else_y", TensorProto.FLOAT, [1, 4])],
    )
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="x_Q"),
            helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], name="x_DQ"),
            helper.make_node("If", ["cond"], ["b"], name="branch", then_branch=then_branch, else_branch=else_branch),
            helper.make_node("Relu", ["b"], ["y"], name="relu"),
        ],
        "control_flow",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [
            numpy_helper.from_array(np.float32(0.02), "x_scale"),
            numpy_helper.from_array(np.int8(0), "x_zp"),
            numpy_helper.from_array(np.float32(0.05), "m_scale"),
            numpy_helper.from_array(np.int8(0), "m_zp"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    for cond in (True, False):
        session(model).run(None, {"x": np.ones((1, 4), np.float32), "cond": np.array(cond)})
    onnx.save(model, tmp_path / "if.onnx")
    assert is_quantized_artifact(tmp_path / "if.onnx")
    info = inspect_artifact(tmp_path / "if.onnx")
    precision = {n["name"]: n["precision"] for n in info["nodes"]}
    assert precision == {
        "x_Q": "conversion",
        "x_DQ": "conversion",
        "branch": "shape",
        "branch/then_branch/w_DQ": "conversion",
        "branch/then_branch/mm": "int8",
        "branch/then_branch/m_Q": "conversion",
        "branch/then_branch/m_DQ": "conversion",
        "branch/else_branch/sigmoid": "float",
        "relu": "float",
    }
    assert _by_name(info)["relu"]["why"] == "input 'b' is float"
    assert info["tensors"]["w_int8"]["axis"] == 1
    np.testing.assert_array_equal(np.float32(info["tensors"]["w_int8"]["scale"]), np.full(4, 0.01, np.float32))
    sigmoid = _by_name(info)["branch/else_branch/sigmoid"]
    assert sigmoid["why"].startswith("no QuantizeLinear on its output 'else_y'")


def test_external_data_scales_are_read_from_the_data_file(float_model, tmp_path):
    result = qcc.compile(float_model, target="ort", calibration=random_feeds(float_model, 8, batch=2))
    path = tmp_path / "big.onnx"
    external = onnx.ModelProto()
    external.CopyFrom(result.model)  # onnx.save moves the tensors' data out of the proto it is given
    onnx.save(external, path, save_as_external_data=True, location="big.onnx.data", size_threshold=0)
    assert is_quantized_artifact(path)
    info = inspect_artifact(path)
    _assert_params_match_qdq_nodes(info, result.model)
    (tmp_path / "big.onnx.data").unlink()
    with pytest.raises(ModelLoadError, match="external data .* Fix: keep the model's .data file"):
        inspect_artifact(path)


def test_float_onnx_model_is_not_a_quantized_artifact(float_path):
    assert not is_quantized_artifact(float_path)
    info = inspect_artifact(float_path)
    assert info["kind"] == "float-onnx" and info["totals"]["float"] == 4 and info["tensors"] == {}
    assert _by_name(info)["conv"]["why"] == "input 'x' is float"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"this is not a model", "is neither an ONNX model nor a TFLite flatbuffer"),
        (b"", "is empty"),
        (b"\x1c\x00\x00\x00TFL3" + b"\xff" * 40, "has the TFLite signature but its flatbuffer cannot be read"),
        (None, "does not exist"),
    ],
    ids=["not-a-model", "empty", "corrupt-tflite", "missing"],
)
def test_unreadable_files_raise_model_load_error(content, message, tmp_path):
    path = tmp_path / "broken.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=f"{message}.* Fix: "):
        inspect_artifact(path)
    assert is_quantized_artifact(path) == (content is not None and content[4:8] == b"TFL3")


def test_render_prints_totals_ops_float_nodes_and_scales(tmp_path):
    model, _ = _modelopt_style()
    onnx.save(model, tmp_path / "m.onnx")
    console = Console(record=True, width=140)
    render_inspection(inspect_artifact(tmp_path / "m.onnx"), console, limit=3)
    text = console.export_text()
    assert "qdq-onnx, 20 nodes: 7 int8, 2 float, 11 conversion" in text
    assert "GlobalAveragePool" in text and "Softmax" in text
    assert "softmax (Softmax): input 'logits' is float" in text
    assert "quantized tensors (first 3 of 7)" in text and "x_q" in text
