"""Typed compile options, defined once: each field of :class:`CompileOptions` carries its metadata.

Every option qcc has is a field of :class:`CompileOptions`, and its :class:`OptionInfo` (the field's
metadata) says everything else about it: what it means for Python users (``doc``, from which the
docstrings of ``CompileOptions`` and ``qcc.compile`` are generated), how a user may write it from
Python (``parse``, e.g. ``tolerance="relative:0.05"``), and its command-line flag (:class:`CliFlag`:
flag names, help, the value typer parses, its conversion, and the commands that take it). From that
one definition ``qcc.compile`` takes its keywords (:meth:`CompileOptions.from_kwargs`) and the CLI
builds its options (``qcc.cli``) and reads them back (:meth:`CompileOptions.from_cli`).
``tests/compiler/test_options.py`` holds the three to it.

Unknown option names and invalid values are errors (:class:`~qcc.errors.OptionError`), never
silently ignored. Checks that depend on the target (a precision it lacks, ``dynamic`` where it has
no run-time quantization) belong to the target: ``TargetSpec.check_options`` (``qcc.target``).

The CLI imports this module at start-up, so it imports nothing heavy (no onnx, numpy or typer).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import platform
import textwrap
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from qcc.errors import OptionError


class Target(str, enum.Enum):
    """The targets qcc compiles for: a light copy of ``qcc.backends.target_names()`` (a test keeps
    them equal), so that parsing and ``--help`` need not import the backends and onnx."""

    ORT = "ort"
    TRT = "trt"
    TFLITE = "tflite"


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


def parse_input_shape(texts: Sequence[str] | None) -> dict[str, tuple[int, ...]]:
    """Parses the CLI's repeatable ``--input-shape NAME=1,3,48,320`` into ``input_shapes``.

    Raises:
        OptionError: a text is not ``NAME=d1,d2,...`` with positive integer sizes, or names an
            input twice.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for text in texts or ():
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


# --- the metadata every option carries --------------------------------------------------------------

# Marks "the field's own" in CliFlag.default (None is a real default there).
FIELD_DEFAULT: Any = object()


@dataclasses.dataclass(frozen=True)
class CliFlag:
    """How an option appears on the command line (``qcc.cli`` builds its typer option from this).

    Attributes:
        flags: the flag and its short form as typer declares them (``("--method", "-m")``,
            ``("--refit/--no-refit",)``).
        help: the ``--help`` text.
        name: the command's parameter name, where the flag says something else than the field
            (``--per-tensor`` sets ``per_channel``); "": the field's name.
        type: the value type typer parses; None: the field's own type.
        default: the flag's default; :data:`FIELD_DEFAULT`: the field's.
        parse: the flag's value -> the fields it sets (``--tolerance relative:0.05`` sets
            ``tolerance`` and ``tolerance_metric``); None: the value is the field's.
        commands: the commands that take the flag.
        show_default: ``--help`` shows the default.
    """

    flags: tuple[str, ...]
    help: str
    name: str = ""
    type: Any = None
    default: Any = FIELD_DEFAULT
    parse: Callable[[Any], dict[str, object]] | None = None
    commands: frozenset[str] = frozenset({"compile"})
    show_default: bool = True


def _inverted(flag: str, help: str, field: str) -> CliFlag:  # noqa: A002 - CliFlag's own name
    """A flag that, given, sets a default-True field False (``--no-verify`` sets ``verify``)."""
    name = flag.lstrip("-").replace("-", "_")
    return CliFlag((flag,), help, name=name, default=False, parse=lambda given: {field: not given})


@dataclasses.dataclass(frozen=True)
class OptionInfo:
    """What one :class:`CompileOptions` field means and how users set it (the field's metadata).

    Attributes:
        doc: what the option does, for Python users (``help(qcc.compile)``, ``CompileOptions``).
        cli: its command-line flag; None: no flag of its own (``tolerance_metric`` is part of
            ``--tolerance``).
        parse: a Python value in a user's form -> the fields it sets (``tolerance="off"``); None:
            the value is the field's (``CompileOptions`` itself converts enum strings).
        api_type: the type ``qcc.compile`` documents for the keyword; None: the field's, with
            enum fields written as their string values.
        targets: the targets the option acts on (its ``--help`` starts with them: ``tflite: ...``);
            empty: all. The others refuse it when it is set, as whatever a target cannot honour, in its
            ``TargetSpec.check_options``.
    """

    doc: str
    cli: CliFlag | None = None
    parse: Callable[[Any], dict[str, object]] | None = None
    api_type: Any = None
    targets: tuple[str, ...] = ()


def _option(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, **info: Any) -> Any:
    """A dataclass field carrying its :class:`OptionInfo`."""
    return dataclasses.field(default=default, default_factory=factory, metadata={"qcc": OptionInfo(**info)})


def _api_tolerance(value: object) -> dict[str, object]:
    return parse_tolerance(value) if isinstance(value, str) else {"tolerance": value}


# The commands that take the options a compile and an analysis share.
_COMPILE_AND_ANALYZE = frozenset({"compile", "analyze"})


@dataclasses.dataclass(frozen=True)
class CompileOptions:
    """Everything that changes what qcc produces.

    Each field's metadata (:func:`option_infos`) documents it, names its command-line flag and
    says how users write it; the attributes below are generated from it.
    """

    target: str = _option(
        "ort",
        doc='``"ort"`` (ONNX Runtime CPU), ``"trt"`` (TensorRT) or ``"tflite"`` (LiteRT). See ``qcc.targets()``.',
        cli=CliFlag(
            ("--target", "-t"),
            "Runtime to compile for (see `qcc targets`).",
            type=Target,
            default=Target.ORT,
            commands=_COMPILE_AND_ANALYZE,
        ),
        api_type=str,
    )
    per_channel: bool = _option(
        True,
        doc="per-output-channel weight scales (default) or one per tensor.",
        cli=_inverted("--per-tensor", "One weight scale per tensor instead of per channel.", "per_channel"),
    )
    activation_type: ActivationType = _option(
        ActivationType.AUTO,
        doc='integer type of activations: ``"auto"`` (what the target runs fastest: uint8 for ``ort`` on x86, '
        'int8 elsewhere), ``"uint8"`` or ``"int8"``.',
        cli=CliFlag(("--activation-type",), "Activation integer type; auto picks the fastest for the target."),
    )
    method: CalibrationMethod | None = _option(
        None,
        doc='calibration method: ``"minmax"``, ``"meanmax"``, ``"percentile"``, ``"mse"``, ``"entropy"`` or '
        '``"auto"``; None: the target\'s default (on ``trt`` and int8 ``tflite`` minmax or meanmax, whichever '
        "is closer to fp32 on the calibration samples; minmax elsewhere; ``TargetSpec.default_methods``).",
        cli=CliFlag(
            ("--method", "-m"),
            "Activation clip ranges: minmax never clips (ort default); meanmax averages each sample's "
            "range (trt and int8 tflite pick minmax or meanmax by default, whichever output is closer to fp32 on the "
            "calibration samples); percentile/mse/entropy clip outliers (entropy is TensorRT's KL divergence); "
            "auto picks per tensor when the output misses --tolerance. A graph output always keeps its observed "
            "range.",
            commands=_COMPILE_AND_ANALYZE,
            show_default=False,
        ),
    )
    exclude: tuple[str, ...] = _option(
        (),
        doc="node names or op types to keep in float (one string is one name); each must match a node of the model.",
        cli=CliFlag(
            ("--exclude", "-x"),
            "Keep a node (by name) or every node of an op type in float. Repeatable.",
            type=list[str] | None,
            default=None,
            parse=lambda names: {"exclude": tuple(names or ())},
            commands=_COMPILE_AND_ANALYZE,
        ),
        api_type=str | Sequence[str],
    )
    verify_each: bool = _option(
        False,
        doc="check the IR invariants after every pass (slower; for debugging).",
        cli=CliFlag(("--verify-each",), "Check IR invariants after every pass (debugging)."),
    )
    verify: bool = _option(
        True,
        doc="run the artifact in its runtime after emitting it and put the result in the report.",
        cli=_inverted("--no-verify", "Skip running the artifact in its runtime.", "verify"),
    )
    max_calibration_samples: int | None = _option(
        None,
        doc="use at most this many calibration samples (None: all).",
        cli=CliFlag(("--max-samples",), "Use at most this many calibration samples.", name="max_samples"),
    )
    weights: WeightStorage = _option(
        WeightStorage.AUTO,
        doc='how ONNX artifacts store quantized weights: ``"auto"`` (int8 for ``ort``, float behind Q/DQ for '
        '``trt``), ``"int8"`` (int8 initializers, ~4x smaller) or ``"qdq"`` (float behind Q->DQ).',
        cli=CliFlag(("--weights",), "Weight storage: int8 initializers (small) or float behind Q/DQ; auto per target."),
    )
    precision: Precision = _option(
        Precision.INT8,
        doc='``"int8"``, ``"fp8"`` (E4M3; ``trt`` only) or ``"int4"`` (weight-only MatMul/Gemm; ``trt`` and '
        "``ort``, no calibration needed).",
        cli=CliFlag(("--precision",), "int8; fp8 (E4M3, opset 19; trt); int4 (weight-only MatMul/Gemm; trt, ort)."),
    )
    io: IoType = _option(
        IoType.FLOAT,
        doc='``"float"`` or ``"int8"`` model inputs and outputs (``tflite``; other targets refuse it).',
        cli=CliFlag(("--io",), "tflite: float32 or int8 model inputs and outputs."),
        targets=("tflite",),
    )
    nhwc_io: bool = _option(
        False,
        doc="4-D inputs and outputs are NHWC in the artifact instead of the model's NCHW (``tflite``).",
        cli=CliFlag(("--nhwc-io",), "tflite: NHWC 4-D inputs and outputs instead of the model's NCHW."),
        targets=("tflite",),
    )
    dynamic: bool = _option(
        False,
        doc="int8 MatMul/Gemm weights with activations quantized at run time (``ort``); no calibration "
        "needed (``calibration`` may be None; it is then only used to verify), the rest of the model stays float.",
        cli=CliFlag(("--dynamic",), "ort: int8 MatMul/Gemm weights, activations quantized at run time (transformers)."),
        targets=("ort",),
    )
    tolerance: float | None = _option(
        DEFAULT_TOLERANCE,
        doc="the largest output error allowed on the calibration samples (by ``tolerance_metric``); above it "
        "the nodes that hurt most are kept float until it holds (``passes/mixed_precision.py``; "
        '``report["mixed_precision"]`` lists them with their measured effect). None: quantize all the plan '
        'allows. ``qcc.compile`` also takes the CLI\'s text form: ``"0.002"``, ``"relative:0.05"``, ``"off"``.',
        cli=CliFlag(
            ("--tolerance",),
            "Largest output error allowed on calibration samples, as 1 - cosine (e.g. 0.002) or relative:0.05; "
            "above it the most harmful nodes stay float until it holds (the report lists them). 'off': none.",
            type=str,
            default=str(DEFAULT_TOLERANCE),
            parse=parse_tolerance,
        ),
        parse=_api_tolerance,
        api_type=float | str | None,
    )
    tolerance_metric: ToleranceMetric = _option(
        ToleranceMetric.COSINE,
        doc='what ``tolerance`` bounds: ``"cosine"`` (1 - cosine similarity, per output) or ``"relative"`` '
        "(relative L2 error). On the command line, part of ``--tolerance`` (``relative:0.05``).",
    )
    latency_budget: float | None = _option(
        None,
        doc="``ort``: the artifact's time as a fraction of the float model's (``0.6``: at least 1.67x faster), "
        "as ``qcc.latency`` prices it. Mixed precision then keeps float the nodes that remove the most "
        "error per millisecond, within the budget, and returns to int8 those the bound no longer needs "
        '(``report["mixed_precision"]["search"]["latency"]``). None: nodes are chosen by error alone, at '
        "most 40% of the quantized ones.",
        cli=CliFlag(
            ("--latency-budget",),
            "ort: the artifact's time at most this fraction of fp32's (e.g. 0.6, as priced); mixed precision "
            "then keeps float the nodes that remove the most error per millisecond.",
            type=float,
        ),
        targets=("ort",),
    )
    bias_correction: bool = _option(
        False,
        doc="subtract each int8 Conv/Gemm's mean weight-rounding shift, measured on the calibration data, from "
        "its bias (``passes/bias_correction.py``; off by default: it lowers PP-OCRv5's fidelity).",
        cli=CliFlag(
            ("--bias-correction",), "Cancel weight rounding's mean output shift in each Conv/Gemm bias (opt-in)."
        ),
    )
    equalize: bool | None = _option(
        None,
        doc="cross-layer equalization of consecutive convolutions (``passes/equalize.py``) and of linear "
        "residual streams such as MobileNetV2's (``passes/equalize_residual.py``); None: residual streams "
        "whenever the calibration data can be read twice, consecutive convolutions only with "
        "``per_channel=False``, where one scale per weight tensor needs it; False: neither.",
        cli=CliFlag(
            ("--equalize/--no-equalize",),
            "Equalize channel ranges across consecutive convolutions and linear residual streams; "
            "default: residual streams (with calibration data), consecutive convolutions only with --per-tensor.",
            show_default=False,
        ),
    )
    weight_rounding: WeightRounding = _option(
        WeightRounding.AUTO,
        doc='``"gptq"``: round each Conv/MatMul/Gemm weight so that its layer\'s output on the calibration '
        'inputs moves least (``passes/weight_rounding.py``; ``report["weight_rounding"]`` says which layers and '
        'by how much); ``"nearest"``: every weight to its nearest level; ``"auto"`` (default): gptq, after '
        "which the refit (``refit``) gives each layer GPTQ's levels, nearest rounding or weights fitted to the "
        'quantized model\'s inputs, whichever is closer on held-out samples (``report["refit"]``).',
        cli=CliFlag(
            ("--weight-rounding",),
            "gptq: round each layer's weights so its output on the calibration data moves least "
            "(each rounding error compensated in the weights not yet rounded); nearest: plain rounding; "
            "auto: gptq, then the refit picks per layer among gptq's levels, nearest rounding and a fit to the "
            "int8 model's own inputs.",
        ),
    )
    smoothquant: bool = _option(
        True,
        doc="divide MatMul/Gemm input channels with outliers by per-channel factors moved into the weights "
        "(SmoothQuant; ``passes/smooth_activations.py``), per tensor where that lowers the layers' int8 output "
        'error on the calibration data (``report["smoothing"]`` lists them).',
        cli=CliFlag(
            ("--smoothquant/--no-smoothquant",),
            "Divide MatMul/Gemm input channels with outliers (transformers' LayerNorm/GELU outputs) by "
            "factors moved into the weights, where that lowers the layer's int8 error on the calibration data.",
        ),
    )
    refit: bool = _option(
        True,
        doc="refit each int8 layer's weights, in graph order, to the quantized model's own inputs so that it "
        'reproduces the float model\'s output (``passes/refit_weights.py``; ``report["refit"]``).',
        cli=CliFlag(
            ("--refit/--no-refit",),
            "Refit each int8 layer's weights, in graph order, so that on the quantized model's own inputs "
            "it reproduces the float model's output (undoing part of the upstream rounding); kept per layer "
            "only where held-out calibration samples agree.",
        ),
    )
    input_shapes: dict[str, tuple[int, ...]] = _option(
        factory=dict,
        doc='pin inputs to one shape, e.g. ``{"x": (1, 3, 48, 320)}`` (every dimension). ``tflite`` then writes '
        "a static artifact of exactly these shapes; without it, the model's dynamic dimensions stay dynamic in "
        "the ``.tflite`` (``-1`` in its ``shape_signature``; resize the inputs in LiteRT before running another "
        "size). ``ort`` and ``trt`` keep the model's shapes and refuse it.",
        cli=CliFlag(
            ("--input-shape",),
            "tflite: pin input NAME to one shape, e.g. --input-shape x=1,3,48,320 (repeat it per input), "
            "for a static .tflite. Without it the model's dynamic dimensions (batch, sequence length, image "
            "size) stay dynamic: -1 in the tensors' shape_signature, run other sizes after "
            "interpreter.resize_tensor_input(). ort and trt keep the model's shapes.",
            name="input_shape",
            type=list[str] | None,
            default=None,
            parse=lambda texts: {"input_shapes": parse_input_shape(texts)},
            show_default=False,
        ),
        parse=lambda shapes: {"input_shapes": {} if shapes is None else shapes},
        api_type=Mapping[str, Sequence[int]] | None,
        targets=("tflite",),
    )

    def __post_init__(self) -> None:
        # A Target (the CLI's choice) is stored as its name: every reader compares strings.
        object.__setattr__(self, "target", getattr(self.target, "value", self.target))
        for name, (kind, optional) in _ENUM_FIELDS.items():
            value = getattr(self, name)
            if value is None and optional:
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

        budget = self.latency_budget
        fraction = isinstance(budget, (int, float)) and not isinstance(budget, bool) and 0 < budget <= 1
        if budget is not None and not fraction:
            raise OptionError(
                f"latency_budget={budget!r} is not a fraction of the float model's time in (0, 1].",
                "pass e.g. 0.6 for an artifact at least 1.67x faster than fp32, or 1 for never slower.",
            )
        unused = (
            ("--tolerance off", self.tolerance is None), ("--dynamic", self.dynamic), ("--no-verify", not self.verify)
        )
        idle = next((flag for flag, applies in unused if applies), None)
        if budget is not None and idle is not None:
            raise OptionError(
                f"latency_budget chooses the nodes mixed precision keeps float for the tolerance; with {idle}, "
                "mixed precision does not run.",
                "drop --latency-budget, or compile static with a --tolerance and verification on.",
            )

    @property
    def needs_calibration(self) -> bool:
        """False when no activation gets a calibrated range (``dynamic``, weight-only ``int4``)."""
        return not (self.dynamic or self.precision == Precision.INT4)

    @classmethod
    def from_kwargs(cls, **kwargs: object) -> CompileOptions:
        """Builds options from a Python user's keywords (``qcc.compile``): the field names, with
        values in any form their :class:`OptionInfo` accepts (``tolerance="relative:0.05"``,
        ``exclude="Softmax"``, ``activation_type="int8"``, ``input_shapes=None``).

        Raises:
            OptionError: a keyword is not an option (with the nearest option's name), or a value is
                invalid.
        """
        infos = option_infos()
        unknown = sorted(set(kwargs) - set(infos))
        if unknown:
            raise OptionError(f"unknown option(s): {', '.join(unknown)}.", _did_you_mean(unknown[0], infos))
        values: dict[str, object] = {}
        for name, value in kwargs.items():
            parse = infos[name].parse
            values.update(parse(value) if parse else {name: value})
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def from_cli(cls, values: Mapping[str, object]) -> CompileOptions:
        """Builds options from a command's parsed flag values, by parameter name (``per_tensor``,
        ``tolerance``, ...; see :func:`cli_flags`); options without a value keep their default.

        Raises:
            OptionError: a value is invalid (``--tolerance x``, ``--input-shape x=a``).
            TypeError: a name is no option's parameter (a bug in the command, not the user's).
        """
        flags = cli_flags()
        unknown = sorted(set(values) - set(flags))
        if unknown:
            raise TypeError(f"not option parameters: {', '.join(unknown)}")
        fields: dict[str, object] = {}
        for name, value in values.items():
            field, flag = flags[name]
            fields.update(flag.parse(value) if flag.parse else {field: value})
        return cls(**fields)  # type: ignore[arg-type]


def choice_type(kind: Any) -> type[enum.Enum] | None:
    """The enum whose values a field or flag of type ``kind`` takes (``X | None``: X's); None if
    it takes no enum."""
    for candidate in (kind, *typing.get_args(kind)):
        if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
            return candidate
    return None


# The fields whose value is an enum, read from their types: name -> (the enum, None allowed).
_ENUM_FIELDS = {
    name: (choice, type(None) in typing.get_args(hint))
    for name, hint in typing.get_type_hints(CompileOptions).items()
    if (choice := choice_type(hint)) is not None
}


def option_infos() -> dict[str, OptionInfo]:
    """Every option's :class:`OptionInfo`, by field name, in field order."""
    return {field.name: field.metadata["qcc"] for field in dataclasses.fields(CompileOptions)}


def field_default(name: str) -> object:
    """The default of the option ``name`` (a fresh one for a field built by a factory)."""
    field = next(f for f in dataclasses.fields(CompileOptions) if f.name == name)
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


def cli_flags(command: str | None = None) -> dict[str, tuple[str, CliFlag]]:
    """The options' command-line flags, by the command's parameter name: ``(field name, flag)``,
    in field order; only those ``command`` takes, if given."""
    return {
        info.cli.name or name: (name, info.cli)
        for name, info in option_infos().items()
        if info.cli is not None and (command is None or command in info.cli.commands)
    }


def options_doc(indent: int = 8, *, skip: Sequence[str] = (), only: Sequence[str] | None = None) -> str:
    """The options' ``doc`` as Google-style ``name: text`` entries (an ``Args:`` or ``Attributes:``
    section's body), one per field in field order, wrapped at 100 columns.

    Args:
        indent: spaces before each name; continuation lines get 4 more.
        skip: fields to leave out (documented elsewhere, like ``qcc.compile``'s ``target``).
        only: the fields to list (None: all).
    """
    lines = []
    for name, info in option_infos().items():
        if name in skip or (only is not None and name not in only):
            continue
        lines += textwrap.wrap(
            f"{name}: {info.doc}",
            width=100,
            initial_indent=" " * indent,
            subsequent_indent=" " * (indent + 4),
            break_on_hyphens=False,
        )
    return "\n".join(lines)


def _did_you_mean(name: str, known: Mapping[str, object]) -> str:
    """The fix for an unknown option ``name``: the nearest known name, and every known name."""
    near = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    listed = f"valid options are {', '.join(sorted(known))}."
    return f"did you mean {near[0]}? {listed}" if near else listed


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


# The class documents its fields from their metadata, so that help(CompileOptions) cannot drift from it.
if CompileOptions.__doc__:  # None under python -OO
    CompileOptions.__doc__ = f"{CompileOptions.__doc__.rstrip()}\n\n    Attributes:\n{options_doc(8)}\n    "


def host_is_arm() -> bool:
    """True on ARM hosts, where ONNX Runtime's CPU kernels prefer int8 activations."""
    return platform.machine().lower() in {"arm64", "aarch64", "armv8l", "armv7l"}
