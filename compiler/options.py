"""Typed compile options shared by the API, the CLI and the passes.

Unknown option names and invalid values are errors (:class:`~qcc.errors.OptionError`), never
silently ignored: ``CompileOptions.from_kwargs`` is the one place user keywords are parsed.
"""

from __future__ import annotations

import dataclasses
import enum
import platform

from qcc.errors import OptionError


class ActivationType(str, enum.Enum):
    """Integer type of quantized activations (weights are always int8)."""

    AUTO = "auto"  # per target: ORT on x86 -> uint8, on ARM -> int8; TFLite/TensorRT -> int8
    UINT8 = "uint8"
    INT8 = "int8"


class WeightStorage(str, enum.Enum):
    """How quantized weights are stored in ONNX artifacts."""

    AUTO = "auto"  # per target: int8 for ort, float behind Q->DQ for trt (TensorRT's convention)
    INT8 = "int8"  # int8 initializers behind DequantizeLinear: ~4x smaller files
    QDQ = "qdq"  # float initializers behind QuantizeLinear -> DequantizeLinear


class IoType(str, enum.Enum):
    """Type of the artifact's inputs and outputs where the target lets qcc choose (``tflite``)."""

    FLOAT = "float"  # float32 interface; the artifact quantizes inputs and dequantizes outputs
    INT8 = "int8"  # int8 interface carrying the edge tensors' quantization parameters


class Precision(str, enum.Enum):
    """Number format of quantized tensors."""

    INT8 = "int8"
    FP8 = "fp8"  # E4M3 (float8e4m3fn), opset 19: TensorRT on Ada/Hopper and newer
    INT4 = "int4"  # weight-only int4 blocks for MatMul/Gemm, opset 21; activations stay float


class WeightRounding(str, enum.Enum):
    """How weights are rounded onto their int8 grid (see passes/weight_rounding.py)."""

    AUTO = "auto"  # gptq; when the compile needs mixed precision, also nearest (selection: driver._keep_closer)
    GPTQ = "gptq"  # each rounding error compensated in the layer's later weights, by the calibration inputs
    NEAREST = "nearest"  # each weight to its nearest level


class CalibrationMethod(str, enum.Enum):
    """How an activation's clip range is chosen from its observed values (see passes/_clip_range.py)."""

    AUTO = "auto"  # minmax; if the output misses --tolerance, per tensor the method closest to fp32 on the outputs

    MINMAX = "minmax"  # the observed range: never clips (ort, tflite default)
    MEANMAX = "meanmax"  # the mean of each sample's own range (trt default; ModelOpt-like)
    PERCENTILE = "percentile"  # each side clipped at its 99.99th percentile
    MSE = "mse"  # the range with the least expected squared quantization error
    ENTROPY = "entropy"  # TensorRT's KL-divergence threshold over 2048 bins -> 128 levels


class ToleranceMetric(str, enum.Enum):
    """The output error ``tolerance`` bounds, per output, averaged over the samples."""

    COSINE = "cosine"  # 1 - cosine similarity with the float output
    RELATIVE = "relative"  # L2 norm of the error over the L2 norm of the float output


# 1 - cosine on every output. At 0.01, EfficientNet-Lite0 passed with every node int8 and top-1
# agreement 0.92 on the eval images; at 0.002 it keeps 5 nodes float and agrees on 0.97 at about
# the same speed (README, "Accuracy bound").
DEFAULT_TOLERANCE = 0.002


@dataclasses.dataclass(frozen=True)
class CompileOptions:
    """Everything that changes what qcc produces.

    Attributes:
        target: ``ort``, ``trt`` or ``tflite`` (see ``qcc targets``).
        per_channel: per-output-channel weight scales (default) instead of one per tensor.
        activation_type: integer type of activations; ``auto`` picks what the target runs fastest.
        method: calibration method; None: the target's default (``TargetSpec.default_methods``).
        exclude: node names or op types kept in float.
        verify_each: run the invariant checker after every pass (slower; for debugging).
        verify: run the artifact in its runtime after emitting it and report the result.
        max_calibration_samples: use at most this many calibration samples (None: all).
        weights: how ONNX artifacts store quantized weights.
        precision: int8 everywhere, or fp8 (E4M3) for targets that support it (``trt``).
        io: float or int8 model inputs and outputs (``tflite``; other targets ignore it).
        nhwc_io: 4-D inputs and outputs are NHWC in the artifact (``tflite``), not the model's NCHW.
        dynamic: int8 MatMul/Gemm weights with activations quantized at run time (``ort``); no
            calibration needed, the rest of the model stays float.
        tolerance: the largest output error allowed on the calibration samples (by
            ``tolerance_metric``); above it, the most harmful nodes are kept float until it holds
            (``passes/mixed_precision.py``). None: quantize everything the plan allows.
        tolerance_metric: what ``tolerance`` bounds: ``cosine`` (1 - cosine) or ``relative``.
        bias_correction: subtract each int8 Conv/Gemm's weight-rounding shift from its bias
            (``passes/bias_correction.py``; off by default: it lowers PP-OCRv5's fidelity).
        equalize: cross-layer equalization of consecutive convolutions (``passes/equalize.py``)
            and of linear residual streams (``passes/equalize_residual.py``); None: residual
            streams whenever int8 calibration data can be read twice, consecutive convolutions
            only with per-tensor weights, where it helps; False: neither.
        weight_rounding: ``gptq``: int8 weights of Conv/MatMul/Gemm rounded so that the layer's
            output on the calibration inputs moves least (``passes/weight_rounding.py``);
            ``nearest``: every weight to its nearest level; ``auto`` (default): gptq, and where the
            compile needs nodes kept float for ``tolerance``, nearest too, keeping the one with
            fewer nodes float if both meet it, else the one closer to fp32 on the calibration
            samples.
        smoothquant: divide MatMul/Gemm input channels with outliers by per-channel factors
            folded into the weights (and the producer's constants), where that lowers the layer's
            output error on the calibration data (``passes/smooth_activations.py``).
        refit: refit each int8 layer's weights, in graph order, so that on the quantized model's
            own inputs it reproduces the float model's output (``passes/refit_weights.py``).
        input_shapes: input name -> the shape to pin it to (every dimension). ``tflite`` writes
            a static artifact of these shapes; without it, the model's dynamic dimensions stay
            dynamic (``-1`` in the TFLite ``shape_signature``) wherever the artifact can compute
            them at run time. ``ort`` and ``trt`` keep the model's shapes and ignore it.
    """

    target: str = "ort"
    per_channel: bool = True
    activation_type: ActivationType = ActivationType.AUTO
    method: CalibrationMethod | None = None
    exclude: tuple[str, ...] = ()
    verify_each: bool = False
    verify: bool = True
    max_calibration_samples: int | None = None
    weights: WeightStorage = WeightStorage.AUTO
    precision: Precision = Precision.INT8
    io: IoType = IoType.FLOAT
    nhwc_io: bool = False
    dynamic: bool = False
    tolerance: float | None = DEFAULT_TOLERANCE
    tolerance_metric: ToleranceMetric = ToleranceMetric.COSINE
    bias_correction: bool = False
    equalize: bool | None = None
    weight_rounding: WeightRounding = WeightRounding.AUTO
    smoothquant: bool = True
    refit: bool = True
    input_shapes: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, kind in _ENUM_FIELDS.items():
            value = getattr(self, name)
            if value is None and name == "method":
                continue
            try:
                object.__setattr__(self, name, kind(value))
            except ValueError:
                raise OptionError(
                    f"{name}={value!r} is not valid.", f"use one of {', '.join(k.value for k in kind)}."
                ) from None
        if isinstance(self.exclude, str):
            object.__setattr__(self, "exclude", (self.exclude,))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        object.__setattr__(self, "input_shapes", _checked_shapes(self.input_shapes))
        if self.max_calibration_samples is not None and self.max_calibration_samples < 1:
            raise OptionError(
                f"max_calibration_samples={self.max_calibration_samples} must be at least 1.",
                "pass a positive number or None for all samples.",
            )

        number = isinstance(self.tolerance, (int, float)) and not isinstance(self.tolerance, bool)
        valid = number and self.tolerance >= 0
        if self.tolerance is not None and not valid:
            raise OptionError(
                f"tolerance={self.tolerance!r} is not a non-negative number.",
                "pass e.g. 0.01 (1 - cosine of every output), or None to quantize all the plan allows.",
            )

    @property
    def needs_calibration(self) -> bool:
        """False when no activation gets a calibrated range (``dynamic``, weight-only ``int4``)."""
        return not (self.dynamic or self.precision == Precision.INT4)

    @classmethod
    def from_kwargs(cls, **kwargs: object) -> CompileOptions:
        """Builds options from keyword arguments, rejecting unknown names.

        Raises:
            OptionError: a keyword is not an option, or a value is invalid.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise OptionError(
                f"unknown option(s): {', '.join(unknown)}.",
                f"valid options are {', '.join(sorted(known))}.",
            )
        return cls(**kwargs)  # type: ignore[arg-type]


_ENUM_FIELDS = {
    "activation_type": ActivationType,
    "method": CalibrationMethod,
    "weights": WeightStorage,
    "io": IoType,
    "precision": Precision,
    "tolerance_metric": ToleranceMetric,
    "weight_rounding": WeightRounding,
}


def parse_tolerance(text: str) -> dict[str, object]:
    """Parses the CLI's ``--tolerance``: ``0.01`` (1 - cosine), ``cosine:0.01``, ``relative:0.05``
    or ``off``, into ``tolerance`` and ``tolerance_metric`` options.

    Raises:
        OptionError: the text is none of these.
    """
    if text.strip().lower() in ("off", "none"):
        return {"tolerance": None}
    metric, _, number = text.rpartition(":")
    try:
        return {"tolerance": float(number), "tolerance_metric": ToleranceMetric(metric or "cosine")}
    except ValueError:
        raise OptionError(
            f"--tolerance {text!r} is not a bound.",
            "pass a number (1 - cosine, e.g. 0.01), cosine:0.01, relative:0.05, or off.",
        ) from None


def parse_input_shape(texts: list[str] | tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """Parses the CLI's repeatable ``--input-shape NAME=1,3,48,320`` into ``input_shapes``.

    Raises:
        OptionError: a text is not ``NAME=d1,d2,...`` with positive integer sizes, or names an
            input twice.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for text in texts:
        name, sep, dims = text.rpartition("=")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError:
            shape = ()
        if not sep or not name or not shape:
            raise OptionError(
                f"--input-shape {text!r} is not NAME=SIZES.",
                "write the input's name, '=', and its size in every dimension, e.g. --input-shape x=1,3,48,320.",
            )
        if name in shapes:
            raise OptionError(f"--input-shape names {name!r} twice.", "give one shape per input.")
        shapes[name] = shape
    return _checked_shapes(shapes)


def _checked_shapes(shapes: object) -> dict[str, tuple[int, ...]]:
    if not isinstance(shapes, dict) or not all(isinstance(k, str) for k in shapes):
        raise OptionError(
            f"input_shapes={shapes!r} is not a mapping of input names to shapes.",
            'pass e.g. input_shapes={"x": (1, 3, 48, 320)}.',
        )
    checked = {}
    for name, shape in shapes.items():
        dims = tuple(shape) if isinstance(shape, (list, tuple)) else None
        if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
            raise OptionError(
                f"input_shapes[{name!r}]={shape!r} is not a shape of positive sizes.",
                "give every dimension a size, e.g. (1, 3, 48, 320); a pinned shape has no dynamic dimension.",
            )
        checked[name] = dims
    return checked


def host_is_arm() -> bool:
    """True on ARM hosts, where ONNX Runtime's CPU kernels prefer int8 activations."""
    return platform.machine().lower() in {"arm64", "aarch64", "armv8l", "armv7l"}
