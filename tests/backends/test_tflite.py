"""The tflite target end to end: writer rules, spec constraints, interface options, whole models."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import tflite

import qcc
from qcc.backends import get_backend
from qcc.backends._tflite_litert import interpreter, run
from qcc.errors import BackendError
from qcc.runtime import session
from tests.backends.test_tflite_ops import op_model
from tests.conftest import build_model, random_feeds
from tests.e2e.synthetic import synthetic_model

_OPS = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
_TYPES = {v: k for k, v in vars(tflite.TensorType).items() if not k.startswith("_")}
DEMO = "build/demo"


def _compile(model, **options):
    return qcc.compile(model, target="tflite", calibration=random_feeds(model, 16, seed=1), **options)


def _verify(result, model) -> dict:
    """verify() on 16 held-out samples: with tiny outputs, 4 samples make one 2-step flip a 2.5% miss."""
    return get_backend("tflite").verify(result.artifact, model, random_feeds(model, 16, seed=5))


def _parse(data: bytes):
    model = tflite.Model.GetRootAsModel(data, 0)
    return model, model.Subgraphs(0)


def _ops(data: bytes) -> list[tuple[str, str]]:
    """(op name, type of the first input) for every operator."""
    model, graph = _parse(data)
    out = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        name = _OPS[model.OperatorCodes(op.OpcodeIndex()).BuiltinCode()]
        out.append((name, _TYPES[graph.Tensors(op.Inputs(0)).Type()] if op.InputsLength() else ""))
    return out


def _tensor(data: bytes, predicate):
    _, graph = _parse(data)
    for i in range(graph.TensorsLength()):
        tensor = graph.Tensors(i)
        if predicate(tensor):
            return tensor
    raise AssertionError("no such tensor")


@pytest.mark.parametrize("name", ["residual_cnn", "depthwise_cnn", "mlp"])
def test_synthetic_models_agree_with_the_simulation_on_both_resolvers(name):
    model = synthetic_model(name)
    result = _compile(model, verify_each=True, verify=False)
    verify = _verify(result, model)
    assert verify["ok"], verify
    for entry in verify["resolvers"].values():
        assert entry["within_one_step"] >= 0.99 and entry["cosine_vs_float_min"] > 0.97
    delegation = verify["resolvers"]["xnnpack"]["delegation"]
    assert delegation["partitions"] == 1 and not delegation["builtin"], delegation
    assert all(t == "INT8" for op, t in _ops(result.artifact.data) if op not in ("QUANTIZE",))


@pytest.mark.skipif(not os.path.exists(f"{DEMO}/model.onnx"), reason="run `make demo` first")
def test_demo_model_top1_matches_float():
    result = qcc.compile(f"{DEMO}/model.onnx", target="tflite", calibration=f"{DEMO}/calib.npz")
    assert result.report["verify"]["ok"], result.report["verify"]
    images = np.load(f"{DEMO}/eval.npz")["input"][:100]
    ref = onnx.load(f"{DEMO}/model.onnx")
    from tests.conftest import run as run_ort

    interp = interpreter(result.artifact.data, "xnnpack")
    agree = 0
    for image in images:
        feed = {"input": image[None]}
        agree += int(np.argmax(run(interp, feed)[0]) == np.argmax(run_ort(ref, feed)[0]))
    assert agree >= 97


def test_flatbuffer_follows_the_writer_rules():
    data = _compile(synthetic_model("depthwise_cnn")).artifact.data
    model, graph = _parse(data)
    assert model.Version() == 3
    assert model.Buffers(0).DataLength() == 0
    for i in range(graph.TensorsLength()):
        tensor = graph.Tensors(i)
        if tensor.Buffer() != 0:
            vector = model.Buffers(tensor.Buffer())
            offset = vector._tab.Vector(vector._tab.Offset(4))
            assert offset % 16 == 0, tensor.Name()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        assert code.DeprecatedBuiltinCode() == min(code.BuiltinCode(), 127) and code.Version() >= 1
    assert model.SignatureDefs(0).SignatureKey() == b"serving_default"
    assert interpreter(data).get_signature_list() == {"serving_default": {"inputs": ["x"], "outputs": ["logits"]}}


def test_weights_are_symmetric_per_channel_on_the_right_dimension_with_exact_bias_scales():
    data = _compile(synthetic_model("depthwise_cnn")).artifact.data
    model, graph = _parse(data)
    seen = set()
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        name = _OPS[model.OperatorCodes(op.OpcodeIndex()).BuiltinCode()]
        if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        x, w, b = (graph.Tensors(op.Inputs(k)).Quantization() for k in range(3))
        assert w.QuantizedDimension() == (3 if name == "DEPTHWISE_CONV_2D" else 0)
        assert not np.any(w.ZeroPointAsNumpy())
        expected = (np.float64(x.ScaleAsNumpy()[0]) * w.ScaleAsNumpy().astype(np.float64)).astype(np.float32)
        np.testing.assert_allclose(b.ScaleAsNumpy(), expected, rtol=1e-7)
        seen.add(name)
    assert seen == {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


@pytest.mark.parametrize(
    ("name", "op", "scale", "zero_point"),
    [
        ("sigmoid", ("LOGISTIC", "INT8"), 1 / 256, -128),
        ("tanh", ("TANH", "INT8"), 1 / 128, 0),
        # XNNPACK has no int8 softmax: DEQUANTIZE -> float SOFTMAX -> QUANTIZE stays delegated.
        ("softmax_channels", ("SOFTMAX", "FLOAT32"), 1 / 256, -128),
    ],
)
def test_fixed_output_parameters(name, op, scale, zero_point):
    # With --io int8 the graph output is int8 too (with a float output, LOGISTIC and TANH run float:
    # tests/passes/test_plan.py).
    result = _compile(op_model(name), io="int8")
    assert op in _ops(result.artifact.data)
    quant = result.report["tensors"]
    fixed = [
        t
        for t in quant.values()
        if t["role"] == "activation" and np.isclose(t["scale"], scale) and t["zero_point"] == zero_point
    ]
    assert fixed, "the annotation carries the fixed parameters"


def test_concat_inputs_share_the_output_parameters_with_a_requantize_for_fixed_inputs():
    model = op_model("concat_fixed_and_free")
    result = _compile(model, verify=False)
    ops = _ops(result.artifact.data)
    # The sigmoid output (1/256, -128) is requantized as DEQUANTIZE -> QUANTIZE (XNNPACK has no
    # int8 -> int8 QUANTIZE); the model input's QUANTIZE is the other float one.
    assert ("CONCATENATION", "INT8") in ops and ops.count(("QUANTIZE", "FLOAT32")) == 2
    assert _verify(result, model)["ok"]


def test_float_islands_are_dequantize_float_op_quantize():
    result = _compile(op_model("div_const_island"))
    ops = _ops(result.artifact.data)
    index = ops.index(("DIV", "FLOAT32"))
    assert ops[index - 1] == ("DEQUANTIZE", "INT8")
    verify = result.report["verify"]
    assert verify["ok"] and verify["float_ops"][0].startswith("DIV"), verify


@pytest.mark.parametrize("io", ["float", "int8"])
@pytest.mark.parametrize("nhwc_io", [False, True])
def test_interface_options(io, nhwc_io):
    model = synthetic_model("residual_cnn")
    result = _compile(model, io=io, nhwc_io=nhwc_io, verify=False)
    verify = _verify(result, model)
    assert verify["ok"], verify
    detail = interpreter(result.artifact.data).get_input_details()[0]
    assert detail["dtype"] == (np.int8 if io == "int8" else np.float32)
    assert tuple(detail["shape"]) == ((1, 16, 16, 3) if nhwc_io else (1, 3, 16, 16))
    ops = [op for op, _ in _ops(result.artifact.data)]
    assert ("TRANSPOSE" in ops) == (not nhwc_io)
    assert ("QUANTIZE" in ops) == (io == "float")


def test_unsupported_op_names_the_node(monkeypatch):
    from qcc.backends._tflite_ops import LOWERINGS

    monkeypatch.delitem(LOWERINGS, "CumSum", raising=False)  # an op without a rule
    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[4,4] w, int64[] axis, float[1,4] x) => (float[1,4] y) {
          m = MatMul(x, w)
          y = CumSum<exclusive=1>(m, axis)
        }
        """,
        constants={"axis": np.array(1, np.int64)},
    )
    with pytest.raises(BackendError, match=r"'y' \(CumSum\) has no TFLite lowering"):
        _compile(model, verify=False)


def test_transformer_block_runs_with_float_layernorm_and_erf_islands():
    model = synthetic_model("transformer_block")
    result = _compile(model)
    verify = result.report["verify"]
    assert any(op.startswith("RSQRT") for op in verify["float_ops"])  # LayerNormalization island
    for entry in verify["resolvers"].values():
        assert "error" not in entry and entry["cosine_vs_float_min"] > 0.999
    # The attention products stay float: XNNPACK delegates an int8 BATCH_MATMUL only with a
    # zero-point-0 rhs, and LiteRT's reference kernel is slower than float.
    ops = _ops(result.artifact.data)
    assert ("BATCH_MATMUL", "FLOAT32") in ops and ("BATCH_MATMUL", "INT8") not in ops
    reasons = {n["name"]: n["reason"] for n in result.report["nodes"] if n["op_type"] == "MatMul"}
    attention = [r for r in reasons.values() if r.startswith("MatMul between two activations")]
    assert attention and all("XNNPACK" in r for r in attention)
    assert any(n["op_type"] == "MatMul" and n["decision"] == "int8" for n in result.report["nodes"])  # weights


def test_uint8_activations_are_rejected():
    with pytest.raises(BackendError, match="int8"):
        _compile(synthetic_model("mlp"), activation_type="uint8", verify=False)


def test_emit_does_not_mutate_the_annotated_model():
    from qcc import frontend
    from qcc.backends import get_backend
    from qcc.context import PassContext
    from qcc.data import open_calibration
    from qcc.options import CompileOptions
    from qcc.pipeline import run_pipeline

    model = synthetic_model("depthwise_cnn")
    loaded = frontend.load(model)
    backend = get_backend("tflite")
    data = open_calibration(random_feeds(model, 4), loaded.input_specs())
    ctx = PassContext(CompileOptions(target="tflite"), backend.spec, data)
    run_pipeline(loaded.model, ctx)
    before = onnx.printer.to_text(ir.serde.serialize_model(loaded.model).graph)
    backend.emit(loaded.model, ctx)
    assert onnx.printer.to_text(ir.serde.serialize_model(loaded.model).graph) == before


def test_target_constraints_leave_ort_unchanged():
    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[8,8,1,1] w, float[1,8,4,4] x) => (float[1,16,4,4] y) {
          c = Conv(x, w)
          s = Sigmoid(c)
          y = Concat<axis=1>(s, c)
        }
        """
    )
    result = qcc.compile(model, target="ort", calibration=random_feeds(model, 4), verify=False)
    assert "Identity" not in [n["op_type"] for n in result.report["nodes"]]
    assert not any(
        np.isclose(t["scale"], 1 / 256) for t in result.report["tensors"].values() if t["role"] == "activation"
    )


def _pool_model(out_scale: float):
    from qcc.backends._tflite_writer import FlatModel, Quant, builtin

    model = FlatModel()
    x = model.tensor("x", (1, 4, 4, 2), np.int8, quant=Quant(np.array([0.1]), np.array([0])))
    y = model.tensor("y", (1, 2, 2, 2), np.int8, quant=Quant(np.array([out_scale]), np.array([0])))
    model.op(
        builtin("MAX_POOL_2D"),
        [x],
        [y],
        "Pool2DOptions",
        source="pool",
        padding=1,
        stride_w=2,
        stride_h=2,
        filter_width=2,
        filter_height=2,
    )
    return model


def test_validator_refuses_what_litert_would_run_silently_wrong():
    from qcc.backends._tflite_validate import validate

    validate(_pool_model(0.1))
    with pytest.raises(BackendError, match="'pool'.*share parameters"):
        validate(_pool_model(0.2))



def _q(scale: float):
    from qcc.backends._tflite_writer import Quant

    return Quant(np.array([scale]), np.array([0]))


def test_validator_checks_select_both_branches_and_the_new_moving_ops():
    from qcc.backends._tflite_validate import validate
    from qcc.backends._tflite_writer import FlatModel, builtin

    def select(b_scale: float) -> FlatModel:
        model = FlatModel()
        c = model.tensor("c", (4,), np.bool_)
        a = model.tensor("a", (4,), np.int8, quant=_q(0.1))
        b = model.tensor("b", (4,), np.int8, quant=_q(b_scale))
        y = model.tensor("y", (4,), np.int8, quant=_q(0.1))
        model.op(builtin("SELECT_V2"), [c, a, b], [y], "SelectV2Options", source="where")
        return model

    def tile(out_scale: float) -> FlatModel:
        model = FlatModel()
        x = model.tensor("x", (2,), np.int8, quant=_q(0.1))
        m = model.tensor("m", (1,), np.int32, data=np.array([2], np.int32))
        y = model.tensor("y", (4,), np.int8, quant=_q(out_scale))
        model.op(builtin("TILE"), [x, m], [y], "TileOptions", source="tile")
        return model

    validate(select(0.1))
    with pytest.raises(BackendError, match="'where'.*'b'.*share parameters"):
        validate(select(0.2))
    validate(tile(0.1))
    with pytest.raises(BackendError, match="'tile'.*share parameters"):
        validate(tile(0.2))


def test_validator_takes_plain_int8_integers_from_a_cast_but_not_a_quantized_tensor_without_parameters():
    from qcc.backends._tflite_validate import validate
    from qcc.backends._tflite_writer import FlatModel, builtin

    def cast_then(op: str) -> FlatModel:
        model = FlatModel()
        x = model.tensor("x", (4,), np.float32)
        c = model.tensor("c", (4,), np.int8)
        s = model.tensor("s", (2,), np.int32, data=np.array([2, 2], np.int32))
        r = model.tensor("r", (2, 2), np.int8)
        model.op(builtin("CAST"), [x], [c], "CastOptions", source="cast")
        model.op(builtin(op), [c, s], [r], None, source="after")
        return model

    validate(cast_then("RESHAPE"))  # integers moved from the CAST: no parameters needed
    with pytest.raises(BackendError, match="int8 tensor 'r' has no quantization parameters"):
        validate(cast_then("ADD"))  # int8 arithmetic on a tensor without parameters: a qcc bug


def test_cast_to_int8_compiles_and_matches_onnxruntime():
    model = build_model(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[1,4,8,8] x) => (float[1,4,8,8] y) {
          c = Cast<to=3>(x)
          d = Cast<to=1>(c)
          y = Add(d, x)
        }"""
    )
    feed = {"x": np.linspace(-100, 100, 256, dtype=np.float32).reshape(1, 4, 8, 8)}
    result = _compile(model)
    assert result.report["verify"]["ok"], result.report["verify"]
    expected = session(model).run(None, feed)[0]
    for resolver in ("xnnpack", "builtin"):
        got = run(interpreter(result.artifact.data, resolver), feed, [expected.shape])[0]
        np.testing.assert_allclose(got, expected, atol=2 * float(np.abs(expected).max()) / 255, err_msg=resolver)

@pytest.mark.parametrize(
    "name",
    [
        "resize_nearest",
        "hardswish",
        "softmax_channels",
        "concat_fixed_and_free",
        "split_unequal",
        "relu_after_float",
        "pow_square",
        "conv1d_stride_pads_dilation",
    ],
)
def test_ops_xnnpack_lacks_in_int8_stay_in_one_delegated_partition(name):
    model = op_model(name)
    delegation = _verify(_compile(model, verify=False), model)["resolvers"]["xnnpack"]["delegation"]
    assert delegation["partitions"] == 1 and not delegation["builtin"], delegation


def test_per_channel_constant_after_a_layout_transpose_is_permuted_correctly():
    # Found by tests/e2e/test_fuzz.py: Add of a (1, C, 1, 1) constant below an NHWC transpose.
    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1,4,1,1] bias, float[1,4,4,4] x) => (float[1,4,2,2] y) {
          p = MaxPool<kernel_shape=[2,2], strides=[2,2]>(x)
          y = Add(p, bias)
        }
        """
    )
    result = qcc.compile(model, target="tflite", calibration=random_feeds(model, 4))
    verify = result.report["verify"]
    assert verify["resolvers"]["xnnpack"]["ok"] and verify["resolvers"]["builtin"]["ok"], verify


def test_a_square_feeding_a_reduction_stays_float():
    # E[h^2] - E[h]^2 over the features (Magika's decomposed LayerNorm), and a square that is an output.
    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[16,16] w, int64[1] ax, float inv, float[1,16] x) => (float[1,1] var, float[1,16] sq) {
          h = MatMul(x, w)
          s = ReduceSum<keepdims=1>(h, ax)
          m = Mul(s, inv)
          h2 = Mul(h, h)
          s2 = ReduceSum<keepdims=1>(h2, ax)
          m2 = Mul(s2, inv)
          mm = Mul(m, m)
          var = Sub(m2, mm)
          sq = Mul(h, h)
        }
        """,
        constants={"ax": np.array([1]), "inv": np.float32(1 / 16)},
    )
    result = _compile(model)
    nodes = {n["name"]: n for n in result.report["nodes"]}
    assert nodes["h2"]["decision"] == "float", nodes["h2"]
    assert "square" in nodes["h2"]["reason"] and "ReduceSum" in nodes["h2"]["reason"], nodes["h2"]
    assert nodes["sq"]["decision"] == "int8", nodes["sq"]  # a square that feeds no reduction
    assert result.report["verify"]["ok"], result.report["verify"]


def test_the_bound_says_how_many_samples_the_artifact_ran():
    """A dynamic artifact runs every verify sample; one pinned to a shape (``input_shapes``) runs only
    the samples of that shape, and ``met`` must not look as if it rested on all of them."""
    model = build_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[8,3,3,3] w, float[8] b, float[1,3,H,W] x) => (float[1,8,H,W] y) {
      c = Conv<pads=[1,1,1,1]>(x, w, b)
      y = Relu(c)
    }
    """)
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.normal(size=(1, 3, 8, 8 if i % 2 == 0 else 12)).astype(np.float32)} for i in range(8)]
    report = qcc.compile(model, target="tflite", calibration=feeds).report
    assert report["verify"]["samples"] == 4 and report["verify"]["shapes"]["dynamic"], report["verify"]
    assert report["mixed_precision"]["artifact_samples"] == 4
    pinned = qcc.compile(model, target="tflite", calibration=feeds, input_shapes={"x": (1, 3, 8, 8)}).report
    assert pinned["verify"]["samples"] == 2  # of the 4 verify samples, the two of the pinned shape
    assert pinned["verify"]["samples_skipped"] == 2 and not pinned["verify"]["shapes"]["dynamic"]
    assert pinned["mixed_precision"]["artifact_samples"] == 2


def test_an_infinite_mask_saturates_when_quantized():
    """``Where(keep, 0, -inf)`` quantized int8 (an attention mask): LiteRT's builtin QUANTIZE turns
    -inf into the top of the range unless it is clamped in float first; both resolvers must agree
    with the simulation, also on masks the calibration never saw."""
    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[8,8] w, float[] zero, float[] minus_inf, bool[1,8] keep, float[1,8] x) => (float[1,8] y) {
          m = MatMul(x, w)
          bias = Where(keep, zero, minus_inf)
          s = Add(m, bias)
          y = Softmax<axis=-1>(s)
        }
        """,
        constants={"zero": np.float32(0), "minus_inf": np.float32(-np.inf)},
    )
    rng = np.random.default_rng(0)
    feeds = [{"keep": np.ones((1, 8), bool), "x": rng.normal(size=(1, 8)).astype(np.float32)} for _ in range(4)]
    result = qcc.compile(model, target="tflite", calibration=feeds, tolerance=None)
    masked = {"keep": np.array([[True] * 5 + [False] * 3]), "x": feeds[0]["x"]}
    simulation = session(result.artifact.simulation, level="disable").run(None, masked)[0]
    for resolver in ("xnnpack", "builtin"):
        (got,) = run(interpreter(result.artifact.data, resolver), masked)
        np.testing.assert_allclose(got, simulation, atol=1.5 / 256)


@pytest.mark.parametrize(
    ("op", "dtype", "fields", "version"),
    [
        ("TILE", np.int8, {}, 3),
        ("DEPTH_TO_SPACE", np.int8, {}, 2),
        ("SPACE_TO_DEPTH", np.int8, {}, 2),
        ("TOPK_V2", np.int8, {}, 2),
        ("ARG_MAX", np.int8, {}, 2),
        ("ARG_MIN", np.int8, {}, 2),
        ("REVERSE_V2", np.int8, {}, 3),
        ("TILE", np.float32, {}, 1),
        ("CAST", np.float16, {}, 5),
        ("CAST", np.float64, {}, 5),
        ("CAST", np.int8, {}, 3),
        ("CAST", np.int32, {}, 1),
        ("GATHER", np.float32, {"axis": 1, "batch_dims": 1}, 5),
        ("GATHER", np.int8, {"axis": 1, "batch_dims": 0}, 2),
    ],
)
def test_op_versions_follow_the_converter(op, dtype, fields, version):
    from qcc.backends._tflite_versions import stamp_versions
    from qcc.backends._tflite_writer import FlatModel, builtin

    model = FlatModel()
    quant = _q(0.1) if dtype == np.int8 and op != "CAST" else None
    x = model.tensor("x", (2, 4), dtype, quant=quant)
    other = model.tensor("i", (2, 1), np.int32)
    y = model.tensor("y", (2, 4), np.float32 if op == "CAST" else dtype, quant=quant)
    model.op(builtin(op), [x] if op == "CAST" else [x, other], [y], None, source=op, **fields)
    stamp_versions(model)
    assert model.ops[0].version == version


def test_an_empty_constant_output_is_refused_with_the_reason():
    # Shape with start > end is empty for every input: folded to a zero-size constant, which LiteRT
    # loads but cannot return ("Invalid tensor size" from get_tensor).
    model = build_model(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[2,3,4] x) => (int64[0] y) {
          y = Shape<start=2, end=1>(x)
        }"""
    )
    with pytest.raises(BackendError, match="'y' is empty whatever the input.*Invalid tensor size"):
        _compile(model)
