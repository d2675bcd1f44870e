"""The ``qcc`` command line (typer).

One error style: every mistake, whether qcc finds it (a :class:`~qcc.errors.QccError`) or the
option parser does (a bad choice such as ``-t tensorrt``, an unknown option, a missing argument),
prints one line ``error: <problem> Fix: <remedy>`` on stderr and exits with code 2. Parser errors
are converted in :func:`main`, which runs the typer app with ``standalone_mode=False``; a bad choice
or option name is answered with its known alias (``tensorrt`` -> ``trt``, ``kl`` -> ``entropy``) or
its nearest valid spelling (:mod:`qcc._cli_errors`).

This module declares the commands and runs them; what they print, tables or one JSON object, is
rendered by :mod:`qcc._cli_output`. The compile options (``compile``'s, and those ``analyze``
shares) are not declared here: :func:`_takes_options` builds each command's typer options from the
fields of :class:`~qcc.options.CompileOptions` (their flags, help, types and defaults), and the
command reads them back with :meth:`~qcc.options.CompileOptions.from_cli`. Here are only the
options that are not compile options (where to write, ``--json``, ``--strict``, ...).

Exit codes: 0 done; 1 ``qcc check`` found rule errors; 2 a usage or input error (nothing written);
3 ``compile --strict`` wrote the artifact but the report has a warning that ``--strict`` refuses.

Every command takes ``--json``: stdout then holds exactly one JSON object (progress bars and logs
go to stderr), also on error: ``{"error": problem, "fix": remedy, "exit_code": 2}``.

Start-up is kept light (``qcc --help`` and early errors in well under 0.3 s): onnx, numpy and the
backends are imported inside the commands, after the arguments and the input paths are checked.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import sys
import types
import typing
from collections.abc import Callable, Sequence
from inspect import Parameter, cleandoc, signature
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.text import Text

from qcc import __version__
from qcc._cli_errors import UsageError, usage_error
from qcc._cli_output import (
    EXIT_OK,
    EXIT_USER_ERROR,
    JSON_SCHEMA_VERSION,
    ProgressBar,
    emit_json,
    err,
    external_data,
    fail,
    finish_check,
    finish_compile,
    note,
    out,
    print_analysis,
    print_files,
    print_plans,
    setup_logging,
)
from qcc.errors import CalibrationDataError, ModelLoadError, OptionError, QccError
from qcc.io import ARTIFACT_SUFFIXES, check_output_path, check_output_suffix, write_atomic
from qcc.options import FIELD_DEFAULT, CompileOptions, Precision, Target, choice_type, cli_flags, field_default

__all__ = ["Target", "app", "main"]


app = typer.Typer(
    name="qcc",
    help=(
        "qcc: compile a float ONNX model plus a little calibration data into an int8 model for one runtime.\n\n"
        "Example:\n\n"
        "  qcc compile model.onnx --target ort --calib calib.npz -o model.int8.onnx --report report.json\n\n"
        "Calibration data is an .npz whose keys are input names (arrays with a leading sample axis) "
        "or '<index>/<input name>' (one feed per sample), an .npy (single-input model: samples along axis 0), "
        "or a folder of .npz/.npy files read in name order.\n\n"
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


def _print_version(value: bool) -> None:
    if value:
        out.print(f"qcc {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print qcc's version and exit.", is_eager=True, callback=_print_version),
    ] = False,
) -> None:
    """Options before the command."""


def _require_file(path: Path, error: type[QccError], what: str) -> None:
    """Checks that an input exists before the command imports onnx (seconds) to read it; the
    readers give the same message, so the error does not depend on where it is found."""
    if not os.path.exists(path):
        raise error(f"{what} {path} does not exist.", "check the path.")


_Command = TypeVar("_Command", bound=Callable[..., Any])


def _takes_options(command: str, after: str) -> Callable[[_Command], _Command]:
    """Gives a command the compile options ``command`` takes (``qcc.options.cli_flags``) as typer
    options, inserted after its parameter ``after``; the command receives them in ``**options``.

    typer reads a command's options from its signature, so the signature is rebuilt here from the
    fields' metadata: each option's flags, help, type and default are those ``qcc.options`` defines.
    """

    def add_options(func: _Command) -> _Command:
        declared = signature(func, eval_str=True)  # typer reads the Annotated options, not strings
        own = [p for p in declared.parameters.values() if p.kind != Parameter.VAR_KEYWORD]
        at = next(i for i, p in enumerate(own) if p.name == after) + 1
        func.__signature__ = declared.replace(parameters=[*own[:at], *_option_parameters(command), *own[at:]])
        return func

    return add_options


def _option_parameters(command: str) -> list[Parameter]:
    """The typer parameters of the compile options ``command`` takes, in field order."""
    hints = typing.get_type_hints(CompileOptions)
    parameters = []
    for name, (field, flag) in cli_flags(command).items():
        default = field_default(field) if flag.default is FIELD_DEFAULT else flag.default
        option = typer.Option(*flag.flags, help=flag.help, show_default=flag.show_default)
        kind = _typer_type(flag.type if flag.type is not None else hints[field])
        parameters.append(
            Parameter(name, Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=Annotated[kind, option])
        )
    return parameters


def _typer_type(kind: Any) -> Any:
    """``X | None`` as ``Optional[X]``, which typer needs on Python 3.10."""
    if isinstance(kind, types.UnionType):
        return typing.Union[typing.get_args(kind)]  # noqa: UP007
    return kind


@app.command()
@_takes_options("compile", after="calib")
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
            "--calib",
            "-c",
            help="Calibration data: an .npz, an .npy (single-input model: samples along axis 0), or a folder of "
            ".npz/.npy files read in name order (see `qcc --help`); --dynamic needs none.",
            show_default=False,
        ),
    ] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Also write the JSON report here.")] = None,
    report_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--report-dir",
            help="Also write report.json, per-layer layers.json and PNG plots (SQNR per layer, clip ranges of "
            "the worst layers, mixed-precision decisions) into this folder.",
        ),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Exit with code 3 (after writing the artifact) when the compile missed --tolerance, quantized "
            "nothing, left a quantizable node float or failed verification. Warnings are printed either way.",
        ),
    ] = False,
    calib_cache: Annotated[
        Optional[Path],
        typer.Option(
            "--calib-cache",
            help="trt only: also write TensorRT's implicit-INT8 calibration cache here "
            "(turns --smoothquant off: the cache describes the original network's tensors).",
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
    **options: Any,
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
    setup_logging(verbose)
    try:
        # Every check that needs no onnx comes first: a mistake here costs a fraction of a second.
        compile_options = CompileOptions.from_cli(options)
        check_output_suffix(output, compile_options.target)
        inputs = (model,) if calib is None else (model, calib)
        check_output_path(output, inputs=inputs)
        if report is not None:
            check_output_path(report, inputs=(*inputs, output))
        if calib_cache is not None:
            if compile_options.target != Target.TRT.value or compile_options.precision != Precision.INT8:
                raise OptionError(
                    "--calib-cache is TensorRT's implicit-INT8 calibration cache.", "use it with --target trt, int8."
                )
            check_output_path(calib_cache, inputs=(*inputs, output))
            # The cache describes the original network's tensors, which smoothing would rescale.
            compile_options = dataclasses.replace(compile_options, smoothquant=False)
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
            console=err,
            transient=True,
        ) as bar:
            source = None if calib is None else str(calib)
            result = compile_model(str(model), source, compile_options, progress=ProgressBar(bar))
        result.save(output, report)
        files = [str(output), *external_data(result.report, output), *([str(report)] if report else [])]
        notes: list[str] = []
        folder_files: list[str] = []
        if report_dir is not None:
            folder_files, notes = _write_report_dir(report_dir, str(model), source, compile_options, result)
            files += folder_files
        if calib_cache is not None:
            from qcc.backends.tensorrt import calibration_cache

            write_atomic(calib_cache, calibration_cache(result.report).encode())
            files.append(str(calib_cache))
    except QccError as error:
        fail(error, as_json)
    raise typer.Exit(finish_compile(result.report, output, files, notes, report_dir, folder_files, strict, as_json))


@app.command()
@_takes_options("compile", after="calib")
def tune(
    model: Annotated[Path, typer.Argument(help="Float ONNX model to quantize (never modified).", show_default=False)],
    calib: Annotated[
        Path,
        typer.Option("--calib", "-c", help="Calibration data, as for compile.", show_default=False),
    ],
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every pass.")] = False,
    **options: Any,
) -> None:
    """Print the trade-off mixed precision can make on MODEL: error against latency, one line per step.

    Runs the cost-aware search of --latency-budget (ort; default budget 1.0: never slower than fp32)
    without stopping at --tolerance: from all-int8, each line keeps one more unit float, the one
    that removes the most error per millisecond. Error is 1 - cosine (or the relative error of
    --tolerance relative:...) simulated on 4 calibration samples, latency as qcc.latency prices it
    for ONNX Runtime at one thread. It writes nothing; the last line gives the compile command for
    the cheapest step within --tolerance.

    Example:

      qcc tune mobilenet.onnx -t ort -c calib.npz --tolerance 0.002
    """
    setup_logging(verbose)
    try:
        asked = CompileOptions.from_cli(options)
        if asked.target != Target.ORT.value:
            raise OptionError(
                f"qcc tune prices nodes for ONNX Runtime, not for {asked.target!r}.", "use --target ort."
            )
        _require_file(model, ModelLoadError, "model file")
        _require_file(calib, CalibrationDataError, "calibration file")
        from qcc.driver import compile_model
        from qcc.options import CalibrationMethod, WeightRounding

        # The whole path: no bound to stop at, no refit (it does not change which nodes float), one
        # rounding and one method (a chosen method also keeps --dynamic from replacing the search).
        rounding = asked.weight_rounding
        search = dataclasses.replace(
            asked,
            tolerance=0.0,
            latency_budget=asked.latency_budget or 1.0,
            refit=False,
            weight_rounding=WeightRounding.GPTQ if rounding == WeightRounding.AUTO else rounding,
            method=asked.method or CalibrationMethod.MINMAX,
        )
        result = compile_model(str(model), str(calib), search)
    except QccError as error:
        fail(error)
    section = result.report.get("mixed_precision") or {}
    latency = (section.get("search") or {}).get("latency")
    if not latency:
        out.print(f"nothing to trade: the all-int8 model's simulated error is {section.get('simulated_error')}.")
        return
    fp32 = latency["fp32_ms"]
    metric = f"{asked.tolerance_metric.value} error"
    out.print(f"{'float nodes':>11}  {'predicted ms':>12}  {'vs fp32':>7}  {metric:>13}")
    for step in latency["path"]:
        out.print(
            f"{step['float_nodes']:>11}  {step['predicted_ms']:>12.4g}  {fp32 / step['predicted_ms']:>6.2f}x  "
            f"{max(step['error'], 0.0):>13.4g}"
        )
    from qcc.passes.mixed_precision import MARGIN

    bound = asked.tolerance
    # The compile's search aims at MARGIN of the bound in simulation (the artifact rounds a little
    # differently), so that is the step a compile with this budget would stop at.
    within = [s for s in latency["path"] if bound is not None and s["error"] <= MARGIN * bound]
    if within:
        best = within[0]
        budget = -(-100 * best["predicted_ms"] // fp32) / 100  # rounded up to the hundredth
        out.print(
            f"cheapest within --tolerance {bound:g} (simulated error at most {MARGIN:g} of it): "
            f"{best['float_nodes']} nodes float, {fp32 / best['predicted_ms']:.2f}x fp32:\n"
            f"  qcc compile {model} -t ort -c {calib} -o OUT --tolerance {bound:g} "
            f"--latency-budget {min(budget, 1.0):g}",
            markup=False,
            soft_wrap=True,
        )
    elif bound is None:
        out.print("with --tolerance off, a compile quantizes all the plan allows: the first line.", markup=False)
    else:
        stopped = section["search"]["stopped"]
        out.print(f"no step reaches --tolerance {bound:g}: the search stopped ({stopped}).", markup=False)


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
    written, more = write_report_dir(folder, analysis, result.report, command="compile")
    return list(written), notes + list(more)


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
    setup_logging(False)
    try:
        _require_file(model, ModelLoadError, "model file")
        inspection = _inspection_module()
        info = None if inspection is None else inspection.inspect_if_quantized(str(model))
        if info is None:
            if model.suffix.lower() == ARTIFACT_SUFFIXES["tflite"]:
                raise ModelLoadError(
                    f"{model} is a .tflite file and this qcc cannot read them (qcc.inspection is missing).",
                    "update qcc, or inspect the ONNX model it was compiled from.",
                )
            plans = _float_plans(model)
    except QccError as error:
        fail(error, as_json)
    if info is not None:
        if as_json:
            emit_json(info)
        else:
            inspection.render_inspection(info, out)
        return
    first = next(iter(plans.values()))["model"]
    if as_json:
        emit_json(
            {
                "schema_version": JSON_SCHEMA_VERSION,
                "kind": "float-onnx",
                "model": first,
                "targets": {k: v["totals"] for k, v in plans.items()},
            }
        )
        return
    print_plans(model, first, plans)


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


@app.command()
@_takes_options("analyze", after="calib")
def analyze(
    model: Annotated[Path, typer.Argument(help="Float ONNX model to quantize and analyze.", show_default=False)],
    calib: Annotated[
        Path,
        typer.Option(
            "--calib",
            "-c",
            help="Calibration data: an .npz, an .npy (single-input model: samples along axis 0), or a folder of "
            ".npz/.npy files read in name order (see `qcc --help`).",
            show_default=False,
        ),
    ],
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
    **options: Any,
) -> None:
    """Compile MODEL and show where quantization loses: per quantized tensor, SQNR against the
    float model and the drop its producer adds (worst first).

    Example:

      qcc analyze model.onnx -t ort -c calib.npz --top 10

      qcc analyze model.onnx -t ort -c calib.npz -x /stem/conv   (analyze again with it in float)

      qcc analyze model.onnx -t ort -c calib.npz --json-out tensors.json
    """
    setup_logging(False)
    try:
        if json_out is not None:
            check_output_path(json_out, inputs=(model, calib))
        compile_options = CompileOptions.from_cli(options)
        _require_file(model, ModelLoadError, "model file")
        _require_file(calib, CalibrationDataError, "calibration file")
        from qcc.analyze import analyze_model

        report = analyze_model(str(model), str(calib), compile_options, samples=samples)
        files, notes = [], []
        if json_out is not None:
            write_atomic(json_out, json.dumps(report, indent=2).encode())
            files.append(str(json_out))
        if report_dir is not None:
            from qcc.plots import write_report_dir

            written, notes = write_report_dir(report_dir, report, None, command="analyze")
            files += written
    except QccError as error:
        fail(error, as_json)
    for text in notes:
        note(text)
    if as_json:
        emit_json({"schema_version": JSON_SCHEMA_VERSION, **report, "files": files})
        return
    print_analysis(report, compile_options.target, top)
    if report_dir is not None:
        print_files(report_dir, files[1:] if json_out is not None else files)


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
    setup_logging(False)
    try:
        if target != Target.TRT:
            raise OptionError(f"qcc check knows the rules of trt, not {target.value!r}.", "use --target trt.")
        _require_file(model, ModelLoadError, "model file")
        from qcc.backends._trt_rules import check_tensorrt_rules
        from qcc.frontend import read_model_file

        violations = check_tensorrt_rules(read_model_file(str(model)))
    except QccError as error:
        fail(error, as_json)
    raise typer.Exit(finish_check(violations, str(model), target.value, as_json))


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

    specs = [get_backend(name).spec for name in target_names()]
    found = [{"name": s.name, "description": s.description, "artifact_suffix": s.artifact_suffix} for s in specs]
    if as_json:
        emit_json({"schema_version": JSON_SCHEMA_VERSION, "targets": found})
        return
    for t in found:
        out.print(Text.assemble((t["name"], "bold"), f"  {t['description']}"))


def _reflowed(doc: str) -> str:
    """A command's docstring as help text: each prose paragraph on one line, so the terminal wraps
    it (typer keeps a paragraph's source line breaks, which at 80 columns split every line in two);
    an indented paragraph (an example command) is kept as written."""
    paragraphs = cleandoc(doc).split("\n\n")
    return "\n\n".join(
        p if p.startswith(" ") else " ".join(line.strip() for line in p.splitlines()) for p in paragraphs
    )


for _info in app.registered_commands:
    if _info.help is None and _info.callback is not None and _info.callback.__doc__:
        _info.help = _reflowed(_info.callback.__doc__)


# --- the parser's errors, in qcc's one style (qcc._cli_errors) ---------------------------------------


def _choice_options() -> dict[str, type[enum.Enum]]:
    """The commands' enum options by parameter name, whose valid values a bad choice is matched
    against: every compile option whose value is an enum (``check --target`` is a Target too)."""
    hints = typing.get_type_hints(CompileOptions)
    choices: dict[str, type[enum.Enum]] = {"target": Target}
    for name, (field, flag) in cli_flags().items():
        choice = choice_type(flag.type if flag.type is not None else hints[field])
        if choice is not None:
            choices[name] = choice
    return choices


def _command_names() -> list[str]:
    return [info.name or info.callback.__name__ for info in app.registered_commands if info.callback]


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
            fail(usage_error(exc, args, _choice_options(), _command_names()), as_json)
        except typer.Exit as done:
            code = done.exit_code
    except typer.Abort:
        err.print("aborted.")
        code = 1
    sys.exit(code if isinstance(code, int) else EXIT_OK)


if __name__ == "__main__":
    main()
