"""Compiles every zoo model for every qcc target and scores each int8 artifact against its fp32 model.

    .venv/bin/python models/zoo.py --out build/zoo [--models-dir DIR] [--only NAME] [--target T] [--repeats N]

Per (model, target): compile with the qcc CLI in a child process (a crash or an error is one row with its
reason), fidelity on ``eval.npz`` with the model's ``evaluate.METRICS`` entry (output cosine for models it does
not know), output cosine, latency fp32 vs int8 at one thread (median of interleaved runs; ``.tflite`` artifacts
run in LiteRT), Conv/MatMul/Gemm left in float after ONNX Runtime's optimizer, artifact size, compile seconds and
the report's int8/fused/float node counts. Writes ``OUT/report.json`` and ``OUT/report.md``; artifacts, compile
reports and logs go to ``OUT/<model>/``.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
from collections.abc import Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as h  # noqa: E402

logger = logging.getLogger("zoo")


def render(report: dict) -> str:
    """The Markdown report: one row per (model, target), then failures and why nodes stayed float."""
    lines = [
        "# qcc zoo",
        "",
        f"{report['environment']['date']}, qcc {report['environment']['qcc']}, onnxruntime "
        f"{report['environment']['onnxruntime']}, {report['environment']['cpus']} CPUs (load "
        f"{report['environment']['load_average'][0]}). Fidelity = int8 vs fp32 on the eval feeds (agreement, "
        f"not accuracy). Latency: 1 thread, median of {report['repeats']} interleaved runs on the largest eval "
        "feed; speed-up = fp32 ms / int8 ms. Float left = Conv/MatMul/Gemm still float after ORT's optimizer.",
        "",
        "| model | target | runs | fidelity | output cos | fp32 ms | int8 ms | speed-up | float left "
        "| MB fp32 → int8 | compile s | nodes int8 / fused / float | verify |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    if h.stand_in_note(report["rows"]):
        lines[-2:-2] = [h.stand_in_note(report["rows"]), ""]
    for row in report["rows"]:
        fp32_mb = report["models"][row["model"]]["fp32_mb"]
        latency, qcc = row.get("latency") or {}, row.get("qcc") or {}
        nodes = f"{qcc['int8']} / {qcc['fused']} / {qcc['float']}" if qcc else "-"
        verify = "-" if not qcc else ("ok" if qcc["verify_ok"] else "FAILED")
        lines.append(
            f"| {row['model']} | {row['target']} | {'yes' if row['ok'] else 'no'} | {h.fidelity_cell(row)} "
            f"| {h.fmt((row.get('output_cosine') or {}).get('cosine_mean'), 4)} "
            f"| {h.fmt(latency.get('fp32_ms'), 2)} | {h.fmt(latency.get('int8_ms'), 2)} "
            f"| {h.fmt(latency.get('speedup'), 2)} | {h.fmt(row.get('float_compute_left'))} "
            f"| {fp32_mb:.2f} → {h.fmt(row.get('size_mb'), 2)} | {h.fmt(row['compile']['seconds'], 1)} "
            f"| {nodes} | {verify} |"
        )
    failed = [r for r in report["rows"] if not r["ok"] or r.get("latency_error")]
    if failed:
        lines += ["", "## Failures", ""]
        lines += [
            f"- {r['model']} / {r['target']} at {r['stage'] or 'latency'}: {r['reason'] or r['latency_error']}"
            for r in failed
        ]
    reasons = [r for r in report["rows"] if (r.get("qcc") or {}).get("float_reasons")]
    if reasons:
        lines += ["", "## Nodes qcc kept float, and why", ""]
        for row in reasons:
            top = collections.Counter(row["qcc"]["float_reasons"]).most_common(4)
            lines.append(f"- {row['model']} / {row['target']}: " + "; ".join(f"{n}× {reason}" for reason, n in top))
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    args = h.arguments(__doc__.splitlines()[0], repeats=30).parse_args(argv)
    h.setup_logging()
    models = h.discover(args.models_dir, args.only)
    tools = h.qcc_tools(args.target)
    logger.info("zoo: %d models x %s -> %s", len(models), ", ".join(t.name for t in tools), args.out)
    rows = h.run_all(models, tools, args.out, args.repeats, args.timeout)
    report = {
        "environment": h.environment(),
        "repeats": args.repeats,
        "models": {m.name: {"metric": m.metric, "fp32_mb": round(m.onnx.stat().st_size / 1e6, 3)} for m in models},
        "rows": rows,
    }
    h.write_report(args.out, report, render(report))
    logger.info("wrote %s and %s", args.out / "report.json", args.out / "report.md")


if __name__ == "__main__":
    main()
