from __future__ import annotations

import numpy as np
import onnx
import pytest

import qcc
from qcc.options import host_is_arm
from tests.conftest import build_model, cosine, random_feeds, run
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


_DYNAMIC = """<ir_version: 8, opset_import: ["" : 17]>
g (float[2,16,32] x, float[32,64] w1, float[48,64] w2, float[48] b2, int64[2] flat)
  => (float[32,48] y, float[2,16,16] att) {
 h = MatMul(x, w1)
 r = Relu(h)
 f = Reshape(r, flat)
 y = Gemm<transB=1, alpha=0.5, beta=2.0>(f, w2, b2)
 t = Transpose<perm=[0,2,1]>(x)
 att = MatMul(x, t)
}
"""


def _dynamic_model():
    return build_model(_DYNAMIC, constants={"flat": np.array([32, 64], np.int64)})


def test_dynamic_mode_needs_no_data_and_runs_dynamic_quantize_matmul_kernels():
    from qcc.backends.onnxruntime import fusion_census

    model = _dynamic_model()
    result = qcc.compile(model, target="ort", dynamic=True)  # no calibration data
    decisions = {n["name"] or n["op_type"]: n for n in result.report["nodes"]}
    by_op = {n["op_type"]: n["decision"] for n in decisions.values() if n["op_type"] != "MatMul"}
    assert by_op["Gemm"] == "int8" and by_op["Relu"] == "float"
    matmuls = sorted(n["decision"] for n in decisions.values() if n["op_type"] == "MatMul")
    assert matmuls == ["float", "int8"]  # the activation x activation MatMul stays float
    census, float_compute = fusion_census(result.artifact.data)
    assert census["DynamicQuantizeMatMul"] + census["MatMulIntegerToFloat"] == 2, census
    assert len(float_compute) == 1  # only the activation x activation MatMul
    feeds = random_feeds(model, 4, seed=5)
    for feed in feeds:
        expected, got = run(model, feed), run(result.model, feed)
        for e, g in zip(expected, got, strict=True):
            assert cosine(e, g) > 0.999
    assert result.report["verify"]["ok"] and result.report["verify"]["fidelity"]["samples"] == 0


def test_dynamic_mode_verifies_on_calibration_samples_when_given():
    model = _dynamic_model()
    result = qcc.compile(model, target="ort", calibration=random_feeds(model, 4), dynamic=True)
    verify = result.report["verify"]
    assert verify["ok"] and verify["fidelity"]["samples"] == 4
    assert min(o["cosine_min"] for o in verify["fidelity"]["outputs"].values()) > 0.999


@pytest.mark.parametrize("target", ["trt", "tflite"])
def test_dynamic_mode_is_refused_by_static_targets(target):
    model = _dynamic_model()
    with pytest.raises(qcc.OptionError, match="dynamic"):
        qcc.compile(model, target=target, calibration=random_feeds(model, 2), dynamic=True)


def test_int4_weight_only_matmul_becomes_matmul_nbits():
    from qcc.backends.onnxruntime import fusion_census

    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,8,256] x, float[256,128] w) => (float[1,8,128] y) {
 y = MatMul(x, w)
}
"""
    model = build_model(text)
    result = qcc.compile(model, target="ort", precision="int4")
    census, float_compute = fusion_census(result.artifact.data)
    assert census["MatMulNBits"] == 1 and not float_compute
    feed = random_feeds(model, 1, seed=2)[0]
    assert cosine(run(model, feed)[0], run(result.model, feed)[0]) > 0.99


def test_dynamic_mode_quantizes_a_weight_shared_by_two_matmuls_for_both():
    from qcc.backends.onnxruntime import fusion_census

    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[4,64] x, float[64,64] w) => (float[4,64] y) {
 h = MatMul(x, w)
 y = MatMul(h, w)
}
"""
    model = build_model(text)
    result = qcc.compile(model, target="ort", dynamic=True)
    census, float_compute = fusion_census(result.artifact.data)
    assert not float_compute and result.report["verify"]["ok"], census
    weights = [t for t in result.model.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2]
    assert len(weights) == 1  # one int8 copy serves both


def test_int4_keeps_a_transposed_gemm_float_with_the_reason():
    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[4,256] x, float[128,256] w, float[128] b) => (float[4,128] y) {
 y = Gemm<transB=1>(x, w, b)
}
"""
    result = qcc.compile(build_model(text), target="ort", precision="int4")
    (node,) = result.report["nodes"]
    assert node["decision"] == "float" and "without transposes" in node["reason"]
    assert result.report["verify"]["ok"]
