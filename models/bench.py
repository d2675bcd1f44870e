"""Benchmarks qcc (every target) against its anchors on every zoo model, in one run, on the same data.

    .venv/bin/python models/bench.py --out build/bench [--models-dir DIR] [--only NAME] [--target T]
        [--repeats N] [--no-plot] [--modelopt-python PATH]

Two anchors, each on the same ``calib.npz``: ``anchor-ort`` (``baseline_ort.py``: quant_pre_process +
quantize_static QDQ, U8S8, per-channel MinMax, with fallbacks) for every target, and, for the trt target,
NVIDIA ModelOpt (``baseline_modelopt.py`` INT8, run by models/.venv-modelopt's python): ``anchor-modelopt``
(its default entropy calibration) and ``anchor-modelopt-max``, compared with ``qcc-trt`` (MinMax) and
``qcc-trt-entropy`` (``-m entropy``). Without that env the ModelOpt rows are skipped with the reason.
With the ort target, ``qcc-ort-quick`` (``--tolerance off --no-refit``: no float search, no refit) shows
in the same run what the default's search and refit cost in time and give in fidelity.

Per model and tool: did it produce a model that loads and runs (and why not), compile wall time and peak RSS
of the compile process (its own ``ru_maxrss``, via os.wait4), artifact size, task fidelity and output cosine
vs fp32, latency fp32/int8 at one thread (all of a model's artifacts timed in one interleaved loop; ``.tflite``
in LiteRT; trt artifacts in ORT as a stand-in, so never compared), Conv/MatMul/Gemm left in float after ORT's
optimizer. Writes ``OUT/report.json``, ``OUT/report.md`` (ratios qcc/anchor beside the raw numbers, their
geometric means, where qcc is behind) and, with the zoo env's matplotlib (models/.venv),
``OUT/fidelity_vs_speedup.png`` through plot.py. Benchmarks are not tests: nothing here asserts.
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

# The trt comparison: qcc's trt rows against ModelOpt. ModelOpt's default calibration is entropy, so
# qcc-trt-entropy is the like-for-like row; qcc-trt (MinMax) also meets ModelOpt's max calibration.
QCC_TRT, QCC_TRT_ENTROPY = "qcc-trt", "qcc-trt-entropy"
TRT_TOOLS = (h.MODELOPT_ANCHOR, h.MODELOPT_ANCHOR_MAX, QCC_TRT, QCC_TRT_ENTROPY)
TRT_PAIRS = ((QCC_TRT, h.MODELOPT_ANCHOR), (QCC_TRT_ENTROPY, h.MODELOPT_ANCHOR), (QCC_TRT, h.MODELOPT_ANCHOR_MAX))
# Rows only the trt section shows; qcc-trt is in both (against anchor-ort in the main table).
TRT_ONLY = (h.MODELOPT_ANCHOR, h.MODELOPT_ANCHOR_MAX, QCC_TRT_ENTROPY)
ANCHORS = (h.ANCHOR, h.MODELOPT_ANCHOR, h.MODELOPT_ANCHOR_MAX)
# qcc on ort without its float search and refit (README, "A compile in quantize_static's time").
QCC_ORT_QUICK = h.Tool("qcc-ort-quick", "ort", ".onnx", options=("--tolerance", "off", "--no-refit"))

# (column, how to read it from a row, digits). RATIO_COLUMNS also show qcc / anchor beside the qcc value.
COLUMNS = (
    ("fidelity", h.headline_value, 3),
    ("output cos", lambda r: (r.get("output_cosine") or {}).get("cosine_mean"), 4),
    ("int8 ms", lambda r: (r.get("latency") or {}).get("int8_ms"), 2),
    ("speed-up", lambda r: (r.get("latency") or {}).get("speedup"), 2),
    ("size MB", lambda r: r.get("size_mb"), 2),
    ("compile s", lambda r: (r.get("compile") or {}).get("seconds"), 1),
    ("peak MB", lambda r: (r.get("compile") or {}).get("peak_rss_mb"), 0),
)
RATIO_COLUMNS = ("fidelity", "int8 ms", "size MB", "compile s", "peak MB")
# The trt table leaves out latency: trt artifacts run in ORT here, a stand-in for TensorRT.
TRT_COLUMNS = tuple(c for c in COLUMNS if c[0] not in ("int8 ms", "speed-up"))
TRT_RATIO_COLUMNS = tuple(c for c in RATIO_COLUMNS if c != "int8 ms")


# Measured for every row that was compiled, whether or not the compile produced something that runs.
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
    compared = anchor is not None and row["tool"] not in ANCHORS and column[0] in RATIO_COLUMNS
    if compared and _comparable(row, column):
        ratio = _ratio(value, _value(anchor, column))
        if ratio is not None:
            text += f" ({ratio:.2f}×)"
    return text


def ort_pairs(rows: Sequence[dict]) -> list[tuple[str, str]]:
    """(qcc tool, anchor-ort) for every qcc-<target> tool in the rows: the main table's comparisons."""
    return [(tool, h.ANCHOR) for tool in dict.fromkeys(r["tool"] for r in rows if r["tool"] not in ANCHORS + TRT_ONLY)]


def _pairs(rows: Sequence[dict], pairs: Sequence[tuple[str, str]]):
    """Yields (row, anchor row) for every model and pair where both rows exist and neither was skipped."""
    by_key = {(r["model"], r["tool"]): r for r in rows if r["stage"] != "skipped"}
    for model in dict.fromkeys(r["model"] for r in rows):
        for tool, anchor in pairs:
            if (model, tool) in by_key and (model, anchor) in by_key:
                yield by_key[model, tool], by_key[model, anchor]


def ratios(rows: Sequence[dict], pairs: Sequence[tuple[str, str]]) -> list[dict]:
    """Per model and (qcc tool, anchor) pair: qcc/anchor ratios of fidelity, int8 latency, size, compile, memory.

    Returns:
        [{"model", "tool", "anchor", "both_ran", <each RATIO_COLUMNS name>: ratio or None}]; None where either
        side has no value or the latency is a stand-in runtime's. Compile s and peak MB are measured for
        failed compiles too; the geometric means take only the models where ``both_ran``.
    """
    return [
        {
            "model": row["model"],
            "tool": row["tool"],
            "anchor": anchor["tool"],
            "both_ran": row["ok"] and anchor["ok"],
            **{
                column[0]: _ratio(_value(row, column), _value(anchor, column)) if _comparable(row, column) else None
                for column in COLUMNS
                if column[0] in RATIO_COLUMNS
            },
        }
        for row, anchor in _pairs(rows, pairs)
    ]


def behind(rows: Sequence[dict], pairs: Sequence[tuple[str, str]]) -> list[str]:
    """Where qcc does worse than an anchor: fails where it runs, lower fidelity, slower int8, more float.

    Latency and float compute are judged only in the anchor's own runtime (same target, native here).
    """
    notes = []
    for row, anchor in _pairs(rows, pairs):
        if not anchor["ok"]:
            continue
        where, name = f"{row['model']} / {row['tool']}", anchor["tool"]
        if not row["ok"]:
            notes.append(f"{where}: fails ({row['reason']}) where {name} runs")
            continue
        mine, theirs = h.headline_value(row), h.headline_value(anchor)
        if mine is not None and theirs is not None and mine < theirs - FIDELITY_SLACK:
            notes.append(f"{where}: fidelity {h.fidelity_cell(row)} vs {name} {h.fmt(theirs)}")
        if row["target"] != anchor["target"] or row["target"] not in h.NATIVE_RUNTIMES:
            continue  # latency and ORT's fusions are the anchor's runtime's; other targets are not judged there
        if row.get("latency") and anchor.get("latency"):
            q, a = row["latency"]["int8_ms"], anchor["latency"]["int8_ms"]
            if q > a * LATENCY_SLACK:
                notes.append(f"{where}: int8 {q:.1f} ms vs {name} {a:.1f} ms ({q / a:.2f}×)")
        q, a = row.get("float_compute_left"), anchor.get("float_compute_left")
        if q is not None and a is not None and q > a:
            notes.append(f"{where}: {q} Conv/MatMul/Gemm left float vs {name} {a}")
    return notes


def _geomean(values: Sequence[float | None]) -> float | None:
    values = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def _table(rows: Sequence[dict], anchor_name: str, columns: Sequence[tuple], latency: bool) -> list[str]:
    """Markdown table rows: one per row, ratios against ``anchor_name``'s row of the same model."""
    names = [c[0] for c in columns]
    lines = [
        "| model | tool | runs | " + "fp32 ms | " * latency + " | ".join(names) + " |" + " float left |" * latency,
        "|---|---|---|" + "---|" * latency + "---|" * len(columns) + "---|" * latency,
    ]
    anchors = {r["model"]: r for r in rows if r["tool"] == anchor_name}
    for row in rows:
        runs = "yes" if row["ok"] else f"no ({row['stage']})"
        cells = [_cell(row, anchors.get(row["model"]), column) for column in columns]
        if row.get("headline") and row["ok"]:
            cells[0] = f"{h.LABELS.get(row['headline'][0], row['headline'][0])} {cells[0]}"
        if latency:
            cells = [h.fmt((row.get("latency") or {}).get("fp32_ms"), 2), *cells, h.fmt(row.get("float_compute_left"))]
        lines.append(f"| {row['model']} | {row['tool']} | {runs} | " + " | ".join(cells) + " |")
    return lines


def _geomean_table(found: Sequence[dict], columns: Sequence[str]) -> list[str]:
    """One line per (tool, anchor) pair: the geometric mean of each ratio column over the models both ran."""
    by_pair: dict[tuple[str, str], list[dict]] = {}
    for ratio in (r for r in found if r["both_ran"]):
        by_pair.setdefault((ratio["tool"], ratio["anchor"]), []).append(ratio)
    lines = ["| tool | anchor | models | " + " | ".join(columns) + " |", "|---|---|---|" + "---|" * len(columns)]
    for (tool, anchor), group in by_pair.items():
        means = [h.fmt(_geomean([r[c] for r in group]), 2) for c in columns]
        lines.append(f"| {tool} | {anchor} | {len(group)} | " + " | ".join(means) + " |")
    return lines


def _behind_lines(notes: Sequence[str], slack: str) -> list[str]:
    return [f"- {note}" for note in notes] or [f"- nowhere beyond the slack ({slack})"]


def render(report: dict) -> str:
    """The Markdown report: raw numbers per model and tool, qcc/anchor ratios beside them, then the gaps."""
    env = report["environment"]
    main_rows = [r for r in report["rows"] if r["tool"] not in TRT_ONLY]
    order = {m: i for i, m in enumerate(dict.fromkeys(r["model"] for r in report["rows"]))}
    trt_rows = sorted(
        (r for r in report["rows"] if r["tool"] in TRT_TOOLS),
        key=lambda r: (order[r["model"]], TRT_TOOLS.index(r["tool"])),
    )
    lines = [
        "# qcc vs its anchors",
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
        "better for ms, MB and s. qcc-ort-quick = qcc-ort with `--tolerance off --no-refit` (no float search, "
        "no refit).",
        "",
    ]
    if h.stand_in_note(main_rows):
        lines += [h.stand_in_note(main_rows), ""]
    lines += _table(main_rows, h.ANCHOR, COLUMNS, latency=True)
    main_ratios = [r for r in report["ratios"] if r["anchor"] == h.ANCHOR]
    if main_ratios:
        lines += ["", "## Geometric mean of qcc / anchor-ort over the models where both ran", ""]
        lines += _geomean_table(main_ratios, RATIO_COLUMNS)
    if trt_rows:
        lines += [
            "",
            "## trt: qcc vs the ModelOpt anchor",
            "",
            "anchor-modelopt = NVIDIA ModelOpt ONNX PTQ, INT8, its default entropy calibration, fp32 graph "
            "(models/baseline_modelopt.py in models/.venv-modelopt), same calib.npz; anchor-modelopt-max = its max "
            "calibration. qcc-trt uses its default (minmax or meanmax, whichever is closer to fp32 on the "
            "calibration samples), qcc-trt-entropy `-m entropy`. Both sides "
            "ran in ONNX Runtime, a stand-in for TensorRT: latency is left out. Compile s and peak MB include each "
            "tool's interpreter start-up and imports (torch for ModelOpt). **(r×) = qcc / anchor-modelopt**.",
            "",
        ]
        lines += _table(trt_rows, h.MODELOPT_ANCHOR, TRT_COLUMNS, latency=False)
        trt_ratios = [r for r in report["ratios"] if r["anchor"] != h.ANCHOR]
        if trt_ratios:
            lines += ["", "## Geometric mean of qcc-trt / anchor-modelopt over the models where both ran", ""]
            lines += _geomean_table(trt_ratios, TRT_RATIO_COLUMNS)
    skipped = [r for r in report["rows"] if r["stage"] == "skipped"]
    if skipped:
        reasons = dict.fromkeys(r["reason"] for r in skipped)
        tools = ", ".join(dict.fromkeys(r["tool"] for r in skipped))
        lines += ["", "## Skipped", "", f"- {tools}: {'; '.join(reasons)}"]
    failed = [r for r in report["rows"] if r["stage"] != "skipped" and (not r["ok"] or r.get("latency_error"))]
    if failed:
        lines += ["", "## Failures", ""]
        lines += [f"- {r['model']} / {r['tool']}: {r['reason'] or r.get('latency_error')}" for r in failed]
    lines += [
        "",
        "## Where qcc is behind anchor-ort",
        "",
        *_behind_lines(report["behind"], f"{FIDELITY_SLACK} fidelity, {LATENCY_SLACK}× latency"),
    ]
    if trt_rows:
        lines += ["", "## Where qcc-trt is behind anchor-modelopt", ""]
        if any(r["ok"] for r in trt_rows if r["tool"] in ANCHORS):
            lines += _behind_lines(report["behind_trt"], f"{FIDELITY_SLACK} fidelity")
        else:
            lines += ["- not measured: no ModelOpt anchor ran"]
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


def tools(targets: Sequence[str], modelopt_python: Path) -> list[h.Tool]:
    """The tools of one bench run: anchor-ort, qcc per target; with ort also qcc-ort-quick; with trt also
    qcc-trt-entropy and ModelOpt."""
    found = [h.anchor_tool(), *h.qcc_tools(targets)]
    if any(t.name == "qcc-ort" for t in found):
        found.append(QCC_ORT_QUICK)
    if any(t.name == QCC_TRT for t in found):
        found += [*h.modelopt_tools(modelopt_python), h.qcc_tool("trt", method="entropy")]
    return found


def main(argv: Sequence[str] | None = None) -> None:
    parser = h.arguments(__doc__.splitlines()[0], repeats=50)
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG (no zoo env / matplotlib needed)")
    parser.add_argument("--plot-python", type=Path, default=PLOT_PYTHON, help="a python that has matplotlib")
    parser.add_argument(
        "--modelopt-python",
        type=Path,
        default=h.MODELOPT_PYTHON,
        help="the python of the ModelOpt env (make -C models venv-modelopt); missing = ModelOpt rows skipped",
    )
    args = parser.parse_args(argv)
    h.setup_logging()
    models = h.discover(args.models_dir, args.only)
    run = tools(args.target, args.modelopt_python)
    for reason in dict.fromkeys(t.skip_reason for t in run if t.skip_reason):
        logger.warning("skipping ModelOpt rows: %s", reason)
    logger.info("bench: %d models x %s -> %s", len(models), ", ".join(t.name for t in run), args.out)
    rows = h.run_all(models, run, args.out, args.repeats, args.timeout)
    main_pairs = ort_pairs(rows)
    report = {
        "environment": h.environment(),
        "repeats": args.repeats,
        "models": {m.name: {"metric": m.metric, "fp32_mb": round(m.onnx.stat().st_size / 1e6, 3)} for m in models},
        "rows": rows,
        "ratios": ratios(rows, main_pairs) + ratios(rows, TRT_PAIRS),
        "behind": behind(rows, main_pairs),
        "behind_trt": behind(rows, TRT_PAIRS),
    }
    h.write_report(args.out, report, render(report))
    if not args.no_plot:
        report["plot"] = plot(args.out, args.plot_python)
        h.write_report(args.out, report, render(report))
    logger.info("wrote %s and %s", args.out / "report.json", args.out / "report.md")


if __name__ == "__main__":
    main()
