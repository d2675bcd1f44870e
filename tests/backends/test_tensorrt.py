"""TensorRT target: exact Q/DQ placement, the validator's rules, the calibration cache."""

from __future__ import annotations

import struct

import numpy as np
import onnx
import pytest

import qcc
from qcc.backends._trt_rules import check_tensorrt_rules
from qcc.backends.tensorrt import calibration_cache
from tests.conftest import build_model, fidelity, random_feeds, run
from tests.e2e.synthetic import synthetic_model


def _compile(name, **options):
    model = synthetic_model(name)
    return model, qcc.compile(model, target="trt", calibration=random_feeds(model, 16, seed=1), **options)


def _quantized_activations(proto: onnx.ModelProto) -> set[str]:
    inits = {t.name for t in proto.graph.initializer}
    return {n.input[0] for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits}


def _dq_fed(proto: onnx.ModelProto, node_name: str) -> list[bool]:
    producer = {o: n for n in proto.graph.node for o in n.output}
    node = next(n for n in proto.graph.node if n.name == node_name)
    return [i in producer and producer[i].op_type == "DequantizeLinear" for i in node.input if i]


def test_resnet_style_placement_matches_tensorrt_rules():
    model, result = _compile("residual_cnn")
    proto = result.model
    # Inputs of quantized ops only: graph input, Relu outputs, MaxPool output (ModelOpt's pattern).
    assert _quantized_activations(proto) == {"x", "r1", "r2", "r3", "r4", "p"}
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Relu") == 4  # kept: TensorRT fuses Conv+Relu itself, no Q/DQ in between
    assert _dq_fed(proto, "a") == [False, True]  # residual Add: only the skip input is quantized
    assert _dq_fed(proto, "c1") == [True, True, False]  # bias stays float
    zero_points = [onnx.numpy_helper.to_array(t) for t in proto.graph.initializer if t.name.endswith("_zero_point")]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    gemm = next(n for n in result.report["nodes"] if n["op_type"] == "Gemm")
    assert gemm["decision"] == "float" and "tiny GEMM" in gemm["reason"]
    assert result.report["verify"]["ok"] and result.report["verify"]["tensorrt_rules"]["errors"] == 0
    assert fidelity(model, proto, random_feeds(model, 8, seed=2)) > 0.998


def test_mobilenet_style_keeps_relu6_and_quantizes_depthwise():
    _, result = _compile("depthwise_cnn")
    proto = result.model
    assert [n.op_type for n in proto.graph.node].count("Clip") == 4
    convs = [n for n in result.report["nodes"] if n["op_type"] == "Conv"]
    assert all(n["decision"] == "int8" for n in convs)
    weights = [t for t in result.report["tensors"].values() if t["role"] == "weight"]
    assert all(t["axis"] == 0 for t in weights)


def test_yolo_style_concat_shares_one_scale_and_silu_stays_in_the_epilogue():
    model, result = _compile("yolo_block")
    tensors = result.report["tensors"]
    assert tensors["u"]["scale"] == tensors["a3"]["scale"] == tensors["cat"]["scale"]
    assert tensors["m"]["scale"] == tensors["c4"]["scale"]
    assert "c1" not in tensors  # no Q between Conv and its Sigmoid/Mul (SiLU)
    assert result.report["verify"]["tensorrt_rules"]["violations"] == []
    assert fidelity(model, result.model, random_feeds(model, 8, seed=2)) > 0.995


def test_transformer_block_keeps_attention_and_layernorm_float():
    model, result = _compile("transformer_block")
    by_name = {n["name"]: n for n in result.report["nodes"]}
    assert by_name["s0"]["decision"] == "float" and "attention" in by_name["s0"]["reason"]
    assert by_name["q0"]["decision"] == "int8" and by_name["f0"]["decision"] == "int8"
    assert all(n["decision"] == "float" for n in result.report["nodes"] if n["op_type"] == "LayerNormalization")
    assert fidelity(model, result.model, random_feeds(model, 8, seed=2)) > 0.995


def test_int8_weights_form_is_smaller_and_equivalent():
    model, qdq = _compile("residual_cnn")
    _, int8 = _compile("residual_cnn", weights="int8")
    assert len(int8.artifact.data) < 0.6 * len(qdq.artifact.data)
    feed = random_feeds(model, 1, seed=5)[0]
    np.testing.assert_allclose(run(int8.model, feed)[0], run(qdq.model, feed)[0], rtol=1e-5, atol=1e-5)


def test_calibration_cache_is_big_endian_scale_of_absmax():
    _, result = _compile("residual_cnn")
    lines = calibration_cache(result.report).splitlines()
    assert lines[0].startswith("TRT-") and lines[0].endswith("-MinMaxCalibration")
    entries = dict(line.split(": ") for line in lines[1:])
    assert set(entries) == {k for k, t in result.report["tensors"].items() if t["role"] == "activation"}
    for name, hexed in entries.items():
        (scale,) = struct.unpack(">f", bytes.fromhex(hexed))
        assert scale == np.float32(result.report["tensors"][name]["scale"])


VIOLATIONS = {
    "uint8": ("zero-point", "u8"),
    "nonzero_zp": ("zero-point", "zp"),
    "per_channel_activation": ("scale", "pc"),
    "bias_qdq": ("bias", "bias"),
    "concat_scales": ("concat", "concat"),
    "qdq_before_relu": ("epilogue", "relu"),
}


def _violating(case: str) -> onnx.ModelProto:
    """A small QDQ Conv model, clean or breaking exactly one TensorRT rule."""
    h, arr = onnx.helper, onnx.numpy_helper.from_array
    zp = np.array(3 if case == "nonzero_zp" else 0, np.uint8 if case == "uint8" else np.int8)
    inits = [
        arr(np.array(0.1, np.float32), "sx"),
        arr(zp, "zx"),
        arr(np.array(0.2, np.float32), "sy"),
        arr(np.full(3, 0.1, np.float32), "sx3"),
        arr(np.zeros(3, np.int8), "zx3"),
        arr(np.arange(6, dtype=np.float32).reshape(2, 3, 1, 1), "w"),
        arr(np.arange(12, dtype=np.float32).reshape(2, 6, 1, 1), "w2"),
        arr(np.full(2, 0.1, np.float32), "ws"),
        arr(np.zeros(2, np.int8), "wz"),
        arr(np.array([1, 2], np.float32), "b"),
        arr(np.array(0.01, np.float32), "sb"),
        arr(np.array(0, np.int32), "zb"),
    ]
    nodes = [
        h.make_node("QuantizeLinear", ["w", "ws", "wz"], ["wq"], axis=0, name="wq"),
        h.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0, name="wd"),
        h.make_node("QuantizeLinear", ["w2", "ws", "wz"], ["wq2"], axis=0, name="wq2"),
        h.make_node("DequantizeLinear", ["wq2", "ws", "wz"], ["wd2"], axis=0, name="wd2"),
    ]
    if case == "per_channel_activation":
        nodes += [
            h.make_node("QuantizeLinear", ["x", "sx3", "zx3"], ["xq"], axis=1, name="xq"),
            h.make_node("DequantizeLinear", ["xq", "sx3", "zx3"], ["xd"], axis=1, name="xd"),
        ]
    else:
        nodes += [
            h.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"], name="xq"),
            h.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"], name="xd"),
        ]
    if case == "bias_qdq":
        nodes += [
            h.make_node("QuantizeLinear", ["b", "sb", "zb"], ["bq"], name="bq"),
            h.make_node("DequantizeLinear", ["bq", "sb", "zb"], ["bd"], name="bd"),
            h.make_node("Conv", ["xd", "wd", "bd"], ["y"], name="conv"),
        ]
    elif case == "concat_scales":
        nodes += [
            h.make_node("QuantizeLinear", ["x", "sy", "zx"], ["yq"], name="yq"),
            h.make_node("DequantizeLinear", ["yq", "sy", "zx"], ["yd"], name="yd"),
            h.make_node("Concat", ["xd", "yd"], ["cat"], axis=1, name="cat"),
            h.make_node("Conv", ["cat", "wd2"], ["y"], name="conv"),
        ]
    elif case == "qdq_before_relu":
        nodes += [
            h.make_node("Conv", ["xd", "wd"], ["c"], name="conv"),
            h.make_node("QuantizeLinear", ["c", "sx", "zx"], ["cq"], name="cq"),
            h.make_node("DequantizeLinear", ["cq", "sx", "zx"], ["cd"], name="cd"),
            h.make_node("Relu", ["cd"], ["y"], name="relu"),
        ]
    else:
        nodes.append(h.make_node("Conv", ["xd", "wd"], ["y"], name="conv"))
    graph = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 4, 4])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("case", sorted(VIOLATIONS))
def test_validator_flags_each_rule(case):
    rule, _ = VIOLATIONS[case]
    violations = check_tensorrt_rules(_violating(case))
    assert rule in {v.rule for v in violations}, violations


def test_validator_accepts_a_clean_model():
    clean = _violating("clean")
    assert [v for v in check_tensorrt_rules(clean) if v.severity == "error"] == []
    assert run(clean, {"x": np.ones((1, 3, 4, 4), np.float32)})[0].shape == (1, 2, 4, 4)  # a valid model


def test_validator_on_qcc_own_ort_output_reports_uint8():
    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[4,4] w, float[2,4] x) => (float[2,4] y) {
          y = MatMul(x, w)
        }
        """
    )
    ort = qcc.compile(model, target="ort", calibration=random_feeds(model, 4), activation_type="uint8")
    assert "zero-point" in {v.rule for v in check_tensorrt_rules(ort.model)}


@pytest.mark.parametrize("weights", ["qdq", "int8"])
def test_fp8_e4m3_at_opset_19(weights):
    model, result = _compile("residual_cnn", precision="fp8", weights=weights)
    proto = result.model
    onnx.checker.check_model(proto)
    assert next(o.version for o in proto.opset_import if o.domain == "") >= 19
    zero_points = [t for t in proto.graph.initializer if t.name.endswith("_zero_point")]
    assert zero_points and all(t.data_type == onnx.TensorProto.FLOAT8E4M3FN for t in zero_points)
    w = next(t for name, t in result.report["tensors"].items() if t["role"] == "weight")
    assert np.asarray(w["scale"]).ndim == 1  # per channel
    assert result.report["tensors"]["x"]["dtype"] == "float8e4m3fn"
    verify = result.report["verify"]
    assert verify["ok"] and verify["tensorrt_rules"]["errors"] == 0
    from qcc.runtime import session

    feed = random_feeds(model, 1, seed=4)[0]
    got = session(proto, level="disable").run(None, feed)[0]  # ORT's optimizer cannot take FP8 QDQ
    expected = run(model, feed)[0]
    cos = float(np.dot(got.ravel(), expected.ravel()) / (np.linalg.norm(got) * np.linalg.norm(expected)))
    assert cos > 0.995


def test_fp8_weight_scales_are_absmax_over_448():
    model, result = _compile("mlp", precision="fp8")
    weights = {name: t for name, t in result.report["tensors"].items() if t["role"] == "weight"}
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for name, tensor in weights.items():
        absmax = np.abs(inits[name]).max(axis=0)  # MatMul weights (K, N): per column
        np.testing.assert_allclose(np.array(tensor["scale"]) * 448, absmax, rtol=1e-6)


def test_fp8_is_refused_for_ort():
    model = synthetic_model("mlp")
    with pytest.raises(qcc.OptionError, match="precision fp8"):
        qcc.compile(model, target="ort", precision="fp8", calibration=random_feeds(model, 2))


def test_int4_weight_only_blocks_on_matmul():
    model, result = _compile("transformer_block", precision="int4")
    proto = result.model
    onnx.checker.check_model(proto, full_check=True)
    assert next(o.version for o in proto.opset_import if o.domain == "") >= 21 and proto.ir_version >= 10
    dqs = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    assert dqs and not [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]  # DQ only
    inits = {t.name: t for t in proto.graph.initializer}
    for dq in dqs:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in dq.attribute}
        weight = inits[dq.input[0]]
        assert weight.data_type == onnx.TensorProto.INT4 and attrs["axis"] == 0  # MatMul (K, N): blocks along K
        k = weight.dims[0]
        assert attrs["block_size"] == (128 if k % 128 == 0 else 64) and k % attrs["block_size"] == 0
    by_name = {n["name"]: n for n in result.report["nodes"]}
    assert by_name["q0"]["decision"] == "weight-only"
    assert by_name["s0"]["decision"] == "float"  # activation x activation
    assert result.report["verify"]["ok"]
    assert fidelity(model, proto, random_feeds(model, 4, seed=2)) > 0.99


def test_int4_keeps_convs_float_and_says_why():
    _, result = _compile("residual_cnn", precision="int4")
    convs = [n for n in result.report["nodes"] if n["op_type"] == "Conv"]
    assert all(n["decision"] == "float" and "weight-only" in n["reason"] for n in convs)


def test_symbolic_batch_classifier_head_is_a_gemv_when_the_data_has_batch_1():
    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[16,32] w1, float[24,32] w2, float[N,16] x) => (float[N,24] y) {
          h = MatMul(x, w1)
          r = Relu(h)
          y = Gemm<transB=1>(r, w2)
        }
        """
    )
    result = qcc.compile(model, target="trt", calibration=random_feeds(model, 4, batch=1))
    head = {n["name"]: n for n in result.report["nodes"]}["y"]
    assert head["decision"] == "float" and "GEMV" in head["reason"]
    batched = qcc.compile(model, target="trt", calibration=random_feeds(model, 4, batch=8))
    assert {n["name"]: n for n in batched.report["nodes"]}["y"]["decision"] == "int8"


def test_the_models_own_qdq_breaking_tensorrt_rules_is_named_as_the_models():
    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[4] x, float s) => (uint8[4] y) {
          y = QuantizeLinear(x, s)
        }
        """
    )
    feed = {"x": np.linspace(-1, 1, 4).astype(np.float32), "s": np.float32(0.1)}
    with pytest.raises(qcc.QccError, match="the model's own QuantizeLinear .* rule 'scale'") as error:
        qcc.compile(model, target="trt", calibration=[feed])
    assert "qcc bug" not in str(error.value)


def test_a_qdq_models_own_qdq_between_conv_and_relu_is_named_as_the_models():
    model = _violating("qdq_before_relu")  # the model's own Q/DQ on the Conv's output block its Relu fusion
    calibration = [{"x": np.random.default_rng(i).random((1, 3, 4, 4), np.float32)} for i in range(2)]
    with pytest.raises(qcc.BackendError, match=r"the model's own Conv 'conv' breaks .* rule 'epilogue'") as error:
        qcc.compile(model, target="trt", calibration=calibration)
    assert "qcc bug" not in str(error.value)
    assert "qcc check --target trt" in error.value.fix
