"""The ``qcc`` command line (typer).

Every deliberate error prints one line ``error: <problem> Fix: <fix>`` on stderr and exits with
code 2; typer's own usage errors also exit with 2. Long stages draw a progress bar on stderr.
"""

from __future__ import annotations

import collections
import json
import logging
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from qcc.backends import get_backend, target_names
from qcc.errors import OptionError, QccError
from qcc.io import check_output_path, write_atomic
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

EXIT_USER_ERROR = 2

app = typer.Typer(
    name="qcc",
    help=(
        "qcc: compile a float ONNX model plus a little calibration data into an int8 model for one runtime.\n\n"
        "Example:\n\n"
        "  qcc compile model.onnx --target ort --calib calib.npz -o model.int8.onnx --report report.json\n\n"
        "Calibration data is an .npz whose keys are input names (arrays with a leading sample axis) "
        "or '<index>/<input name>' (one feed per sample)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_err = Console(stderr=True)
_out = Console()


def _fail(error: QccError) -> None:
    _err.print(f"[bold red]error:[/] {error}", soft_wrap=True, highlight=False, markup=True)
    raise typer.Exit(EXIT_USER_ERROR)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=_err, show_path=False)],
        force=True,
    )


class _ProgressBar:
    """Adapts qcc's progress callback to a rich progress bar."""

    def __init__(self, progress: Progress) -> None:
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
        Path, typer.Option("--output", "-o", help="Where to write the int8 artifact.", show_default=False)
    ],
    calib: Annotated[
        Optional[Path],
        typer.Option(
            "--calib", "-c", help="Calibration data (.npz, see `qcc --help`); --dynamic needs none.", show_default=False
        ),
    ] = None,
    target: Annotated[str, typer.Option("--target", "-t", help="Runtime to compile for (see `qcc targets`).")] = "ort",
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
            "range (trt picks minmax or meanmax by default); percentile/mse/entropy clip outliers; auto picks "
            "per tensor when the output misses --tolerance.",
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
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every pass.")] = False,
) -> None:
    """Quantize MODEL for one runtime and write the artifact atomically.

    Examples:

      qcc compile resnet.onnx -t ort -c calib.npz -o resnet.int8.onnx

      qcc compile bert.onnx -t ort -c calib.npz -o bert.int8.onnx --exclude Softmax --report r.json

      qcc compile bert.onnx -t ort --dynamic -o bert.int8.onnx   (no calibration data needed)

      qcc compile yolo.onnx -t trt -c calib.npz -o yolo.qdq.onnx --tolerance 0.01   (looser: fewer nodes float)

      qcc compile ocr.onnx -t tflite -c calib.npz -o ocr.tflite --input-shape x=1,3,48,320   (static .tflite)
    """
    _setup_logging(verbose)
    from qcc.driver import compile_model

    try:
        inputs = (model,) if calib is None else (model, calib)
        check_output_path(output, inputs=inputs)
        if report is not None:
            check_output_path(report, inputs=(*inputs, output))
        if calib_cache is not None:
            if target != "trt" or precision != Precision.INT8:
                raise OptionError(
                    "--calib-cache is TensorRT's implicit-INT8 calibration cache.", "use it with --target trt, int8."
                )
            check_output_path(calib_cache, inputs=(*inputs, output))
        options = CompileOptions(
            target=target,
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
        if report_dir is not None:
            _write_report_dir(report_dir, str(model), source, options, result)
        if calib_cache is not None:
            from qcc.backends.tensorrt import calibration_cache

            write_atomic(calib_cache, calibration_cache(result.report).encode())
    except QccError as error:
        _fail(error)
        return
    _print_summary(result.report, output)


def _write_report_dir(folder: Path, model: str, calib: str | None, options: CompileOptions, result=None) -> None:
    """Writes the per-layer report folder (``qcc.plots``) and says what it holds."""
    from qcc.analyze import analyze_model
    from qcc.plots import write_report_dir

    analysis = {"target": options.target, "samples": 0, "tensors": [], "output_sqnr_db": {}}
    if calib is None:
        _err.print("note: no per-layer analysis without calibration data (--calib)")
    else:
        try:
            analysis = analyze_model(model, calib, options, result=result)
        except QccError as error:  # e.g. nothing quantized, or an artifact over 2 GB
            _err.print(f"note: no per-layer analysis: {error}")
    _print_report_dir(folder, *write_report_dir(folder, analysis, None if result is None else result.report))


def _print_report_dir(folder: Path, files: list[str], notes: list[str]) -> None:
    _out.print(f"report folder {folder}: " + ", ".join(os.path.basename(f) for f in files))
    for note in notes:
        _err.print(f"note: {note}")


def _print_summary(report: dict, output: Path) -> None:
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
    external = f" + {output}.data (external data)" if totals["artifact_bytes"] > os.path.getsize(output) else ""
    _out.print(f"wrote {output}{external} ({size:.2f} MB) in {report['timings']['total']:.1f} s")


@app.command()
def inspect(
    model: Annotated[Path, typer.Argument(help="ONNX model to describe.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Show MODEL's inputs, outputs, opset, op histogram and what each target would quantize.

    Example:

      qcc inspect model.onnx
    """
    _setup_logging(False)
    from qcc.driver import plan_model

    try:
        plans = {name: plan_model(str(model), CompileOptions(target=name)) for name in target_names()}
    except QccError as error:
        _fail(error)
        return
    first = next(iter(plans.values()))["model"]
    if as_json:
        _out.print_json(json.dumps({"model": first, "targets": {k: v["totals"] for k, v in plans.items()}}))
        return
    _out.print(f"[bold]{model}[/]  opset {first['opset']}, {first['nodes_before']} nodes")
    for kind in ("inputs", "outputs"):
        for io in first[kind]:
            _out.print(f"  {kind[:-1]:<6} {io['name']}: {io['dtype']} {io['shape']}")
    ops = collections.Counter(first["ops_before"])
    _out.print("  ops    " + ", ".join(f"{op} {n}" for op, n in ops.most_common()))
    for name, plan in plans.items():
        totals = plan["totals"]
        _out.print(f"[bold]{name}[/]: {totals['int8']} int8, {totals['fused']} fused, {totals['float']} float")
        for reason, count in totals["float_reasons"].items():
            _out.print(f"  float x{count}: {reason}")


@app.command()
def analyze(
    model: Annotated[Path, typer.Argument(help="Float ONNX model to quantize and analyze.", show_default=False)],
    calib: Annotated[
        Path, typer.Option("--calib", "-c", help="Calibration data (.npz, see `qcc --help`).", show_default=False)
    ],
    target: Annotated[str, typer.Option("--target", "-t", help="Runtime to compile for (see `qcc targets`).")] = "ort",
    method: Annotated[
        Optional[CalibrationMethod], typer.Option("--method", "-m", help="As for compile.", show_default=False)
    ] = None,
    exclude: Annotated[
        Optional[list[str]], typer.Option("--exclude", "-x", help="As for compile: keep nodes in float.")
    ] = None,
    samples: Annotated[int, typer.Option("--samples", help="Calibration samples to measure on.")] = 4,
    top: Annotated[int, typer.Option("--top", help="Rows to show, worst first.")] = 15,
    as_json: Annotated[Optional[Path], typer.Option("--json", help="Also write every tensor's numbers here.")] = None,
    report_dir: Annotated[
        Optional[Path],
        typer.Option("--report-dir", help="Also write layers.json and PNG plots (SQNR per layer, clip ranges) here."),
    ] = None,
) -> None:
    """Compile MODEL and show where quantization loses: per quantized tensor, SQNR against the
    float model and the drop its producer adds (worst first).

    Example:

      qcc analyze model.onnx -t ort -c calib.npz --top 10

      qcc analyze model.onnx -t ort -c calib.npz -x /stem/conv   (analyze again with it in float)
    """
    _setup_logging(False)
    from qcc.analyze import analyze_model

    try:
        if as_json is not None:
            check_output_path(as_json, inputs=(model, calib))
        options = CompileOptions(target=target, method=method, exclude=tuple(exclude or ()))
        report = analyze_model(str(model), str(calib), options, samples=samples)
        if as_json is not None:
            write_atomic(as_json, json.dumps(report, indent=2).encode())
        if report_dir is not None:
            from qcc.plots import write_report_dir

            written = write_report_dir(report_dir, report, None)
        else:
            written = None
    except QccError as error:
        _fail(error)
        return
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
    if written is not None:
        _print_report_dir(report_dir, *written)


@app.command()
def check(
    model: Annotated[Path, typer.Argument(help="A QDQ ONNX model (from qcc or any other tool).", show_default=False)],
    target: Annotated[str, typer.Option("--target", "-t", help="Rules to check against.")] = "trt",
) -> None:
    """Check a quantized ONNX model against a target's rules; exit 1 if it breaks any.

    Example:

      qcc check --target trt model.qdq.onnx
    """
    _setup_logging(False)
    from qcc.backends._trt_rules import check_tensorrt_rules
    from qcc.frontend import read_model_file

    try:
        if target != "trt":
            raise OptionError(f"qcc check knows the rules of trt, not {target!r}.", "use --target trt.")
        violations = check_tensorrt_rules(read_model_file(str(model)))
    except QccError as error:
        _fail(error)
        return
    for v in violations:
        colour = "red" if v.severity == "error" else "yellow"
        _out.print(f"[{colour}]{v.severity}[/] {v.rule} at {v.node}: {v.message}", highlight=False)
    errors = sum(v.severity == "error" for v in violations)
    _out.print(f"{errors} error(s), {len(violations) - errors} warning(s)")
    raise typer.Exit(1 if errors else 0)


@app.command()
def targets() -> None:
    """List the targets qcc compiles for."""
    for name in target_names():
        spec = get_backend(name).spec
        _out.print(f"[bold]{name}[/]  {spec.description}")


def main() -> None:
    """Entry point of the ``qcc`` console script."""
    app()


if __name__ == "__main__":
    main()
