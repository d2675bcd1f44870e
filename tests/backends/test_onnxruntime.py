from __future__ import annotations

import numpy as np
import onnx
import pytest

import qcc
from qcc.options import host_is_arm
from tests.conftest import build_model, random_feeds
from tests.e2e.synthetic import synthetic_model


def _compile(model, **options):
    return qcc.compile(model, target="ort", calibration=random_feeds(model, 8), **options)


def _initializer(proto: onnx.ModelProto, name: str) -> np.ndarray:
    return next(onnx.numpy_helper.to_array(t) for t in proto.graph.initializer if t.name == name)


def test_layout_rules_for_the_cpu_ep():
    model = synthetic_model("residual_cnn")
    result = _compile(model)
    proto = result.model
    ops = [n.op_type for n in proto.graph.node]
    assert "Relu" not in ops and "BatchNormalization" not in ops  # absorbed, folded
    assert [o.name for o in proto.graph.output] == ["logits"]
    act_dtype = np.int8 if host_is_arm() else np.uint8
    for node in proto.graph.node:
        if node.op_type == "QuantizeLinear":
            assert _initializer(proto, node.input[1]).shape == ()  # per-tensor activations
            assert _initializer(proto, node.input[2]).dtype == act_dtype
    tensors = result.report["tensors"]
    for node in result.report["nodes"]:
        if node["op_type"] == "Conv":
            conv = next(n for n in proto.graph.node if n.op_type == "Conv" and n.name == node["name"])
            x, w, b = (tensors[_source(proto, name)] for name in conv.input)
            assert w["dtype"] == "int8" and w["axis"] == 0 and np.all(np.array(w["zero_point"]) == 0)
            assert b["dtype"] == "int32"
            np.testing.assert_array_equal(np.float32(x["scale"]) * np.float32(w["scale"]), np.float32(b["scale"]))


def _source(proto: onnx.ModelProto, dq_output: str) -> str:
    dq = next(n for n in proto.graph.node if n.output[0] == dq_output)
    q = next((n for n in proto.graph.node if n.output[0] == dq.input[0]), None)
    if q is not None:  # activation: Q(x) -> DQ
        return q.input[0]
    return dq.input[0].removesuffix("_quantized")


def test_per_tensor_weights():
    result = _compile(synthetic_model("residual_cnn"), per_channel=False)
    weights = [t for t in result.report["tensors"].values() if t["role"] == "weight"]
    assert weights and all(t["axis"] is None and np.ndim(t["scale"]) == 0 for t in weights)
    assert result.report["verify"]["ok"]


def test_exclude_by_name_and_op_type_keeps_float_and_says_why():
    model = synthetic_model("residual_cnn")
    result = _compile(model, exclude=["Gemm", "c3"])  # node names come from outputs when unnamed
    by_name = {n["name"]: n for n in result.report["nodes"]}
    gemm = next(n for n in result.report["nodes"] if n["op_type"] == "Gemm")
    assert gemm["decision"] == "float" and "exclude" in gemm["reason"]
    assert result.report["verify"]["ok"]
    assert result.report["verify"]["float_compute_ops"] >= 1
    assert by_name  # report lists every node


@pytest.mark.skipif(host_is_arm(), reason="the S8S8 trap exists on x86 only")
def test_verify_catches_convs_left_in_float_by_int8_activations_on_x86():
    result = _compile(synthetic_model("residual_cnn"), activation_type="int8")
    verify = result.report["verify"]
    assert verify["quantized_but_float"], verify["census"]
    assert not verify["ok"]


def test_emit_does_not_mutate_the_annotated_model():
    from qcc import frontend
    from qcc.backends import get_backend
    from qcc.context import PassContext
    from qcc.data import open_calibration
    from qcc.options import CompileOptions
    from qcc.pipeline import run_pipeline

    model = synthetic_model("depthwise_cnn")
    loaded = frontend.load(model)
    backend = get_backend("ort")
    data = open_calibration(random_feeds(model, 4), loaded.input_specs())
    ctx = PassContext(CompileOptions(), backend.spec, data)
    run_pipeline(loaded.model, ctx)
    before = onnx.printer.to_text(qcc_ir_proto(loaded.model).graph)
    backend.emit(loaded.model, ctx)
    assert onnx.printer.to_text(qcc_ir_proto(loaded.model).graph) == before


def qcc_ir_proto(model):
    import onnx_ir as ir

    return ir.serde.serialize_model(model)


def test_constant_zero_activation_gets_a_finite_scale():
    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[4,4] w, float[1,4] zero, float[1,4] x) => (float[1,4] y) {
          z = Mul(x, zero)
          y = MatMul(z, w)
        }
        """,
        constants={"zero": np.zeros((1, 4), np.float32)},
    )
    result = _compile(model)
    scales = [np.asarray(t["scale"]) for t in result.report["tensors"].values()]
    assert all(np.all(np.isfinite(s)) and np.all(s > 0) for s in scales)
    assert result.report["verify"]["fidelity"]["finite"]
