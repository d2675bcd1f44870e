from __future__ import annotations

import hashlib

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import qcc
from qcc import frontend
from tests.conftest import build_model

TINY = """
<ir_version: 8, opset_import: ["" : OPSET]>
g (float[4,3] w, float[N,4] x) => (float[N,3] y) {
  y = MatMul(x, w)
}
"""


TENSOR_BYTES = onnx.numpy_helper.from_array(np.ones(3, np.float32)).SerializeToString()


def tiny(opset: int = 17) -> onnx.ModelProto:
    return build_model(TINY.replace("OPSET", str(opset)))


@pytest.mark.parametrize("kind", ["path", "bytes", "proto", "ir"])
def test_loads_every_source_kind_without_modifying_it(kind, tmp_model):
    proto = tiny()
    before = proto.SerializeToString()
    source = {
        "path": lambda: tmp_model(proto),
        "bytes": lambda: before,
        "proto": lambda: proto,
        "ir": lambda: ir.serde.deserialize_model(proto),
    }[kind]()
    loaded = frontend.load(source)
    assert [n.op_type for n in loaded.model.graph] == ["MatMul"]
    assert proto.SerializeToString() == before


def test_upgrades_old_opsets():
    model = build_model(
        """
        <ir_version: 5, opset_import: ["" : 10]>
        g (float[1,4] x) => (float[1,4] y) {
          y = Clip<min=0.0, max=6.0>(x)
        }
        """
    )
    loaded = frontend.load(model)
    assert loaded.original_opset == 10
    assert loaded.model.opset_imports[""] >= 13
    clip = next(n for n in loaded.model.graph if n.op_type == "Clip")
    assert clip.op_type == "Clip" and len(clip.inputs) == 3 and not clip.attributes


def _write(tmp_path, name, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: str(p / "missing.onnx"), "does not exist"),
        (lambda p: str(p), "is a folder"),
        (lambda p: _write(p, "empty.onnx", b""), "is empty"),
        (lambda p: _write(p, "random.onnx", np.random.default_rng(0).bytes(999)), "not"),
        (lambda p: _write(p, "truncated.onnx", tiny().SerializeToString()[:-7]), "not"),
        (lambda p: _write(p, "tensor.onnx", TENSOR_BYTES), "not an ONNX model"),
        (lambda p: _write(p, "text.onnx", b"this is a text file, not a model\n"), "not"),
    ],
)
def test_unreadable_files_are_model_load_errors(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(qcc.ModelLoadError, match=message) as info:
        frontend.load(path)
    assert "Fix:" in str(info.value) and "\n" not in str(info.value)


def test_missing_external_data_is_named(tmp_path):
    model = tiny()
    onnx.save(
        model,
        tmp_path / "m.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(qcc.ModelLoadError, match="weights.bin"):
        frontend.load(str(tmp_path / "m.onnx"))


def test_external_data_outside_the_model_folder_is_refused(tmp_path):
    model = tiny()
    inner = tmp_path / "inner"
    inner.mkdir()
    onnx.save(model, inner / "m.onnx", save_as_external_data=True, location="w.bin", size_threshold=0)
    loaded = onnx.load(inner / "m.onnx", load_external_data=False)
    for entry in loaded.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../w.bin"
    (inner / "w.bin").rename(tmp_path / "w.bin")
    onnx.save(loaded, inner / "m.onnx")
    with pytest.raises(qcc.ModelLoadError, match="outside the model's folder"):
        frontend.load(str(inner / "m.onnx"))


def test_external_data_loads(tmp_path):
    onnx.save(tiny(), tmp_path / "m.onnx", save_as_external_data=True, location="w.bin", size_threshold=0)
    digest = hashlib.sha256((tmp_path / "w.bin").read_bytes()).hexdigest()
    assert frontend.load(str(tmp_path / "m.onnx")).model.graph.initializers["w"].const_value is not None
    assert hashlib.sha256((tmp_path / "w.bin").read_bytes()).hexdigest() == digest


def test_integer_only_model_has_nothing_to_quantize():
    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (int64[2] x, int64[2] y) => (int64[2] z) {
          z = Add(x, y)
        }
        """
    )
    with pytest.raises(qcc.UnsupportedModelError, match="no float tensors"):
        frontend.load(model)


def test_unknown_future_opset_is_named():
    model = tiny()
    model.opset_import[0].version = 99
    with pytest.raises(qcc.UnsupportedModelError, match="opset 99"):
        frontend.load(model.SerializeToString())


def test_invalid_graph_is_named():
    model = tiny()
    model.graph.node[0].input[1] = "nowhere"
    with pytest.raises(qcc.ModelLoadError, match="not a valid ONNX model"):
        frontend.load(model)


def test_nan_weights_are_refused_but_inf_masks_are_not():
    nan = np.ones((4, 3), np.float32)
    nan[1, 2] = np.nan
    with pytest.raises(qcc.UnsupportedModelError, match="'w' .* NaN"):
        frontend.load(build_model(TINY.replace("OPSET", "17"), constants={"w": nan}))
    inf = np.ones((4, 3), np.float32)
    inf[0, 0] = -np.inf
    assert frontend.load(build_model(TINY.replace("OPSET", "17"), constants={"w": inf})).model is not None


# -- every shape the ONNX model accepts (issue #17) ------------------------------------------------

CONV_NET = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N,3,8,8] x, float[4,3,3,3] w, float[4] b) => (float[N,4,8,8] y) {
  c = Conv<pads=[1,1,1,1]>(x, w, b)
  y = Relu(c)
}
"""


def _declared(model: onnx.ModelProto, how: str) -> onnx.ModelProto:
    """The conv net with its batch axis declared the way an exporter habit writes it."""
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if how == "paddle":  # Paddle: dim_value -1
            dims[0].Clear()
            dims[0].dim_value = -1
        elif how == "zero":  # some older exporters: dim_value 0
            dims[0].Clear()
            dims[0].dim_value = 0
        elif how == "unnamed":  # neither value nor name
            dims[0].Clear()
        elif how == "no-shape":  # no shape at all
            value.type.tensor_type.ClearField("shape")
    return model


@pytest.mark.parametrize("how", ["paddle", "zero", "unnamed", "no-shape"])
@pytest.mark.parametrize("target", ["ort", "trt", "tflite"])
def test_accepts_every_declared_batch(how, target):
    from tests.conftest import run

    model = _declared(build_model(CONV_NET), how)
    before = model.SerializeToString()
    rng = np.random.default_rng(0)
    calib = [{"x": rng.normal(0, 1, (1, 3, 8, 8)).astype(np.float32)} for _ in range(4)]
    result = qcc.compile(model, target=target, calibration=calib)
    assert model.SerializeToString() == before
    assert result.report["verify"]["ok"], result.report["verify"]
    if target != "tflite":  # the ONNX artifact runs at any batch; compared with the float model
        feed = {"x": rng.normal(0, 1, (3, 3, 8, 8)).astype(np.float32)}
        (want,), (got,) = run(build_model(CONV_NET), feed), run(result.model, feed)
        assert got.shape == want.shape and np.abs(got - want).max() < 0.1 * np.abs(want).max()


def test_newer_opset_than_onnxruntime_is_converted_down():
    model = onnx.parser.parse_model(
        """
        <ir_version: 10, opset_import: ["" : 22]>
        g (float[1,2,4,4] X, float[3,4] rois, int64[3] index) => (float[3,2,2,2] y) {
          y = RoiAlign<output_height=2, output_width=2, spatial_scale=1.0>(X, rois, index)
        }
        """
    )
    loaded = frontend.load(model)  # ONNX Runtime 1.32 has no RoiAlign-22 kernel; -21 has the same meaning
    assert loaded.original_opset == 22 and loaded.model.opset_imports[""] < 22


def test_operator_without_kernel_is_named_before_quantizing():
    from tests.e2e.conformance import collect

    case = next(c for c in collect() if c.name == "test_swiglu")  # ONNX Runtime 1.32 cannot run SwiGLU-24
    feed = {v.name: a for v, a in zip(case.model.graph.input, case.inputs, strict=True)}
    with pytest.raises(qcc.QccError, match="Swish .*no CPU kernel"):
        qcc.compile(case.model, target="ort", calibration=[feed])


def test_float_input_alone_is_enough_to_compile():
    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2,5] x) => (int64[2,1] y) {
          y = ArgMax<axis=1>(x)
        }
        """
    )
    feed = {"x": np.arange(10, dtype=np.float32).reshape(2, 5)[:, ::-1].copy()}
    result = qcc.compile(model, target="ort", calibration=[feed])
    from tests.conftest import run

    assert (run(result.model, feed)[0] == 0).all()


def _one_input_model(value: onnx.ValueInfoProto, node: onnx.NodeProto, output: onnx.ValueInfoProto, opset: int):
    graph = onnx.helper.make_graph([node], "g", [value], [output])
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])


def test_inputs_qcc_cannot_feed_are_refused_truthfully():
    bf16 = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.BFLOAT16, [4])
    relu = _one_input_model(
        bf16,
        onnx.helper.make_node("Relu", ["x"], ["y"]),
        onnx.helper.make_tensor_value_info("y", onnx.TensorProto.BFLOAT16, [4]),
        17,
    )
    with pytest.raises(qcc.QccError, match="'x' .* is bfloat16"):
        frontend.load(relu)
    optional = onnx.helper.make_value_info(
        "x", onnx.helper.make_optional_type_proto(onnx.helper.make_tensor_type_proto(onnx.TensorProto.FLOAT, [4]))
    )
    has = _one_input_model(
        optional,
        onnx.helper.make_node("OptionalHasElement", ["x"], ["y"]),
        onnx.helper.make_tensor_value_info("y", onnx.TensorProto.BOOL, []),
        18,
    )
    with pytest.raises(qcc.QccError, match="'x' .* is of type optional"):
        frontend.load(has)


def test_opset_upgrade_that_changes_an_input_rank_is_refused():
    body = onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["s", "x_t"], ["s2"]), onnx.helper.make_node("Identity", ["s2"], ["y_t"])],
        "body",
        [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [2]) for n in ("s", "x_t")],
        [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [2]) for n in ("s2", "y_t")],
    )
    scan = onnx.helper.make_node("Scan", ["", "init", "x"], ["final", "ys"], num_scan_inputs=1, body=body)
    model = onnx.helper.make_model(
        onnx.helper.make_graph(
            [scan],
            "g",
            [
                onnx.helper.make_tensor_value_info("init", onnx.TensorProto.FLOAT, [1, 2]),
                onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 2]),
            ],
            [
                onnx.helper.make_tensor_value_info("final", onnx.TensorProto.FLOAT, [1, 2]),
                onnx.helper.make_tensor_value_info("ys", onnx.TensorProto.FLOAT, [1, 3, 2]),
            ],
        ),
        opset_imports=[onnx.helper.make_opsetid("", 8)],
    )
    with pytest.raises(qcc.QccError, match="changes the rank"):
        frontend.load(model)


def test_stft_without_onesided_is_one_sided_as_onnx_runtime_runs_it():
    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[B,64,1] signal, int64 step, int64 length) => (float[B,3,9,2] y) {
          y = STFT(signal, step, , length)
        }
        """
    )
    loaded = frontend.load(model)
    stft = next(n for n in loaded.model.graph if n.op_type == "STFT")
    assert stft.attributes["onesided"].as_int() == 1


# -- Already-quantized models (issue #18) ----------------------------------------------------------

_QDQ_WEIGHT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[4,4,1,1] w, float[1,4,6,6] x) => (float[1,4,6,6] y) {
  s = Constant<value=float {0.05}>()
  z = Constant<value=int8 {0}>()
  wq = QuantizeLinear(w, s, z)
  wd = DequantizeLinear(wq, s, z)
  xq = QuantizeLinear(x, s, z)
  xd = DequantizeLinear(xq, s, z)
  y = Conv(xd, wd)
}
"""
_FLOAT_ISLAND = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[4,4,1,1] w1, float[4,4,1,1] w2, float[1,4,6,6] x) => (float[1,4,6,6] y) {
  c = Conv(x, w1)
  s = Constant<value=float {0.05}>()
  z = Constant<value=uint8 {128}>()
  q = QuantizeLinear(c, s, z)
  d = DequantizeLinear(q, s, z)
  y = Conv(d, w2)
}
"""
_LONE_DQ = """
<ir_version: 8, opset_import: ["" : 17]>
g (int8[4] x, float s) => (float[4] y) {
  y = DequantizeLinear(x, s)
}
"""


def test_a_model_with_its_weights_behind_qdq_is_recognised_as_already_quantized():
    own = frontend.load(build_model(_QDQ_WEIGHT)).own_quantization  # ModelOpt's form: float weight -> Q -> DQ
    assert own is not None and set(own.tensors) == {"wd", "xd"}
    names = {n.name: n.op_type for n in frontend.load(build_model(_QDQ_WEIGHT)).model.graph}
    assert sorted(names[n] for n in own.nodes) == [
        "Conv",
        "DequantizeLinear",
        "DequantizeLinear",
        "QuantizeLinear",
        "QuantizeLinear",
    ]


@pytest.mark.parametrize("text", [_FLOAT_ISLAND, _LONE_DQ], ids=["float_island", "lone_dequantize"])
def test_a_q_dq_op_in_a_float_model_is_not_its_quantization(text):
    # A fake-quant pair between float Convs, or a DequantizeLinear of a graph input, is an op the float
    # model computes with (ONNX's conformance cases): compiled like any other.
    assert frontend.load(build_model(text)).own_quantization is None


_QLINEAR_MATMUL = """
<ir_version: 8, opset_import: ["" : 21]>
g (int8[2,4] a, float sa, int8 za, int8[4,5] b, float sb, int8 zb, float sy, int8 zy) => (int8[2,5] y) {
  y = QLinearMatMul(a, sa, za, b, sb, zb, sy, zy)
}
"""
_QOPERATOR_MODEL = """
<ir_version: 8, opset_import: ["" : 21]>
g (float[2,4] x, float sa, int8 za, int8[4,5] b, float sb, int8 zb, float sy, int8 zy) => (float[2,5] y) {
  a = QuantizeLinear(x, sa, za)
  q = QLinearMatMul(a, sa, za, b, sb, zb, sy, zy)
  y = DequantizeLinear(q, sy, zy)
}
"""


def test_a_qoperator_model_is_refused_but_an_integer_operator_is_not():
    # An integer op on the model's integer inputs, with or without constant operands, is an op it computes with.
    assert frontend.load(onnx.parser.parse_model(_QLINEAR_MATMUL)).own_quantization is None
    assert frontend.load(build_model(_QLINEAR_MATMUL, constants={"b": np.ones((4, 5), np.int8)})) is not None
    # A float model whose activations are quantized into an integer op with an integer weight is quantized.
    quantized = build_model(_QOPERATOR_MODEL, constants={"b": np.ones((4, 5), np.int8)})
    with pytest.raises(qcc.UnsupportedModelError, match=r"already quantized \(QOperator: QLinearMatMul x1\)"):
        frontend.load(quantized)
