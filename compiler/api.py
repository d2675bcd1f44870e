"""The Python API: ``qcc.compile``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from qcc.context import Progress, no_progress
from qcc.data import CalibrationSource
from qcc.driver import CompileResult, compile_model
from qcc.options import DEFAULT_TOLERANCE, CompileOptions, parse_tolerance


def compile(  # noqa: A001 - the public name users expect
    model: object,
    target: str = "ort",
    calibration: CalibrationSource | None = None,
    *,
    per_channel: bool = True,
    activation_type: str = "auto",
    method: str | None = None,
    exclude: str | Sequence[str] = (),
    verify_each: bool = False,
    verify: bool = True,
    max_calibration_samples: int | None = None,
    weights: str = "auto",
    precision: str = "int8",
    io: str = "float",
    nhwc_io: bool = False,
    dynamic: bool = False,
    tolerance: float | str | None = DEFAULT_TOLERANCE,
    tolerance_metric: str = "cosine",
    bias_correction: bool = False,
    equalize: bool | None = None,
    weight_rounding: str = "auto",
    smoothquant: bool = True,
    refit: bool = True,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    strict: bool = False,
    progress: Progress = no_progress,
) -> CompileResult:
    """Compiles a float ONNX model into an int8 model for one runtime.

    Args:
        model: path, bytes, ``onnx.ModelProto``, ``onnx_ir.Model`` or graphsurgeon ``Graph``;
            never modified.
        target: ``"ort"`` (ONNX Runtime CPU), ``"trt"`` (TensorRT) or ``"tflite"`` (LiteRT).
            See ``qcc.targets()``.
        calibration: path to an ``.npz`` or ``.npy`` file or a folder of them, a numpy array
            (single-input model), a dict ``{input: array with a sample axis}``, an iterable of feed
            dicts, or an onnxruntime ``CalibrationDataReader`` (see ``qcc.data``).
        per_channel: per-output-channel weight scales (default) or one per tensor.
        activation_type: ``"auto"``, ``"uint8"`` or ``"int8"``.
        method: calibration method: ``"minmax"``, ``"meanmax"``, ``"percentile"``, ``"mse"``,
            ``"entropy"`` or ``"auto"``; None: the target's default (on ``trt`` and int8 ``tflite``
            minmax or meanmax, whichever is closer to fp32 on the calibration samples; minmax
            elsewhere).
        exclude: node names or op types to keep in float (one string is one name); each must match
            a node of the model.
        verify_each: check IR invariants after every pass (debugging).
        verify: run the artifact in its runtime and put the result in the report.
        max_calibration_samples: use at most this many samples.
        io: ``"float"`` or ``"int8"`` model inputs and outputs (``tflite``).
        nhwc_io: NHWC 4-D inputs and outputs instead of the model's NCHW (``tflite``).
        weights: ``"auto"``, ``"int8"`` (int8 initializers, smaller) or ``"qdq"`` (float behind Q->DQ).
        precision: ``"int8"``, ``"fp8"`` (E4M3; ``trt`` only) or ``"int4"`` (weight-only MatMul/Gemm;
            ``trt`` and ``ort``, no calibration needed).
        dynamic: int8 MatMul/Gemm weights, activations quantized at run time (``ort``);
            ``calibration`` may then be None (it is only used to verify).
        tolerance: the largest output error allowed on the calibration samples; above it the
            nodes that hurt most are kept float until it holds (``report["mixed_precision"]``
            lists them with their measured effect). None: quantize all the plan allows. Also the
            CLI's text form: ``"0.002"``, ``"relative:0.05"``, ``"off"``.
        tolerance_metric: ``"cosine"`` (1 - cosine similarity, per output) or ``"relative"``
            (relative L2 error).
        bias_correction: subtract each int8 Conv/Gemm's mean weight-rounding shift, measured on
            the calibration data, from its bias.
        equalize: cross-layer equalization of consecutive convolutions and of linear residual
            streams (MobileNetV2's); None: residual streams whenever the calibration data can be
            read twice, consecutive convolutions only with ``per_channel=False``, where one scale
            per weight tensor needs it; False: neither.
        weight_rounding: ``"gptq"``: round each Conv/MatMul/Gemm weight so that its layer's output
            on the calibration inputs moves least (``report["weight_rounding"]`` says which layers
            and by how much); ``"nearest"``: every weight to its nearest level; ``"auto"``
            (default): gptq, and where ``tolerance`` needs nodes kept float, nearest too, keeping
            the one with fewer nodes float if both meet it, else the one closer to fp32
            (``report["rounding_selection"]``).
        smoothquant: divide MatMul/Gemm input channels with outliers by per-channel factors
            moved into the weights (SmoothQuant), per tensor where that lowers the layers' int8
            output error on the calibration data (``report["smoothing"]`` lists them).
        refit: refit each int8 layer's weights, in graph order, to the quantized model's own
            inputs so that it reproduces the float model's output (``report["refit"]``).
        input_shapes: pin inputs to one shape, e.g. ``{"x": (1, 3, 48, 320)}`` (every dimension).
            ``tflite`` then writes a static artifact of exactly these shapes; without it, the
            model's dynamic dimensions stay dynamic in the ``.tflite`` (``-1`` in its
            ``shape_signature``; resize the inputs in LiteRT before running another size).
            ``ort`` and ``trt`` keep the model's shapes.
        strict: after compiling, raise :class:`~qcc.errors.StrictError` (``exit_code`` 3, the
            result attached as ``.result``) if the compile missed ``tolerance``, quantized nothing,
            kept nodes it could quantize float, or failed verification (the warnings in
            ``qcc.report.STRICT_WARNINGS``). Without it those are only ``result.warnings``, also
            logged on the ``qcc`` logger.
        progress: ``progress(stage, done, total)`` callback.

    Returns:
        A :class:`CompileResult` with ``.model`` (int8 ``onnx.ModelProto`` for ONNX targets),
        ``.report``, ``.warnings`` and ``.save(path)``.

    Raises:
        QccError: with a message naming the problem and the fix.
        StrictError: with ``strict``, the compile has a warning ``strict`` does not accept.
    """
    if isinstance(tolerance, str):  # the CLI's form: "0.002", "relative:0.05", "off"
        parsed = parse_tolerance(tolerance)
        tolerance = parsed["tolerance"]
        tolerance_metric = parsed.get("tolerance_metric", tolerance_metric)
    options = CompileOptions(
        target=target,
        per_channel=per_channel,
        activation_type=activation_type,
        method=method,
        exclude=(exclude,) if isinstance(exclude, str) else tuple(exclude),
        verify_each=verify_each,
        verify=verify,
        max_calibration_samples=max_calibration_samples,
        weights=weights,
        precision=precision,
        io=io,
        nhwc_io=nhwc_io,
        dynamic=dynamic,
        tolerance=tolerance,
        tolerance_metric=tolerance_metric,
        bias_correction=bias_correction,
        equalize=equalize,
        weight_rounding=weight_rounding,
        smoothquant=smoothquant,
        refit=refit,
        input_shapes={name: tuple(shape) for name, shape in (input_shapes or {}).items()},
    )
    result = compile_model(model, calibration, options, progress)
    result.inputs = tuple(os.fspath(p) for p in (model, calibration) if isinstance(p, (str, os.PathLike)))
    if strict:
        result.check_strict()
    return result
