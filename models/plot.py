"""Plots bench.py's report.json: task fidelity vs int8 speed-up, one point per model and tool.

    models/.venv/bin/python models/plot.py build/bench/report.json -o build/bench/fidelity_vs_speedup.png

Runs in the zoo env (matplotlib lives there, not in the project env). Colour = model, marker = tool; a thin
line joins a model's tools, so the step from the anchor to qcc reads as an arrow of sorts. Speed-up = fp32 ms /
int8 ms at one thread (right of 1 means int8 is faster); fidelity = the model's headline metric (top-1
agreement, box F1, mask IoU, ...; see report.md), int8 vs fp32. Rows of a target without its runtime here (trt:
qcc-trt, qcc-trt-entropy and the ModelOpt anchors, which ran in ORT as a stand-in) are left out: their speed-up
would say nothing about TensorRT.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

MARKERS = ("o", "s", "^", "D", "v", "P")


def plot(report: dict, png: Path) -> None:
    """Draws the scatter into ``png``; rows that did not run or were not timed are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # A target without its runtime here (trt) ran in ORT as a stand-in: its speed-up would mislead.
    stand_ins = sorted({r["tool"] for r in report["rows"] if not r.get("native_runtime", True)})
    rows = [
        r for r in report["rows"] if r["ok"] and r.get("latency") and r.get("headline") and r["tool"] not in stand_ins
    ]
    models = list(dict.fromkeys(r["model"] for r in report["rows"]))
    tools = [t for t in dict.fromkeys(r["tool"] for r in report["rows"]) if t not in stand_ins]
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(9, 6), dpi=120)
    for i, model in enumerate(models):
        mine = sorted((r for r in rows if r["model"] == model), key=lambda r: tools.index(r["tool"]))
        if not mine:
            continue
        xs, ys = [r["latency"]["speedup"] for r in mine], [r["headline"][1] for r in mine]
        ax.plot(xs, ys, color=colours(i % 10), linewidth=0.8, alpha=0.5)
        for row, x, y in zip(mine, xs, ys, strict=True):
            ax.scatter(
                x,
                y,
                color=colours(i % 10),
                marker=MARKERS[tools.index(row["tool"]) % len(MARKERS)],
                s=60,
                edgecolors="black",
                linewidths=0.5,
                zorder=3,
            )
        label = f"{model} ({mine[-1]['headline'][0]})"
        ax.annotate(
            label, (xs[-1], ys[-1]), xytext=(6, 4), textcoords="offset points", fontsize=7, color=colours(i % 10)
        )
    for j, tool in enumerate(tools):
        ax.scatter([], [], color="grey", marker=MARKERS[j % len(MARKERS)], edgecolors="black", label=tool)
    ax.margins(x=0.25)  # room for the model names right of the last point
    ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("speed-up fp32 ms / int8 ms (1 thread; > 1: int8 faster)")
    ax.set_ylabel("task fidelity, int8 vs fp32 (headline metric)")
    ax.set_ylim(top=1.02)
    ax.set_title(f"qcc vs the ORT anchor on the zoo ({report['environment']['date']})")
    if stand_ins:
        fig.text(0.01, 0.01, f"not shown: {', '.join(stand_ins)} (no runtime here; ran in ORT)", fontsize=7)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="bench.py's report.json")
    parser.add_argument("-o", "--out", type=Path, required=True, help="the PNG to write")
    args = parser.parse_args(argv)
    plot(json.loads(args.report.read_text()), args.out)


if __name__ == "__main__":
    main()
