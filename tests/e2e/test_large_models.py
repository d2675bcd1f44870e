"""Models too large for one protobuf: external data in, external data out, nothing copied into a proto.

Real > 2 GB models belong in ``models/bench_large.py`` (``make bench-large``); here the size
thresholds are lowered so a small model takes exactly the same paths.
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import qcc
import qcc.runtime
from qcc import frontend
from qcc.runtime import session
from tests.conftest import build_model, random_feeds

_MLP = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,64] x, float[64,256] w1, float[256,32] w2) => (float[1,32] y) {
 h = MatMul(x, w1)
 r = Relu(h)
 y = MatMul(r, w2)
}
"""


@pytest.fixture
def external_model(tmp_path):
    model = build_model(_MLP)
    path = tmp_path / "in" / "m.onnx"
    path.parent.mkdir()
    # onnx.save moves the tensors of the proto it is given into external data: save a copy.
    onnx.save(onnx.ModelProto.FromString(model.SerializeToString()), path, save_as_external_data=True,
              location="m.onnx.data", size_threshold=1024)
    return model, path


def _tiny_thresholds(monkeypatch) -> None:
    """Every model counts as large and every tensor over 1 KB goes to external data."""
    monkeypatch.setattr(qcc.runtime, "LARGE_MODEL_BYTES", 1024)
    monkeypatch.setattr(qcc.runtime, "EXTERNAL_TENSOR_BYTES", 1024)


def _digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_a_large_models_external_data_stays_in_its_file_until_a_pass_reads_it(external_model, monkeypatch):
    _, path = external_model
    _tiny_thresholds(monkeypatch)
    loaded = frontend.load(str(path))
    assert isinstance(loaded.model.graph.initializers["w1"].const_value, ir.ExternalTensor)
    assert not any(t.raw_data for t in loaded.proto.graph.initializer if t.name in ("w1", "w2"))


@pytest.mark.parametrize("target", ["ort", "trt", "tflite"])
def test_a_small_model_with_external_data_compiles_from_any_folder(external_model, tmp_path, monkeypatch, target):
    model, path = external_model
    monkeypatch.chdir(tmp_path)  # not the model's folder: nothing may resolve the data file from here
    loaded = frontend.load(str(path))
    assert not isinstance(loaded.model.graph.initializers["w1"].const_value, ir.ExternalTensor)
    result = qcc.compile(str(path), target=target, calibration=random_feeds(model, 4))
    assert result.report["verify"]["ok"] and result.artifact.data is not None


@pytest.mark.parametrize("target", ["ort", "trt"])
def test_a_large_model_compiles_to_external_data_identical_to_the_in_memory_path(
    external_model, monkeypatch, tmp_path, target
):
    model, path = external_model
    before = _digest(path.parent)
    feeds = random_feeds(model, 4)
    in_memory = qcc.compile(model, target=target, calibration=feeds)
    _tiny_thresholds(monkeypatch)
    result = qcc.compile(str(path), target=target, calibration=feeds)
    assert result.artifact.data is None and result.report["verify"]["ok"]
    out = tmp_path / "out" / "q.onnx"
    out.parent.mkdir()
    result.save(out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["q.onnx", "q.onnx.data"]
    assert _digest(path.parent) == before  # the input model and its data are untouched
    # ONNX Runtime loads the written pair from its path and computes what the one-protobuf artifact
    # computes (to float rounding: calibration without weight prepacking sums in another order).
    assert [n.op_type for n in onnx.load(out).graph.node] == [n.op_type for n in in_memory.model.graph.node]
    reference = session(in_memory.artifact.data, level="disable")
    written = session(str(out), level="disable")
    for feed in random_feeds(model, 2, seed=7):
        np.testing.assert_allclose(written.run(None, feed)[0], reference.run(None, feed)[0], rtol=1e-5, atol=1e-5)


def test_a_session_of_a_large_model_gets_its_tensors_from_memory(external_model, monkeypatch):
    model, path = external_model
    _tiny_thresholds(monkeypatch)
    loaded = frontend.load(str(path))
    feed = random_feeds(model, 1)[0]
    outputs = session(loaded.model, extra_outputs=("h",)).run(None, feed)
    expected = session(model).run(None, feed)[0]
    np.testing.assert_allclose(outputs[0], expected, rtol=1e-5, atol=1e-5)
    assert outputs[1].shape == (1, 256)  # the extra output
