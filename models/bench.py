"""Benchmarks qcc (every target) against the ORT anchor on every zoo model, in one run, on the same data.

    .venv/bin/python models/bench.py --out build/bench [--models-dir DIR] [--only NAME] [--target T]
        [--repeats N] [--no-plot]

The anchor is ``baseline_ort.py`` (quant_pre_process + quantize_static QDQ, U8S8, per-channel MinMax, with
fallbacks) on the same ``calib.npz``. Per model and tool: did it produce a model that loads and runs (and why
not), compile wall time and peak RSS of the compile process (its own ``ru_maxrss``, via os.wait4), artifact
size, task fidelity and output cosine vs fp32, latency fp32/int8 at one thread (all of a model's artifacts
timed in one interleaved loop; ``.tflite`` in LiteRT), Conv/MatMul/Gemm left in float after ORT's optimizer.
Writes ``OUT/report.json``, ``OUT/report.md`` (ratios qcc/anchor beside the raw numbers) and, with the zoo
env's matplotlib (models/.venv), ``OUT/fidelity_vs_speedup.png`` through plot.py. Benchmarks are not tests:
nothing here asserts.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as h  # noqa: E402

logger = logging.getLogger("zoo")

PLOT_PYTHON = h.HERE / ".venv" / "bin" / "python"
# Where "qcc is behind" starts: headline fidelity lower by more than this, or int8 slower by this factor.
FIDELITY_SLACK = 0.01
LATENCY_SLACK = 1.10

# (column, how to read it from a row, digits). RATIO_COLUMNS also show qcc / anchor beside the qcc value.
COLUMNS = (
    ("fidelity", h.headline_value, 3),
    ("output cos", lambda r: (r.get("output_cosine") or {}).get("cosine_mean"), 4),
    ("int8 ms", lambda r: (r.get("latency") or {}).get("int8_ms"), 2),
    ("speed-up", lambda r: (r.get("latency") or {}).get("speedup"), 2),
    ("size MB", lambda r: r.get("size_mb"), 2),
    ("compile s", lambda r: r["compile"]["seconds"], 1),
    ("peak MB", lambda r: r["compile"]["peak_rss_mb"], 0),
)
RATIO_COLUMNS = ("fidelity", "int8 ms", "size MB", "compile s", "peak MB")


# Measured for every row, whether or not the compile produced something that runs.
ALWAYS_MEASURED = ("compile s", "peak MB")


def _value(row: dict, column: tuple):
    name, read, _ = column
    return read(row) if row["ok"] or name in ALWAYS_MEASURED else None


def _comparable(row: dict, column: tuple) -> bool:
    """Latency of an artifact run in a stand-in runtime (trt in ORT) is not compared with the anchor's."""
    return column[0] not in ("int8 ms", "speed-up") or row["target"] in h.NATIVE_RUNTIMES


def _ratio(value, anchor) -> float | None:
    if value is None or anchor is None or anchor == 0:
        return None
    return value / anchor


def _cell(row: dict, anchor: dict | None, column: tuple) -> str:
    value = _value(row, column)
    text = h.fmt(float(value) if value is not None else None, column[2])
    if anchor is not None and row is not anchor and column[0] in RATIO_COLUMNS and _comparable(row, column):
        ratio = _ratio(value, _value(anchor, column))
        if ratio is not None:
            text += f" ({ratio:.2f}×)"
    return text


def ratios(rows: Sequence[dict]) -> list[dict]:
    """Per model and qcc tool: qcc/anchor ratios of fidelity, int8 latency, size, compile time, memory."""
    anchors = {r["model"]: r for r in rows if r["tool"] == h.ANCHOR}
    return [
        {
            "model": row["model"],
            "tool": row["tool"],
            **{
                column[0]: _ratio(_value(row, column), _value(anchors[row["model"]], column))
                if _comparable(row, column)
                else None
                for column in COLUMNS
                if column[0] in RATIO_COLUMNS
            },
        }
        for row in rows
        if row["tool"] != h.ANCHOR and row["model"] in anchors
    ]


def behind(rows: Sequence[dict]) -> list[str]:
    """Where qcc does worse than the anchor: fails where it runs, lower fidelity, slower int8, more float."""
    anchors = {r["model"]: r for r in rows if r["tool"] == h.ANCHOR}
    notes = []
    for row in rows:
        anchor = anchors.get(row["model"])
        if row["tool"] == h.ANCHOR or anchor is None or not anchor["ok"]:
            continue
        where = f"{row['model']} / {row['tool']}"
        if not row["ok"]:
            notes.append(f"{where}: fails ({row['reason']}) where the anchor runs")
            continue
        mine, theirs = h.headline_value(row), h.headline_value(anchor)
        if mine is not None and theirs is not None and mine < theirs - FIDELITY_SLACK:
            notes.append(f"{where}: fidelity {h.fidelity_cell(row)} vs anchor {h.fmt(theirs)}")
        if row["target"] != anchor["target"]:
            continue  # latency and ORT's fusions are the anchor's runtime's; other targets are not judged there
        if row.get("latency") and anchor.get("latency"):
            q, a = row["latency"]["int8_ms"], anchor["latency"]["int8_ms"]
            if q > a * LATENCY_SLACK:
                notes.append(f"{where}: int8 {q:.1f} ms vs anchor {a:.1f} ms ({q / a:.2f}×)")
        q, a = row.get("float_compute_left"), anchor.get("float_compute_left")
        if q is not None and a is not None and q > a:
            notes.append(f"{where}: {q} Conv/MatMul/Gemm left float vs anchor {a}")
    return notes


def _geomean(values: Sequence[float | None]) -> float | None:
    values = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def render(report: dict) -> str:
    """The Markdown report: raw numbers per model and tool, qcc/anchor ratios beside them, then the gaps."""
    env = report["environment"]
    lines = [
        "# qcc vs the ORT anchor",
        "",
        f"{env['date']}, qcc {env['qcc']}, onnxruntime {env['onnxruntime']}, {env['cpus']} CPUs (load "
        f"{env['load_average'][0]} at the end, shared cores: latency is noisy). Anchor = onnxruntime.quantization "
        "quantize_static QDQ U8S8 per-channel MinMax (models/baseline_ort.py), same calib.npz.",
        "",
        "Fidelity = the model's headline metric, int8 vs fp32 on eval.npz (agreement, not accuracy). Latency: "
        f"1 thread, median of {report['repeats']} runs on the largest eval feed, fp32 and all of a model's "
        "artifacts interleaved in one loop; speed-up = fp32 ms / int8 ms. Float left = Conv/MatMul/Gemm still "
        "float after ORT's optimizer. Compile s and peak MB: wall time and peak RSS of the compile process "
        "(qcc's includes its verify run). **(r×) = qcc / anchor**: above 1 is better for fidelity, below 1 is "
        "better for ms, MB and s.",
        "",
        "| model | tool | runs | fp32 ms | " + " | ".join(c[0] for c in COLUMNS) + " | float left |",
        "|---|---|---|---|" + "---|" * len(COLUMNS) + "---|",
    ]
    if h.stand_in_note(report["rows"]):
        lines[-2:-2] = [h.stand_in_note(report["rows"]), ""]
    anchors = {r["model"]: r for r in report["rows"] if r["tool"] == h.ANCHOR}
    for row in report["rows"]:
        anchor = anchors.get(row["model"])
        runs = "yes" if row["ok"] else f"no ({row['stage']})"
        cells = [_cell(row, anchor, column) for column in COLUMNS]
        if row.get("headline") and row["ok"]:
            cells[0] = f"{h.LABELS.get(row['headline'][0], row['headline'][0])} {cells[0]}"
        fp32_ms = (row.get("latency") or {}).get("fp32_ms")
        lines.append(
            f"| {row['model']} | {row['tool']} | {runs} | {h.fmt(fp32_ms, 2)} | "
            + " | ".join(cells)
            + f" | {h.fmt(row.get('float_compute_left'))} |"
        )
    by_tool: dict[str, list[dict]] = {}
    for ratio in report["ratios"]:
        by_tool.setdefault(ratio["tool"], []).append(ratio)
    if by_tool:
        lines += ["", "## Geometric mean of qcc / anchor over the models where both ran", ""]
        lines += ["| tool | " + " | ".join(RATIO_COLUMNS) + " |", "|---|" + "---|" * len(RATIO_COLUMNS)]
        for tool, found in by_tool.items():
            lines.append(
                f"| {tool} | " + " | ".join(h.fmt(_geomean([r[c] for r in found]), 2) for c in RATIO_COLUMNS) + " |"
            )
    failed = [r for r in report["rows"] if not r["ok"] or r.get("latency_error")]
    if failed:
        lines += ["", "## Failures", ""]
        lines += [f"- {r['model']} / {r['tool']}: {r['reason'] or r.get('latency_error')}" for r in failed]
    lines += ["", "## Where qcc is behind the anchor", ""]
    lines += [f"- {note}" for note in report["behind"]] or [
        f"- nowhere beyond the slack ({FIDELITY_SLACK} fidelity, {LATENCY_SLACK}× latency)"
    ]
    if report.get("plot"):
        lines += ["", f"![fidelity vs speed-up]({report['plot']})"]
    return "\n".join(lines) + "\n"


def plot(out: Path, python: Path) -> str | None:
    """Runs plot.py in the zoo env on OUT/report.json; returns the PNG's file name, None when skipped/failed."""
    if not python.exists():
        logger.warning("no %s (the zoo env with matplotlib): skipping the plot; make -C models venv", python)
        return None
    png = out / "fidelity_vs_speedup.png"
    done = subprocess.run(
        [python, h.HERE / "plot.py", out / "report.json", "-o", png], capture_output=True, text=True, check=False
    )
    if done.returncode:
        logger.warning("plot.py failed: %s", (done.stderr.strip().splitlines() or ["no message"])[-1])
        return None
    logger.info("wrote %s", png)
    return png.name


def main(argv: Sequence[str] | None = None) -> None:
    parser = h.arguments(__doc__.splitlines()[0], repeats=50)
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG (no zoo env / matplotlib needed)")
    parser.add_argument("--plot-python", type=Path, default=PLOT_PYTHON, help="a python that has matplotlib")
    args = parser.parse_args(argv)
    h.setup_logging()
    models = h.discover(args.models_dir, args.only)
    tools = [h.anchor_tool(), *h.qcc_tools(args.target)]
    logger.info("bench: %d models x %s -> %s", len(models), ", ".join(t.name for t in tools), args.out)
    rows = h.run_all(models, tools, args.out, args.repeats, args.timeout)
    report = {
        "environment": h.environment(),
        "repeats": args.repeats,
        "models": {m.name: {"metric": m.metric, "fp32_mb": round(m.onnx.stat().st_size / 1e6, 3)} for m in models},
        "rows": rows,
        "ratios": ratios(rows),
        "behind": behind(rows),
    }
    h.write_report(args.out, report, render(report))
    if not args.no_plot:
        report["plot"] = plot(args.out, args.plot_python)
        h.write_report(args.out, report, render(report))
    logger.info("wrote %s and %s", args.out / "report.json", args.out / "report.md")


if __name__ == "__main__":
    main()
