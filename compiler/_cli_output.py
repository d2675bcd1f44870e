"""What the ``qcc`` command line prints, and where: results on stdout, everything else on stderr.

The commands in :mod:`qcc.cli` parse and run; this module renders. A result is either rich tables
and lines on stdout or, with ``--json``, exactly one JSON object there (:func:`emit_json`). Errors
(:func:`fail`: qcc's one line ``error: <problem> Fix: <remedy>``, exit code 2), warnings, notes,
logs and progress bars go to stderr, so that stdout stays a script's to read.

Only rich and the light qcc modules are imported here; the heavy ones (rich.table, the analysis)
load inside the functions that need them, after the arguments are checked.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.text import Text

from qcc.errors import QccError

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_STRICT = 3

# Version of the JSON objects the commands print with --json (the compile report inside carries its own).
JSON_SCHEMA_VERSION = 1

err = Console(stderr=True)
out = Console()


def emit_json(data: dict[str, Any]) -> None:
    """Prints ``data`` as the one JSON object on stdout."""
    # Plain json, not rich: rich would wrap long strings to the terminal's width.
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()


def fail(error: QccError, as_json: bool = False) -> NoReturn:
    """Prints ``error`` as qcc's one line (and with ``--json`` as a JSON object) and exits with 2.

    Raises:
        typer.Exit: always, with code 2.
    """
    err.print(Text.assemble(("error:", "bold red"), " ", str(error)), soft_wrap=True, highlight=False)
    if as_json:
        emit_json({"error": error.problem, "fix": error.fix, "exit_code": EXIT_USER_ERROR})
    raise typer.Exit(EXIT_USER_ERROR)


def warn(message: str) -> None:
    """Prints ``warning: <message>`` on stderr."""
    err.print(Text.assemble(("warning:", "bold yellow"), " ", message), soft_wrap=True, highlight=False)


def note(message: str) -> None:
    """Prints ``note: <message>`` on stderr (something skipped, and why)."""
    err.print(f"note: {message}", highlight=False, soft_wrap=True)


def setup_logging(verbose: bool) -> None:
    """Renders qcc's logging on stderr with rich: every pass with ``verbose``, else warnings."""
    from rich.logging import RichHandler

    handler = RichHandler(console=err, show_path=False)
    # The driver logs the report's warnings on the package logger "qcc" for API users; the CLI prints
    # them from the report as `warning: <message>` lines instead, so they are not shown twice.
    handler.addFilter(lambda record: record.name != "qcc")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(message)s", handlers=[handler], force=True
    )


class ProgressBar:
    """Adapts qcc's progress callback to a rich progress bar."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.tasks: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: Optional[int]) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total)
        self.progress.update(self.tasks[stage], completed=done, total=total)


def external_data(report: dict, output: Path) -> list[str]:
    """The ``.data`` file written next to an artifact over protobuf's 2 GB limit, if any."""
    if (report["totals"].get("artifact_bytes") or 0) > os.path.getsize(output):
        return [f"{output}.data"]
    return []


def print_files(folder: Path, files: list[str]) -> None:
    """Names the files a command wrote into a report folder."""
    out.print(f"report folder {folder}: " + ", ".join(os.path.basename(f) for f in files), highlight=False)


def print_summary(report: dict, output: Path) -> None:
    """Prints a compile's summary: nodes per op type, verification, tolerance, mode, the file."""
    from rich.table import Table

    totals = report["totals"]
    table = Table(title=f"qcc -> {report['target']} ({report['activation_dtype']} activations)", show_edge=False)
    for column in ("op type", "int8", "fused", "float"):
        table.add_column(column, justify="left" if column == "op type" else "right")
    for op, counts in totals["by_op"].items():
        # Weight-only (int4) nodes count as quantized: their weights are.
        quantized = counts.get("int8", 0) + counts.get("weight-only", 0)
        table.add_row(op, str(quantized or ""), str(counts.get("fused", "")), str(counts.get("float", "")))
    out.print(table)
    for reason, count in totals["float_reasons"].items():
        out.print(f"  float x{count}: {reason}")
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
        out.print(f"verify {status} in {verify['runtime']}: " + ", ".join(facts))
        for line in part_lines(verify["fidelity"]["outputs"]):
            out.print(line, highlight=False)
    mixed = report.get("mixed_precision")
    if mixed and mixed["met"] is not None:
        what = "1 - cosine" if mixed["metric"] == "cosine" else "relative error"
        verdict = "[green]within[/]" if mixed["met"] else "[yellow]above[/]"
        out.print(
            f"tolerance: output {what} {mixed['artifact_error']:.4g} {verdict} the bound {mixed['bound']:g}; "
            f"{len(mixed['kept_float'])} nodes kept float for it"
        )
    selection = report.get("mode_selection")
    if selection:
        errors = selection["artifact_error"]
        out.print(
            f"mode: {selection['chosen']} kept (output error static {errors['static']:.4g}, dynamic "
            f"{errors['dynamic']:.4g}): {selection['why']}"
        )
    size = totals["artifact_bytes"] / 1e6
    external = f" + {output}.data (external data)" if external_data(report, output) else ""
    out.print(f"wrote {output}{external} ({size:.2f} MB) in {report['timings']['total']:.1f} s")


# A part of a concatenated output is named when its cosine is this much below the whole output's.
PART_GAP = 0.01


def part_lines(outputs: dict) -> list[str]:
    """One line per part of a concatenated output that fares clearly worse than the whole output
    (whose cosine its widest part dominates: a detector's boxes over its class scores)."""
    lines = []
    for name, stats in outputs.items():
        for part in stats.get("parts", ()):
            if part["cosine_min"] < stats["cosine_min"] - PART_GAP:
                lines.append(
                    f"  {name}[{part['start']}:{part['stop']}] on axis {part['axis']} (from {part['tensor']!r}): "
                    f"cosine >= {part['cosine_min']:.4f}, max abs error {part['max_abs_error']:.3g} of "
                    f"{part['reference_absmax']:.3g}; the whole output's cosine is {stats['cosine_min']:.4f}"
                )
    return lines


def print_plans(model: Path, first: dict, plans: dict[str, dict]) -> None:
    """Prints a float model's inputs, outputs and op histogram, and each target's plan totals."""
    import collections

    out.print(Text.assemble((str(model), "bold"), f"  opset {first['opset']}, {first['nodes_before']} nodes"))
    for kind in ("inputs", "outputs"):
        for io in first[kind]:
            out.print(f"  {kind[:-1]:<6} {io['name']}: {io['dtype']} {io['shape']}", highlight=False, markup=False)
    ops = collections.Counter(first["ops_before"])
    out.print("  ops    " + ", ".join(f"{op} {n}" for op, n in ops.most_common()), highlight=False)
    for name, plan in plans.items():
        totals = plan["totals"]
        out.print(f"[bold]{name}[/]: {totals['int8']} int8, {totals['fused']} fused, {totals['float']} float")
        for reason, count in totals["float_reasons"].items():
            out.print(f"  float x{count}: {reason}", highlight=False, markup=False)


def print_analysis(report: dict, target: str, top: int) -> None:
    """Prints ``qcc analyze``'s table: the ``top`` ranked tensors, largest drop first
    (:func:`qcc.analyze.worst_first`), then the excluded nodes' tensors on lines of their own (they
    are float already, so never ranked), then each output's SQNR."""
    from rich.table import Table

    from qcc.analyze import worst_first

    ranked = worst_first(report)
    table = Table(title=f"qcc analyze -> {target}: worst {min(top, len(ranked))} of {len(ranked)} ranked tensors")
    # The node is what --exclude takes; the tensor names are in --json.
    for column in ("node (its output tensor)", "op", "SQNR dB", "drop dB"):
        table.add_column(column, justify="right" if "dB" in column else "left", overflow="fold")
    for t in ranked[:top]:
        table.add_row(t["producer"] or t["name"], t["op_type"], f"{t['sqnr_db']:.1f}", f"{t['drop_db']:.1f}")
    out.print(table)
    excluded = [t for t in report["tensors"] if t.get("excluded")]
    for t in excluded[:top]:
        drop = "no drop measured" if t["drop_db"] is None else f"drop {t['drop_db']:.1f} dB"
        out.print(
            f"excluded (--exclude), not ranked: {t['producer'] or t['name']} {drop}", highlight=False, soft_wrap=True
        )
    if len(excluded) > top:
        out.print(f"excluded (--exclude), not ranked: {len(excluded) - top} more (--json lists them)", highlight=False)
    for name, value in report["output_sqnr_db"].items():
        out.print(f"output {name}: SQNR {value:.1f} dB on {report['samples']} samples")


def finish_compile(
    report: dict,
    output: Path,
    files: list[str],
    notes: list[str],
    folder: Optional[Path],
    folder_files: list[str],
    strict: bool,
    as_json: bool,
) -> int:
    """Prints a finished compile: the summary (or with ``as_json`` the one JSON object), the report
    folder's files, the notes, and every report warning as ``warning: <message>``.

    Args:
        report: the compile report.
        output: the artifact written.
        files: every file written.
        notes: what was skipped, and why.
        folder: ``--report-dir``, None when not asked.
        folder_files: the files written into ``folder``.
        strict: ``--strict``: a warning in :data:`qcc.report.STRICT_WARNINGS` makes the exit code 3.
        as_json: print the JSON object instead of the summary.

    Returns:
        The exit code: 3 when ``strict`` refuses a warning, else 0.
    """
    from qcc.report import STRICT_WARNINGS  # the codes --strict refuses, defined with the warnings

    warnings = [w for w in report.get("warnings", []) if isinstance(w, dict)]
    refused = sorted({w.get("code") for w in warnings} & STRICT_WARNINGS) if strict else []
    code = EXIT_STRICT if refused else EXIT_OK
    if as_json:
        emit_json(
            {
                "schema_version": JSON_SCHEMA_VERSION,
                "output": str(output),
                "files": files,
                "report": report,
                "warnings": warnings,
                "notes": notes,
                "exit_code": code,
            }
        )
    else:
        print_summary(report, output)
        if folder is not None:
            print_files(folder, folder_files)
    for text in notes:
        note(text)
    for w in warnings:
        warn(str(w.get("message", w.get("code"))))
    if refused:
        err.print(
            f"--strict: exit code {EXIT_STRICT} for {', '.join(refused)} (the artifact is written).",
            highlight=False,
            soft_wrap=True,
        )
    return code


def finish_check(violations: list[Any], model: str, target: str, as_json: bool) -> int:
    """Prints ``qcc check``'s violations, one line each and a count (or with ``as_json`` the one
    JSON object), and returns the exit code: 1 when any is an error, else 0."""
    errors = sum(v.severity == "error" for v in violations)
    code = EXIT_CHECK_FAILED if errors else EXIT_OK
    if as_json:
        found = [{"severity": v.severity, "rule": v.rule, "node": v.node, "message": v.message} for v in violations]
        emit_json(
            {
                "schema_version": JSON_SCHEMA_VERSION,
                "model": model,
                "target": target,
                "violations": found,
                "errors": errors,
                "warnings": len(violations) - errors,
                "exit_code": code,
            }
        )
        return code
    for v in violations:
        colour = "red" if v.severity == "error" else "yellow"
        out.print(
            Text.assemble((v.severity, colour), f" {v.rule} at {v.node}: {v.message}"), highlight=False, soft_wrap=True
        )
    out.print(f"{errors} error(s), {len(violations) - errors} warning(s)")
    return code
