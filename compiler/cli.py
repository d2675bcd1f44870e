"""The ``qcc`` command line (typer).

One error style: every mistake, whether qcc finds it (a :class:`~qcc.errors.QccError`) or the
option parser does (a bad choice such as ``-t tensorrt``, an unknown option, a missing argument),
prints one line ``error: <problem> Fix: <remedy>`` on stderr and exits with code 2. Parser errors
are converted in :func:`main`, which runs the typer app with ``standalone_mode=False``; a bad choice
or option name is answered with its known alias (``tensorrt`` -> ``trt``, ``kl`` -> ``entropy``) or
its nearest valid spelling.

Exit codes: 0 done; 1 ``qcc check`` found rule errors; 2 a usage or input error (nothing written);
3 ``compile --strict`` wrote the artifact but the report has a warning that ``--strict`` refuses.

Every command takes ``--json``: stdout then holds exactly one JSON object (progress bars and logs
go to stderr), also on error: ``{"error": problem, "fix": remedy, "exit_code": 2}``.

Start-up is kept light (``qcc --help`` and early errors in well under 0.3 s): onnx, numpy and the
backends are imported inside the commands, after the arguments and the input paths are checked.
"""

from __future__ import annotations

import difflib
import enum
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.text import Text

from qcc import __version__
from qcc.errors import CalibrationDataError, ModelLoadError, OptionError, QccError
from qcc.io import ARTIFACT_SUFFIXES, check_output_path, check_output_suffix, write_atomic
from qcc.options import (
    DEFAULT_TOLERANCE,
    ActivationType,
    CalibrationMethod,
    CompileOptions,
    IoType,
    Precision,
    WeightRounding,
    WeightStorage,
    parse_input_shape,
    parse_tolerance,
)

try:  # typer >= 0.17 vendors click; older versions use the click package
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import UsageError

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_STRICT = 3

# Version of the JSON objects the commands print with --json (the compile report inside carries its own).
JSON_SCHEMA_VERSION = 1


class Target(str, enum.Enum):
    """The targets qcc compiles for: a light copy of ``qcc.backends.target_names()`` (a test keeps
    them equal), so that parsing and ``--help`` need not import the backends and onnx."""

    ORT = "ort"
    TRT = "trt"
    TFLITE = "tflite"


# What users type for a choice, by what they know it as -> qcc's name (only offered where it is a
# valid choice of the option at hand). Keys are lower case with '_' written '-'.
ALIASES = {
    "tensorrt": "trt",
    "tensor-rt": "trt",
    "nvidia": "trt",
    "modelopt": "trt",
    "onnxruntime": "ort",
    "onnx-runtime": "ort",
    "onnx": "ort",
    "litert": "tflite",
    "lite-rt": "tflite",
    "lite": "tflite",
    "tf-lite": "tflite",
    "tensorflow-lite": "tflite",
    "tensorflowlite": "tflite",
    "kl": "entropy",
    "kl-divergence": "entropy",
    "kld": "entropy",
    "min-max": "minmax",
    "max": "minmax",
    "absmax": "minmax",
    "mean-max": "meanmax",
    "float8": "fp8",
    "e4m3": "fp8",
    "fp8-e4m3": "fp8",
    "i8": "int8",
    "s8": "int8",
    "qint8": "int8",
    "u8": "uint8",
    "quint8": "uint8",
    "float32": "float",
    "fp32": "float",
}

app = typer.Typer(
    name="qcc",
    help=(
        "qcc: compile a float ONNX model plus a little calibration data into an int8 model for one runtime.\n\n"
        "Example:\n\n"
        "  qcc compile model.onnx --target ort --calib calib.npz -o model.int8.onnx --report report.json\n\n"
        "Calibration data is an .npz whose keys are input names (arrays with a leading sample axis) "
        "or '<index>/<input name>' (one feed per sample).\n\n"
        "Errors print one line, 'error: <problem> Fix: <remedy>', on stderr. Exit codes: 0 done; 1 "
        "`qcc check` found rule errors; 2 a usage or input error (nothing written); 3 `compile --strict` "
        "wrote the artifact but refuses a warning.\n\n"
        'Every command takes --json: stdout then holds one JSON object, on error {"error": ..., "fix": ..., '
        '"exit_code": 2}.'
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_err = Console(stderr=True)
_out = Console()


def _print_version(value: bool) -> None:
    if value:
        _out.print(f"qcc {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print qcc's version and exit.", is_eager=True, callback=_print_version),
    ] = False,
) -> None:
    """Options before the command."""


def _emit_json(data: dict[str, Any]) -> None:
    # Plain json, not rich: rich would wrap long strings to the terminal's width.
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()


def _fail(error: QccError, as_json: bool = False) -> None:
    """Prints ``error`` as qcc's one line (and with ``--json`` as a JSON object) and exits with 2."""
    _err.print(Text.assemble(("error:", "bold red"), " ", str(error)), soft_wrap=True, highlight=False)
    if as_json:
        _emit_json({"error": error.problem, "fix": error.fix, "exit_code": EXIT_USER_ERROR})
    raise typer.Exit(EXIT_USER_ERROR)


def _warn(message: str) -> None:
    _err.print(Text.assemble(("warning:", "bold yellow"), " ", message), soft_wrap=True, highlight=False)


def _require_file(path: Path, error: type[QccError], what: str) -> None:
    """Checks that an input exists before the command imports onnx (seconds) to read it; the
    readers give the same message, so the error does not depend on where it is found."""
    if not os.path.exists(path):
        raise error(f"{what} {path} does not exist.", "check the path.")


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    handler = RichHandler(console=_err, show_path=False)
    # The driver logs the report's warnings on the package logger "qcc" for API users; the CLI prints
    # them from the report as `warning: <message>` lines instead, so they are not shown twice.
    handler.addFilter(lambda record: record.name != "qcc")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(message)s", handlers=[handler], force=True
    )


class _ProgressBar:
    """Adapts qcc's progress callback to a rich progress bar."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.tasks: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: Optional[int]) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total)
        self.progress.update(self.tasks[stage], completed=done, total=total)


@app.command()
def compile(  # noqa: A001 - the subcommand's name
    model: Annotated[Path, typer.Argument(help="Float ONNX model to quantize (never modified).", show_default=False)],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="Where to write the int8 artifact: a .onnx file for ort and trt, a .tflite file for tflite.",
            show_default=False,
        ),
    ],
    calib: Annotated[
        Optional[Path],
        typer.Option(
            "--calib", "-c", help="Calibration data (.npz, see `qcc --help`); --dynamic needs none.", show_default=False
        ),
    ] = None,
    target: Annotated[
        Target, typer.Option("--target", "-t", help="Runtime to compile for (see `qcc targets`).")
    ] = Target.ORT,
    report: Annotated[Optional[Path], typer.Option("--report", help="Also write the JSON report here.")] = None,
    report_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--report-dir",
            help="Also write report.json, per-layer layers.json and PNG plots (SQNR per layer, clip ranges of "
            "the worst layers, mixed-precision decisions) into this folder.",
        ),
    ] = None,
    exclude: Annotated[
        Optional[list[str]],
        typer.Option("--exclude", "-x", help="Keep a node (by name) or every node of an op type in float. Repeatable."),
    ] = None,
    per_tensor: Annotated[
        bool, typer.Option("--per-tensor", help="One weight scale per tensor instead of per channel.")
    ] = False,
    activation_type: Annotated[
        ActivationType,
        typer.Option("--activation-type", help="Activation integer type; auto picks the fastest for the target."),
    ] = ActivationType.AUTO,
    max_samples: Annotated[
        Optional[int], typer.Option("--max-samples", help="Use at most this many calibration samples.")
    ] = None,
    method: Annotated[
        Optional[CalibrationMethod],
        typer.Option(
            "--method",
            "-m",
            help="Activation clip ranges: minmax never clips (ort, tflite default); meanmax averages each sample's "
            "range (trt picks minmax or meanmax by default); percentile/mse/entropy clip outliers (entropy is "
            "TensorRT's KL divergence); auto picks per tensor when the output misses --tolerance.",
            show_default=False,
        ),
    ] = None,
    weights: Annotated[
        WeightStorage,
        typer.Option(
            "--weights", help="Weight storage: int8 initializers (small) or float behind Q/DQ; auto per target."
        ),
    ] = WeightStorage.AUTO,
    precision: Annotated[
        Precision,
        typer.Option("--precision", help="int8; fp8 (E4M3, opset 19; trt); int4 (weight-only MatMul/Gemm; trt, ort)."),
    ] = Precision.INT8,
    dynamic: Annotated[
        bool,
        typer.Option(
            "--dynamic", help="ort: int8 MatMul/Gemm weights, activations quantized at run time (transformers)."
        ),
    ] = False,
    tolerance: Annotated[
        str,
        typer.Option(
            "--tolerance",
            help="Largest output error allowed on calibration samples, as 1 - cosine (e.g. 0.002) or relative:0.05; "
            "above it the most harmful nodes stay float until it holds (the report lists them). 'off': none.",
        ),
    ] = str(DEFAULT_TOLERANCE),
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Exit with code 3 (after writing the artifact) when the compile missed --tolerance, quantized "
            "nothing, left a quantizable node float or failed verification. Warnings are printed either way.",
        ),
    ] = False,
    bias_correction: Annotated[
        bool,
        typer.Option(
            "--bias-correction", help="Cancel weight rounding's mean output shift in each Conv/Gemm bias (opt-in)."
        ),
    ] = False,
    equalize: Annotated[
        Optional[bool],
        typer.Option(
            "--equalize/--no-equalize",
            help="Equalize channel ranges across consecutive convolutions and linear residual streams; "
            "default: residual streams (with calibration data), consecutive convolutions only with --per-tensor.",
            show_default=False,
        ),
    ] = None,
    weight_rounding: Annotated[
        WeightRounding,
        typer.Option(
            "--weight-rounding",
            help="gptq: round each layer's weights so its output on the calibration data moves least "
            "(each rounding error compensated in the weights not yet rounded); nearest: plain rounding; "
            "auto: gptq, and nearest too when --tolerance needs nodes kept float (if both meet it, the one with "
            "fewer nodes float is kept, else the closer one).",
        ),
    ] = WeightRounding.AUTO,
    smoothquant: Annotated[
        bool,
        typer.Option(
            "--smoothquant/--no-smoothquant",
            help="Divide MatMul/Gemm input channels with outliers (transformers' LayerNorm/GELU outputs) by "
            "factors moved into the weights, where that lowers the layer's int8 error on the calibration data.",
        ),
    ] = True,
    refit: Annotated[
        bool,
        typer.Option(
            "--refit/--no-refit",
            help="Refit each int8 layer's weights, in graph order, so that on the quantized model's own inputs "
            "it reproduces the float model's output (undoing part of the upstream rounding); kept per layer "
            "only where held-out calibration samples agree.",
        ),
    ] = True,
    calib_cache: Annotated[
        Optional[Path],
        typer.Option(
            "--calib-cache",
            help="trt only: also write TensorRT's implicit-INT8 calibration cache here "
            "(turns --smoothquant off: the cache describes the original network's tensors).",
        ),
    ] = None,
    verify_each: Annotated[
        bool, typer.Option("--verify-each", help="Check IR invariants after every pass (debugging).")
    ] = False,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip running the artifact in its runtime.")] = False,
    io: Annotated[
        IoType, typer.Option("--io", help="tflite: float32 or int8 model inputs and outputs.")
    ] = IoType.FLOAT,
    nhwc_io: Annotated[
        bool, typer.Option("--nhwc-io", help="tflite: NHWC 4-D inputs and outputs instead of the model's NCHW.")
    ] = False,
    input_shape: Annotated[
        Optional[list[str]],
        typer.Option(
            "--input-shape",
            help="tflite: pin input NAME to one shape, e.g. --input-shape x=1,3,48,320 (repeat it per input), "
            "for a static .tflite. Without it the model's dynamic dimensions (batch, sequence length, image "
            "size) stay dynamic: -1 in the tensors' shape_signature, run other sizes after "
            "interpreter.resize_tensor_input(). ort and trt keep the model's shapes.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help='Print one JSON object on stdout instead of the summary: {"schema_version": 1, "output": PATH, '
            '"files": [every file written], "report": {the report}, "warnings": [{"code", "message"}], '
            '"exit_code": 0 or 3}; on error {"error", "fix", "exit_code": 2}.',
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every pass.")] = False,
) -> None:
    """Quantize MODEL for one runtime and write the artifact atomically.

    Every warning in the report is printed on stderr as 'warning: <message>'; --strict turns the
    ones that mean a weaker artifact than asked (missed --tolerance, nothing quantized, a quantizable
    node left float, failed verification) into exit code 3, after writing it.

    Examples:

      qcc compile resnet.onnx -t ort -c calib.npz -o resnet.int8.onnx

      qcc compile bert.onnx -t ort -c calib.npz -o bert.int8.onnx --exclude Softmax --report r.json

      qcc compile bert.onnx -t ort --dynamic -o bert.int8.onnx   (no calibration data needed)

      qcc compile yolo.onnx -t trt -c calib.npz -o yolo.qdq.onnx --tolerance 0.01   (looser: fewer nodes float)

      qcc compile ocr.onnx -t tflite -c calib.npz -o ocr.tflite --input-shape x=1,3,48,320   (static .tflite)

      qcc compile resnet.onnx -t ort -c calib.npz -o resnet.int8.onnx --strict --json > result.json
    """
    _setup_logging(verbose)
    try:
        # Every check that needs no onnx comes first: a mistake here costs a fraction of a second.
        check_output_suffix(output, target.value)
        inputs = (model,) if calib is None else (model, calib)
        check_output_path(output, inputs=inputs)
        if report is not None:
            check_output_path(report, inputs=(*inputs, output))
        if calib_cache is not None:
            if target != Target.TRT or precision != Precision.INT8:
                raise OptionError(
                    "--calib-cache is TensorRT's implicit-INT8 calibration cache.", "use it with --target trt, int8."
                )
            check_output_path(calib_cache, inputs=(*inputs, output))
        options = CompileOptions(
            target=target.value,
            per_channel=not per_tensor,
            activation_type=activation_type,
            exclude=tuple(exclude or ()),
            verify_each=verify_each,
            verify=not no_verify,
            max_calibration_samples=max_samples,
            weights=weights,
            precision=precision,
            method=method,
            io=io,
            nhwc_io=nhwc_io,
            dynamic=dynamic,
            **parse_tolerance(tolerance),
            bias_correction=bias_correction,
            equalize=equalize,
            weight_rounding=weight_rounding,
            smoothquant=smoothquant and calib_cache is None,
            refit=refit,
            input_shapes=parse_input_shape(input_shape or ()),
        )
        _require_file(model, ModelLoadError, "model file")
        if calib is not None:
            _require_file(calib, CalibrationDataError, "calibration file")

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from qcc.driver import compile_model

        with Progress(
            TextColumn("{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=_err,
            transient=True,
        ) as bar:
            source = None if calib is None else str(calib)
            result = compile_model(str(model), source, options, progress=_ProgressBar(bar))
        result.save(output, report)
        files = [str(output), *_external_data(result.report, output), *([str(report)] if report else [])]
        notes: list[str] = []
        folder_files: list[str] = []
        if report_dir is not None:
            folder_files, notes = _write_report_dir(report_dir, str(model), source, options, result)
            files += folder_files
        if calib_cache is not None:
            from qcc.backends.tensorrt import calibration_cache

            write_atomic(calib_cache, calibration_cache(result.report).encode())
            files.append(str(calib_cache))
    except QccError as error:
        _fail(error, as_json)
        return
    from qcc.report import STRICT_WARNINGS  # the codes --strict refuses, defined with the warnings

    warnings = [w for w in result.report.get("warnings", []) if isinstance(w, dict)]
    refused = sorted({w.get("code") for w in warnings} & STRICT_WARNINGS) if strict else []
    code = EXIT_STRICT if refused else EXIT_OK
    if as_json:
        _emit_json(
            {
                "schema_version": JSON_SCHEMA_VERSION,
                "output": str(output),
                "files": files,
                "report": result.report,
                "warnings": warnings,
                "notes": notes,
                "exit_code": code,
            }
        )
    else:
        _print_summary(result.report, output)
        if report_dir is not None:
            _print_files(report_dir, folder_files)
    for note in notes:
        _err.print(f"note: {note}", highlight=False, soft_wrap=True)
    for w in warnings:
        _warn(str(w.get("message", w.get("code"))))
    if refused:
        _err.print(
            f"--strict: exit code {EXIT_STRICT} for {', '.join(refused)} (the artifact is written).",
            highlight=False,
            soft_wrap=True,
        )
    raise typer.Exit(code)


def _external_data(report: dict, output: Path) -> list[str]:
    """The ``.data`` file written next to an artifact over protobuf's 2 GB limit, if any."""
    if (report["totals"].get("artifact_bytes") or 0) > os.path.getsize(output):
        return [f"{output}.data"]
    return []


def _write_report_dir(
    folder: Path, model: str, calib: str | None, options: CompileOptions, result: Any
) -> tuple[list[str], list[str]]:
    """Writes the per-layer report folder (``qcc.plots``); returns the files written and notes."""
    from qcc.analyze import analyze_model
    from qcc.plots import write_report_dir

    analysis = {"target": options.target, "samples": 0, "tensors": [], "output_sqnr_db": {}}
    notes = []
    if calib is None:
        notes.append("no per-layer analysis without calibration data (--calib)")
    else:
        try:
            analysis = analyze_model(model, calib, options, result=result)
        except QccError as error:  # e.g. nothing quantized, or an artifact over 2 GB
            notes.append(f"no per-layer analysis: {error}")
    written, more = write_report_dir(folder, analysis, None if result is None else result.report)
    return list(written), notes + list(more)


def _print_files(folder: Path, files: list[str]) -> None:
    _out.print(f"report folder {folder}: " + ", ".join(os.path.basename(f) for f in files), highlight=False)


def _print_summary(report: dict, output: Path) -> None:
    from rich.table import Table

    totals = report["totals"]
    table = Table(title=f"qcc -> {report['target']} ({report['activation_dtype']} activations)", show_edge=False)
    for column in ("op type", "int8", "fused", "float"):
        table.add_column(column, justify="left" if column == "op type" else "right")
    for op, counts in totals["by_op"].items():
        # Weight-only (int4) nodes count as quantized: their weights are.
        quantized = counts.get("int8", 0) + counts.get("weight-only", 0)
        table.add_row(op, str(quantized or ""), str(counts.get("fused", "")), str(counts.get("float", "")))
    _out.print(table)
    for reason, count in totals["float_reasons"].items():
        _out.print(f"  float x{count}: {reason}")
    verify = report.get("verify")
    if verify:
        cosines = [o["cosine_min"] for o in verify["fidelity"]["outputs"].values()]
        status = "[green]ok[/]" if verify["ok"] else "[red]FAILED[/]"
        facts = []
        if "integer_kernels" in verify:
            facts.append(f"{verify['integer_kernels']} integer kernels")
            facts.append(f"{len(verify['quantized_but_float'])} quantized nodes left in float")
        if "tensorrt_rules" in verify:
            facts.append(f"{verify['tensorrt_rules']['errors']} TensorRT rule errors")
        if cosines:
            facts.append(f"output cosine >= {min(cosines):.4f} on {verify['fidelity']['samples']} samples")
        else:
            facts.append("outputs not compared (no calibration samples)")
        _out.print(f"verify {status} in {verify['runtime']}: " + ", ".join(facts))
    mixed = report.get("mixed_precision")
    if mixed and mixed["met"] is not None:
        what = "1 - cosine" if mixed["metric"] == "cosine" else "relative error"
        verdict = "[green]within[/]" if mixed["met"] else "[yellow]above[/]"
        _out.print(
            f"tolerance: output {what} {mixed['artifact_error']:.4g} {verdict} the bound {mixed['bound']:g}; "
            f"{len(mixed['kept_float'])} nodes kept float for it"
        )
    selection = report.get("mode_selection")
    if selection:
        errors = selection["artifact_error"]
        _out.print(
            f"mode: {selection['chosen']} kept (output error static {errors['static']:.4g}, dynamic "
            f"{errors['dynamic']:.4g}): {selection['why']}"
        )
    size = totals["artifact_bytes"] / 1e6
    external = f" + {output}.data (external data)" if _external_data(report, output) else ""
    _out.print(f"wrote {output}{external} ({size:.2f} MB) in {report['timings']['total']:.1f} s")


@app.command()
def inspect(
    model: Annotated[
        Path,
        typer.Argument(
            help="A float ONNX model, or a quantized artifact: QDQ or QOperator ONNX (qcc's or any other "
            "tool's) or a .tflite file.",
            show_default=False,
        ),
    ],
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help='Print one JSON object on stdout instead of tables. A float model: {"schema_version": 1, '
            '"kind": "float-onnx", "model": {inputs, outputs, opset, ...}, "targets": {target: its plan totals}}; '
            'a quantized artifact: {"schema_version", "kind", "nodes", "tensors", "totals"} (per node int8 or '
            "float, per tensor scale and zero point).",
        ),
    ] = False,
) -> None:
    """Describe MODEL: what each target would quantize, or what a quantized artifact runs in int8.

    A float ONNX model: inputs, outputs, opset, op histogram and each target's plan. A quantized
    artifact (QDQ or QOperator ONNX from qcc or any other tool, a .tflite file): which nodes run int8
    and which float, and every quantized tensor's scale and zero point.

    Examples:

      qcc inspect model.onnx

      qcc inspect model.int8.onnx --json
    """
    _setup_logging(False)
    try:
        _require_file(model, ModelLoadError, "model file")
        inspection = _inspection_module()
        if inspection is not None and inspection.is_quantized_artifact(str(model)):
            info = inspection.inspect_artifact(str(model))
        elif model.suffix.lower() == ARTIFACT_SUFFIXES["tflite"]:
            raise ModelLoadError(
                f"{model} is a .tflite file and this qcc cannot read them (qcc.inspection is missing).",
                "update qcc, or inspect the ONNX model it was compiled from.",
            )
        else:
            info = None
            plans = _float_plans(model)
    except QccError as error:
        _fail(error, as_json)
        return
    if info is not None:
        if as_json:
            _emit_json(info)
        else:
            inspection.render_inspection(info, _out)
        return
    first = next(iter(plans.values()))["model"]
    if as_json:
        _emit_json(
            {
                "schema_version": JSON_SCHEMA_VERSION,
                "kind": "float-onnx",
                "model": first,
                "targets": {k: v["totals"] for k, v in plans.items()},
            }
        )
        return
    _print_plans(model, first, plans)


def _inspection_module() -> Any:
    """``qcc.inspection`` (which reads quantized artifacts), or None where it is not installed."""
    try:
        from qcc import inspection
    except ModuleNotFoundError as exc:
        if exc.name != "qcc.inspection":
            raise
        return None
    return inspection


def _float_plans(model: Path) -> dict[str, dict]:
    from qcc.driver import plan_model

    return {target.value: plan_model(str(model), CompileOptions(target=target.value)) for target in Target}


def _print_plans(model: Path, first: dict, plans: dict[str, dict]) -> None:
    import collections

    _out.print(Text.assemble((str(model), "bold"), f"  opset {first['opset']}, {first['nodes_before']} nodes"))
    for kind in ("inputs", "outputs"):
        for io in first[kind]:
            _out.print(f"  {kind[:-1]:<6} {io['name']}: {io['dtype']} {io['shape']}", highlight=False, markup=False)
    ops = collections.Counter(first["ops_before"])
    _out.print("  ops    " + ", ".join(f"{op} {n}" for op, n in ops.most_common()), highlight=False)
    for name, plan in plans.items():
        totals = plan["totals"]
        _out.print(f"[bold]{name}[/]: {totals['int8']} int8, {totals['fused']} fused, {totals['float']} float")
        for reason, count in totals["float_reasons"].items():
            _out.print(f"  float x{count}: {reason}", highlight=False, markup=False)


@app.command()
def analyze(
    model: Annotated[Path, typer.Argument(help="Float ONNX model to quantize and analyze.", show_default=False)],
    calib: Annotated[
        Path, typer.Option("--calib", "-c", help="Calibration data (.npz, see `qcc --help`).", show_default=False)
    ],
    target: Annotated[
        Target, typer.Option("--target", "-t", help="Runtime to compile for (see `qcc targets`).")
    ] = Target.ORT,
    method: Annotated[
        Optional[CalibrationMethod], typer.Option("--method", "-m", help="As for compile.", show_default=False)
    ] = None,
    exclude: Annotated[
        Optional[list[str]], typer.Option("--exclude", "-x", help="As for compile: keep nodes in float.")
    ] = None,
    samples: Annotated[int, typer.Option("--samples", help="Calibration samples to measure on.")] = 4,
    top: Annotated[int, typer.Option("--top", help="Rows to show, worst first.")] = 15,
    json_out: Annotated[
        Optional[Path], typer.Option("--json-out", help="Also write every tensor's numbers to this file.")
    ] = None,
    report_dir: Annotated[
        Optional[Path],
        typer.Option("--report-dir", help="Also write layers.json and PNG plots (SQNR per layer, clip ranges) here."),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help='Print one JSON object on stdout instead of the table: {"schema_version": 1, "target", "samples", '
            '"tensors": [per quantized tensor: name, producer, op_type, sqnr_db, drop_db, ...], "output_sqnr_db": '
            '{output: dB}, "files": [files written]}; on error {"error", "fix", "exit_code": 2}.',
        ),
    ] = False,
) -> None:
    """Compile MODEL and show where quantization loses: per quantized tensor, SQNR against the
    float model and the drop its producer adds (worst first).

    Example:

      qcc analyze model.onnx -t ort -c calib.npz --top 10

      qcc analyze model.onnx -t ort -c calib.npz -x /stem/conv   (analyze again with it in float)

      qcc analyze model.onnx -t ort -c calib.npz --json-out tensors.json
    """
    _setup_logging(False)
    try:
        if json_out is not None:
            check_output_path(json_out, inputs=(model, calib))
        options = CompileOptions(target=target.value, method=method, exclude=tuple(exclude or ()))
        _require_file(model, ModelLoadError, "model file")
        _require_file(calib, CalibrationDataError, "calibration file")
        from qcc.analyze import analyze_model

        report = analyze_model(str(model), str(calib), options, samples=samples)
        files, notes = [], []
        if json_out is not None:
            write_atomic(json_out, json.dumps(report, indent=2).encode())
            files.append(str(json_out))
        if report_dir is not None:
            from qcc.plots import write_report_dir

            written, notes = write_report_dir(report_dir, report, None)
            files += written
    except QccError as error:
        _fail(error, as_json)
        return
    for note in notes:
        _err.print(f"note: {note}", highlight=False, soft_wrap=True)
    if as_json:
        _emit_json({"schema_version": JSON_SCHEMA_VERSION, **report, "files": files})
        return
    _print_analysis(report, target.value, top)
    if report_dir is not None:
        _print_files(report_dir, files[1:] if json_out is not None else files)


def _print_analysis(report: dict, target: str, top: int) -> None:
    from rich.table import Table

    ranked = sorted(report["tensors"], key=lambda t: -(t["drop_db"] if t["drop_db"] is not None else -1e9))
    table = Table(title=f"qcc analyze -> {target}: worst {min(top, len(ranked))} of {len(ranked)} quantized tensors")
    # The node is what --exclude takes; the tensor names are in --json.
    for column in ("node (its output tensor)", "op", "SQNR dB", "drop dB"):
        table.add_column(column, justify="right" if "dB" in column else "left", overflow="fold")
    for t in ranked[:top]:
        drop = "" if t["drop_db"] is None else f"{t['drop_db']:.1f}"
        table.add_row(t["producer"] or t["name"], t["op_type"], f"{t['sqnr_db']:.1f}", drop)
    _out.print(table)
    for name, value in report["output_sqnr_db"].items():
        _out.print(f"output {name}: SQNR {value:.1f} dB on {report['samples']} samples")


@app.command()
def check(
    model: Annotated[Path, typer.Argument(help="A QDQ ONNX model (from qcc or any other tool).", show_default=False)],
    target: Annotated[Target, typer.Option("--target", "-t", help="Rules to check against (trt).")] = Target.TRT,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help='Print one JSON object on stdout: {"schema_version": 1, "model", "target", "violations": '
            '[{"severity", "rule", "node", "message"}], "errors", "warnings", "exit_code": 0 or 1}.',
        ),
    ] = False,
) -> None:
    """Check a quantized ONNX model against a target's rules; exit 1 if it breaks any.

    Example:

      qcc check --target trt model.qdq.onnx
    """
    _setup_logging(False)
    try:
        if target != Target.TRT:
            raise OptionError(f"qcc check knows the rules of trt, not {target.value!r}.", "use --target trt.")
        _require_file(model, ModelLoadError, "model file")
        from qcc.backends._trt_rules import check_tensorrt_rules
        from qcc.frontend import read_model_file

        violations = check_tensorrt_rules(read_model_file(str(model)))
    except QccError as error:
        _fail(error, as_json)
        return
    errors = sum(v.severity == "error" for v in violations)
    code = EXIT_CHECK_FAILED if errors else EXIT_OK
    if as_json:
        found = [{"severity": v.severity, "rule": v.rule, "node": v.node, "message": v.message} for v in violations]
        _emit_json(
            {
                "schema_version": JSON_SCHEMA_VERSION,
                "model": str(model),
                "target": target.value,
                "violations": found,
                "errors": errors,
                "warnings": len(violations) - errors,
                "exit_code": code,
            }
        )
        raise typer.Exit(code)
    for v in violations:
        colour = "red" if v.severity == "error" else "yellow"
        _out.print(
            Text.assemble((v.severity, colour), f" {v.rule} at {v.node}: {v.message}"), highlight=False, soft_wrap=True
        )
    _out.print(f"{errors} error(s), {len(violations) - errors} warning(s)")
    raise typer.Exit(code)


@app.command()
def targets(
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help='Print one JSON object on stdout: {"schema_version": 1, "targets": [{"name", "description", '
            '"artifact_suffix"}]}.',
        ),
    ] = False,
) -> None:
    """List the targets qcc compiles for."""
    from qcc.backends import get_backend, target_names

    found = [
        {"name": name, "description": get_backend(name).spec.description, "artifact_suffix": ARTIFACT_SUFFIXES[name]}
        for name in target_names()
    ]
    if as_json:
        _emit_json({"schema_version": JSON_SCHEMA_VERSION, "targets": found})
        return
    for t in found:
        _out.print(Text.assemble((t["name"], "bold"), f"  {t['description']}"))


# --- the parser's errors, in qcc's one style -------------------------------------------------------

# The commands' enum options by parameter name, whose valid values a bad choice is matched against.
_CHOICE_OPTIONS: dict[str, type[enum.Enum]] = {
    "target": Target,
    "activation_type": ActivationType,
    "method": CalibrationMethod,
    "weights": WeightStorage,
    "precision": Precision,
    "weight_rounding": WeightRounding,
    "io": IoType,
}


def usage_error(exc: UsageError, args: Sequence[str]) -> OptionError:
    """Rewrites an option parser error (typer/click) as qcc's problem and fix.

    Args:
        exc: the parser's error.
        args: the command line arguments (without the program name): where the bad value is read.

    Returns:
        An :class:`OptionError` whose fix names the alias or the nearest valid spelling, if any.
    """
    ctx = getattr(exc, "ctx", None)
    where = _command_path(ctx, args)
    see = f"`{where} --help` lists every option."
    param = getattr(exc, "param", None)
    kind = type(exc).__name__
    if kind == "MissingParameter" and param is not None:
        label = _param_label(param)
        what = (getattr(param, "help", None) or "").rstrip(".")
        problem = f"{where} needs {label}" + (f": {what[:1].lower()}{what[1:]}." if what else ".")
        if getattr(param, "param_type_name", "") == "argument":
            return OptionError(problem, f"give it after the command, e.g. {where} {label} ...; {see}")
        return OptionError(problem, f"add {param.opts[0]} <value>; {see}")
    if kind == "BadParameter" and param is not None:
        label = _param_label(param)
        choices = _choices(param)
        value = _given_value(param, args, choices)
        if choices and value is not None:
            near = suggest(value, choices)
            name = param.opts[0]
            problem = f"{name} {value!r} is not a valid choice."
            if near:
                return OptionError(problem, f"use {name} {near} (choices: {', '.join(choices)}).")
            return OptionError(problem, f"use one of: {', '.join(choices)}.")
        detail = exc.format_message().split(": ", 1)[-1].removeprefix("Value error, ")
        return OptionError(f"invalid value for {label}: {detail.rstrip('.')}.", see)
    if kind == "NoSuchOption":
        option = getattr(exc, "option_name", "") or exc.format_message()
        known = _option_names(ctx)
        near = difflib.get_close_matches(option, known, n=1, cutoff=0.6)
        fix = f"did you mean {near[0]}? {see}" if near else see
        return OptionError(f"{where} has no option {option}.", fix)
    message = exc.format_message()
    if message.startswith("No such command") and ctx is not None:
        commands = list(ctx.command.list_commands(ctx))
        typed = next((a for a in args if not a.startswith("-")), "")
        near = suggest(typed, commands)
        fix = f"did you mean {near}? " if near else ""
        return OptionError(f"qcc has no command {typed!r}.", f"{fix}Commands: {', '.join(commands)}.")
    if kind == "BadOptionUsage" and "requires an argument" in message:
        return OptionError(f"option {getattr(exc, 'option_name', '')} needs a value.", see)
    return OptionError(f"{where}: {message[:1].lower()}{message[1:].rstrip('.')}.", see)


def suggest(value: str, choices: Sequence[str]) -> str | None:
    """Returns the choice a mistyped ``value`` most likely means: itself in another case or
    spelling, its alias (``tensorrt`` -> ``trt``), or the nearest choice by spelling; None if no
    choice is near."""
    key = value.strip().lower().replace("_", "-")
    for candidate in (key, key.replace("-", ""), ALIASES.get(key), ALIASES.get(key.replace("-", ""))):
        if candidate in choices:
            return candidate
    near = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return near[0] if near else None


def _command_path(ctx: Any, args: Sequence[str]) -> str:
    if ctx is not None and ctx.command_path != "qcc":
        return ctx.command_path
    # Some errors (an option missing its value) carry no context: the command is the first word.
    command = next((a for a in args if not a.startswith("-")), None)
    names = {info.name or info.callback.__name__ for info in app.registered_commands if info.callback}
    return f"qcc {command}" if command in names else "qcc"


def _param_label(param: Any) -> str:
    if getattr(param, "param_type_name", "") == "argument":
        return (param.name or "").upper()
    return "/".join(param.opts)


def _choices(param: Any) -> list[str]:
    """The valid values of ``param`` when it is a choice (an enum option), else []."""
    kind = _CHOICE_OPTIONS.get(getattr(param, "name", None))
    return [k.value for k in kind] if kind else []


def _given_value(param: Any, args: Sequence[str], choices: Sequence[str]) -> str | None:
    """The value the user gave ``param`` on the command line (the first that is not a choice)."""
    given = []
    for i, arg in enumerate(args):
        for opt in param.opts:
            if arg == opt and i + 1 < len(args):
                given.append(args[i + 1])
            elif opt.startswith("--") and arg.startswith(opt + "="):
                given.append(arg[len(opt) + 1 :])
            elif not opt.startswith("--") and arg.startswith(opt) and len(arg) > len(opt) and arg[1] != "-":
                given.append(arg[len(opt) :])
    return next((v for v in given if v not in choices), None)


def _option_names(ctx: Any) -> list[str]:
    if ctx is None:
        return []
    return [o for p in ctx.command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")]


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``qcc`` console script: runs the app and exits with its code.

    The parser's errors (typer/click usage errors) are printed in qcc's one-line style, or as a JSON
    object when ``--json`` is among the arguments, and exit with code 2.
    """
    args = list(sys.argv[1:] if args is None else args)
    as_json = "--json" in args  # read before parsing: a parse error must honour it too
    try:
        code = typer.main.get_command(app).main(args, prog_name="qcc", standalone_mode=False)
    except UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `qcc`: the help is already printed
            sys.exit(EXIT_USER_ERROR)
        try:
            _fail(usage_error(exc, args), as_json)
        except typer.Exit as done:
            code = done.exit_code
    except typer.Abort:
        _err.print("aborted.")
        code = 1
    sys.exit(code if isinstance(code, int) else EXIT_OK)


if __name__ == "__main__":
    main()
