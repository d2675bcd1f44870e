"""HannWindow, HammingWindow, BlackmanWindow and MelWeightMatrix in ``backends/_tflite_ops_spectral.py``.

Single-op models with run-time scalar inputs are compiled for ``tflite``, run in LiteRT under both
resolvers and compared with ONNX Runtime; the constant path's float64 values are compared with
ONNX's reference implementation, and a model whose inputs are all constants compiles either way
(folded by the frontend or written by the rule).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx.reference import ReferenceEvaluator

import qcc
from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_spectral import mel_weight_values, window_values
from qcc.backends._tflite_writer import builtin, serialize
from qcc.errors import QccError
from tests.conftest import run as run_ort
from tests.e2e.conformance import run_tflite

_RESOLVERS = ("xnnpack", "builtin")
_WINDOWS = ("HannWindow", "HammingWindow", "BlackmanWindow")
# name -> (num_mel_bins, dft_length, sample_rate, lower_edge_hertz, upper_edge_hertz)
_MEL = {
    "onnx_case": (8, 16, 8192, 0.0, 4096.0),
    "speech": (10, 64, 16000, 20.0, 8000.0),
    "odd_dft": (5, 33, 22050, 125.0, 3800.0),
}


def _model(graph: str, opset: int = 17) -> onnx.ModelProto:
    return onnx.parser.parse_model(f'<ir_version: 8, opset_import: ["" : {opset}]>\n{graph}')


def _tflite(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> bytes:
    return qcc.compile(model, target="tflite", calibration=[feed], verify=False).artifact.data


def _check(data: bytes, model: onnx.ModelProto, feed: dict[str, np.ndarray], atol: float = 1e-5) -> None:
    expected = run_ort(model, feed)
    for resolver in _RESOLVERS:
        got = run_tflite(data, feed, resolver)
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            assert g.dtype == e.dtype, resolver
            np.testing.assert_allclose(np.asarray(g, np.float64), e, atol=atol, err_msg=resolver)


@pytest.mark.parametrize("periodic", [1, 0])
@pytest.mark.parametrize("op", _WINDOWS)
def test_window_of_a_run_time_size_matches_onnxruntime(op, periodic):
    model = _model(f"g (int64 n) => (float[12] y) {{ y = {op}<periodic={periodic}>(n) }}")
    feed = {"n": np.array(12, np.int64)}
    _check(_tflite(model, feed), model, feed)


@pytest.mark.parametrize(("datatype", "name"), [(11, "double"), (10, "float16")])
def test_window_output_datatype_is_cast_at_the_edge(datatype, name):
    model = _model(f"g (int32 n) => ({name}[9] y) {{ y = BlackmanWindow<output_datatype={datatype}>(n) }}")
    feed = {"n": np.array(9, np.int32)}
    _check(_tflite(model, feed), model, feed, atol=1e-3)


def test_window_follows_a_size_other_than_the_calibration_one():
    model = _model("g (int32 n) => (float[10] y) { y = HammingWindow(n) }")
    data = _tflite(model, {"n": np.array(10, np.int32)})
    _check(data, model, {"n": np.array(16, np.int32)})


@pytest.mark.parametrize("periodic", [1, 0])
@pytest.mark.parametrize("op", _WINDOWS)
def test_window_constant_values_match_the_onnx_reference(op, periodic):
    model = _model(f"g (int64 n) => (float[N] y) {{ y = {op}<periodic={periodic}>(n) }}")
    (expected,) = ReferenceEvaluator(model).run(None, {"n": np.array(7, np.int64)})
    np.testing.assert_allclose(window_values(op, 7, bool(periodic)), expected, atol=1e-6)


def _mel_model(constant_tail: bool, values) -> onnx.ModelProto:
    shape = f"{values[1] // 2 + 1}, {values[0]}"
    header = f"g (int32 bins, int32 dft, int32 rate, float lo, float hi) => (float[{shape}] y)"
    model = _model(f"{header} {{ y = MelWeightMatrix(bins, dft, rate, lo, hi) }}")
    if constant_tail:
        names = ["dft", "rate", "lo", "hi"]
        for name, value in zip(names, values[1:], strict=True):
            array = np.array(value, np.float32 if name in ("lo", "hi") else np.int32)
            model.graph.initializer.append(onnx.numpy_helper.from_array(array, name))
        kept = [v for v in model.graph.input if v.name == "bins"]
        del model.graph.input[:]
        model.graph.input.extend(kept)
    return model


def _mel_feed(values, constant_tail: bool) -> dict[str, np.ndarray]:
    bins, dft, rate, lo, hi = values
    feed = {"bins": np.array(bins, np.int32)}
    if not constant_tail:
        feed.update(dft=np.array(dft, np.int32), rate=np.array(rate, np.int32), lo=np.float32(lo), hi=np.float32(hi))
        feed = {k: np.asarray(v) for k, v in feed.items()}
    return feed


@pytest.mark.parametrize("constant_tail", [False, True])
@pytest.mark.parametrize("name", sorted(_MEL))
def test_mel_weight_matrix_of_run_time_inputs_matches_onnxruntime(name, constant_tail):
    model = _mel_model(constant_tail, _MEL[name])
    feed = _mel_feed(_MEL[name], constant_tail)
    _check(_tflite(model, feed), model, feed)


@pytest.mark.parametrize("name", sorted(_MEL))
def test_mel_weight_constant_values_match_the_onnx_reference(name):
    values = _MEL[name]
    model = _mel_model(False, values)
    (expected,) = ReferenceEvaluator(model).run(None, _mel_feed(values, False))
    np.testing.assert_allclose(mel_weight_values(*values), expected, atol=1e-6)


def _constant_inputs_graph(op: str, arrays: list[np.ndarray], shape: list[int]) -> onnx.ModelProto:
    """``y = op(constants) * x``: the generator's inputs are initializers."""
    names = [f"c{i}" for i in range(len(arrays))]
    dims = ", ".join(str(d) for d in shape)
    model = _model(f"g (float[{dims}] x) => (float[{dims}] y) {{ m = {op}({', '.join(names)})\n y = Mul(m, x) }}")
    for name, array in zip(names, arrays, strict=True):
        model.graph.initializer.append(onnx.numpy_helper.from_array(array, name))
    return model


_MEL_TYPES = (np.int32, np.int32, np.int32, np.float32, np.float32)
_CONSTANT_CASES = {
    "mel": ("MelWeightMatrix", [np.array(v, t) for v, t in zip(_MEL["speech"], _MEL_TYPES, strict=True)], [33, 10]),
    "hann": ("HannWindow", [np.array(7, np.int64)], [7]),
}


@pytest.mark.parametrize("name", sorted(_CONSTANT_CASES))
def test_constant_inputs_compile_to_the_constant(name):
    op, arrays, shape = _CONSTANT_CASES[name]
    model = _constant_inputs_graph(op, arrays, shape)
    feed = {"x": np.linspace(0.5, 2.0, int(np.prod(shape)), dtype=np.float32).reshape(shape)}
    data = _tflite(model, feed)  # the frontend folds the generator: only the Mul is left
    _check(data, model, feed)


@pytest.mark.parametrize("name", sorted(_CONSTANT_CASES))
def test_the_rule_writes_constant_inputs_as_a_constant(name):
    op, arrays, shape = _CONSTANT_CASES[name]
    model = ir.serde.deserialize_model(_constant_inputs_graph(op, arrays, shape))
    node = next(n for n in model.graph if n.op_type == op)
    node.outputs[0].shape, node.outputs[0].dtype = ir.Shape(shape), ir.DataType.FLOAT
    flat = Lowering(io_int8=False).lower(model.graph)
    assert [o.code for o in flat.ops] == [builtin("RESHAPE"), builtin("MUL")]
    feed = {"x": np.linspace(0.5, 2.0, int(np.prod(shape)), dtype=np.float32).reshape(shape)}
    for resolver in _RESOLVERS:
        (got,) = run_tflite(serialize(flat), feed, resolver)
        np.testing.assert_allclose(got, run_ort(_constant_inputs_graph(op, arrays, shape), feed)[0], atol=1e-5)


def test_window_without_a_declared_length_is_refused_with_the_reason():
    model = _model("g (int64 n) => (float[N] y) { y = HannWindow(n) }")
    with pytest.raises(QccError, match="run-time value of 'n'.*declare the output's static shape"):
        _tflite(model, {"n": np.array(8, np.int64)})
