"""Generates the bad-input corpus: models and calibration files that are wrong in one way each.

``python tests/bad_inputs.py DIR`` writes the corpus to DIR (no blobs are committed); the tests
call :func:`write_corpus`. Each case names what qcc must do: ``error`` (exit 2, one line naming the
problem), ``compile`` (the right answer is a working artifact, and no warning) or ``warn:<codes>`` (a
working artifact, and exactly the warnings ``<codes>``, comma-separated, of ``qcc.report.WARNING_CODES``:
the mistake must not pass silently); a case whose answer depends on the target gives one per target.

Already-quantized models come from ONNX Runtime's own quantizer (``quantize_static``), as users'
do: :func:`ort_quantized` makes them.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper as h
from onnx import numpy_helper as nh

X = h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8])
Y = h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 8])


def _model(nodes, inits, opset=17, ir_version=8, inputs=(X,), outputs=(Y,), extra_opsets=()) -> onnx.ModelProto:
    graph = h.make_graph(nodes, "g", list(inputs), list(outputs), inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset), *extra_opsets])
    model.ir_version = ir_version
    return model


# TensorRT runs a batch-1 MatMul (a GEMV) faster in float, so the corpus' one-MatMul models quantize
# nothing there, and qcc says so.
_ON_TRT_A_GEMV_STAYS_FLOAT = {"ort": "compile", "trt": "warn:nothing_quantized", "tflite": "compile"}


def _weight(value: float | None = None) -> np.ndarray:
    w = np.random.default_rng(0).normal(0, 0.3, (8, 8)).astype(np.float32)
    if value is not None:
        w[2, 3] = value
    return w


def ort_quantized(model: onnx.ModelProto, form: str = "qdq", symmetric: bool = False) -> onnx.ModelProto:
    """``model`` quantized by ONNX Runtime's ``quantize_static`` on 8 random samples of its inputs.

    Args:
        model: a float model whose inputs have static shapes.
        form: ``"qdq"`` (QuantizeLinear/DequantizeLinear around float ops) or ``"qoperator"``
            (QLinearConv, QLinearMatMul, QGemm, ...).
        symmetric: int8 activations and weights with zero points 0 (what TensorRT requires); else
            ONNX Runtime's defaults (int8 with zero points).
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    rng = np.random.default_rng(3)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.input}

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()} for _ in range(8)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    quant_format = QuantFormat.QDQ if form == "qdq" else QuantFormat.QOperator
    extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False} if symmetric else {}
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "quantized.onnx"
        quantize_static(model, out, Reader(), quant_format=quant_format, extra_options=extra)
        return onnx.load(out)


def write_corpus(folder: Path) -> dict[str, tuple[Path, Path, str | dict[str, str]]]:
    """Writes every case; returns name -> (model path, calibration path, expected outcome: one, or one
    per target)."""
    folder.mkdir(parents=True, exist_ok=True)
    good = _model([h.make_node("MatMul", ["x", "w"], ["y"])], [nh.from_array(_weight(), "w")])
    calib = folder / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).normal(size=(8, 1, 8)).astype(np.float32))
    cases: dict[str, tuple[onnx.ModelProto | bytes | None, str | dict[str, str], str | None]] = {
        "empty_file": (b"", "error", None),
        "random_bytes": (np.random.default_rng(2).bytes(4096), "error", None),
        "truncated": (good.SerializeToString()[:-20], "error", None),
        "tensor_not_model": (nh.from_array(_weight(), "w").SerializeToString(), "error", None),
        "nan_weights": (
            _model([h.make_node("MatMul", ["x", "w"], ["y"])], [nh.from_array(_weight(np.nan), "w")]),
            "error",
            None,
        ),
        # Its only MatMul stays float (an inf weight has no int8 scale): compiles, and says nothing is int8.
        # LiteRT's XNNPACK run of the float FULLY_CONNECTED disagrees with the reference on the outputs the
        # inf makes non-finite, and the verification says so.
        "inf_weights": (
            _model([h.make_node("MatMul", ["x", "w"], ["y"])], [nh.from_array(_weight(np.inf), "w")]),
            {
                "ort": "warn:nothing_quantized",
                "trt": "warn:nothing_quantized",
                "tflite": "warn:nothing_quantized,verify_failed",
            },
            None,
        ),
        "custom_domain_op": (
            _model(
                [h.make_node("MatMul", ["x", "w"], ["t"]), h.make_node("Foo", ["t"], ["y"], domain="com.acme")],
                [nh.from_array(_weight(), "w")],
                extra_opsets=[h.make_opsetid("com.acme", 1)],
            ),
            "error",
            None,
        ),
        "opset_9": (
            _model(
                [h.make_node("MatMul", ["x", "w"], ["t"]), h.make_node("Relu", ["t"], ["y"])],
                [nh.from_array(_weight(), "w")],
                opset=9,
                ir_version=4,
            ),
            _ON_TRT_A_GEMV_STAYS_FLOAT,
            None,
        ),
        "future_opset": (
            _model([h.make_node("MatMul", ["x", "w"], ["y"])], [nh.from_array(_weight(), "w")], opset=99),
            "error",
            None,
        ),
        "empty_graph": (_model([], [], outputs=()), "error", None),
        "constant_activation": (
            _model(
                [h.make_node("Mul", ["x", "zero"], ["z"]), h.make_node("MatMul", ["z", "w"], ["y"])],
                [nh.from_array(_weight(), "w"), nh.from_array(np.zeros((1, 8), np.float32), "zero")],
            ),
            _ON_TRT_A_GEMV_STAYS_FLOAT,
            None,
        ),
        # Already quantized by ONNX Runtime: the QDQ model keeps its own Q/DQ where the artifact is ONNX;
        # with zero points (ONNX Runtime's default) TensorRT refuses it, and TFLite takes float models only.
        "qdq_model": (ort_quantized(good), {"ort": "warn:already_quantized", "trt": "error", "tflite": "error"}, None),
        "qdq_model_symmetric": (
            ort_quantized(good, symmetric=True),
            {"ort": "warn:already_quantized", "trt": "warn:already_quantized", "tflite": "error"},
            None,
        ),
        "qoperator_model": (ort_quantized(good, "qoperator"), "error", None),
        # No operator with an int8 kernel on any target: a float artifact, and a warning that says why.
        "nothing_quantizable": (
            _model([h.make_node("Sin", ["x"], ["s"]), h.make_node("Exp", ["s"], ["y"])], []),
            "warn:nothing_quantized",
            None,
        ),
        "calib_zero_samples": (good, "error", "zero"),
        "calib_wrong_rank": (good, "error", "rank"),
        "calib_int_dtype": (good, "error", "int"),
        "calib_inf": (good, "error", "inf"),
        "calib_missing_input": (good, "error", "missing"),
        "calib_not_npz": (good, "error", "text"),
    }
    bad_calib = {
        "zero": {"x": np.zeros((0, 1, 8), np.float32)},
        "rank": {"x": np.zeros((4, 8), np.float32)[None]},
        "int": {"x": np.ones((4, 1, 8), np.int32)},
        "inf": {"x": np.full((4, 1, 8), np.inf, np.float32)},
        "missing": {"image": np.zeros((4, 1, 8), np.float32)},
    }
    written = {}
    for name, (model, outcome, calib_kind) in cases.items():
        path = folder / f"{name}.onnx"
        path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
        data = calib
        if calib_kind == "text":
            data = folder / f"{name}.npz"
            data.write_text("not a zip archive\n")
        elif calib_kind is not None:
            data = folder / f"{name}.npz"
            np.savez(data, **bad_calib[calib_kind])
        written[name] = (path, data, outcome)
    written["good"] = (folder / "good.onnx", calib, "compile")  # for OPTION_CASES
    written["good"][0].write_bytes(good.SerializeToString())
    return written


# Mistakes in the options rather than the files, on the "good" model and calibration (issue 18):
# name -> (extra `qcc compile` arguments, expected outcome). "{other}" is the output named for the
# other kind of artifact (.onnx for tflite, .tflite for ort/trt); "strict:<codes>" means exit 3,
# after writing the artifact, with one of those warnings (a bound no int8 artifact meets is missed,
# or met by keeping every node float).
OPTION_CASES: dict[str, tuple[tuple[str, ...], str]] = {
    "exclude_matches_nothing": (("--exclude", "/no/such/node"), "error"),
    "output_named_for_another_target": (("-o", "{other}"), "error"),
    "strict_missed_tolerance": (
        ("--tolerance", "1e-12", "--strict"),
        "strict:tolerance_missed,kept_float,nothing_quantized",  # trt keeps a batch-1 MatMul float
    ),
}


if __name__ == "__main__":
    for name, (model, data, outcome) in write_corpus(Path(sys.argv[1])).items():
        print(f"{name}: {model.name} with {data.name} -> {outcome}")
    for name, (args, outcome) in OPTION_CASES.items():
        print(f"{name}: the good model with {' '.join(args)} -> {outcome}")
