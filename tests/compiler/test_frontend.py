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
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
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
