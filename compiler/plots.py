"""The per-layer report folder: ``qcc compile --report-dir DIR`` and ``qcc analyze --report-dir DIR``.

Writes, atomically each:

* ``report.json``: the compile report (``qcc.report``), when there was a compile;
* ``layers.json``: the per-tensor analysis (``qcc.analyze``), clip ranges and histograms included;
* ``sqnr.png``: per quantized tensor in graph order, SQNR against fp32 and the drop its producer
  adds (the worst named), with the nodes mixed precision kept float listed beside it;
* ``clip_ranges.png``: for the worst layers, the float activation's histogram on the analyzed
  samples with the chosen clip range (what the int8 grid covers) drawn over it.

The PNGs need matplotlib (``pip install 'qcc[plots]'``); without it the JSON is still written and
the returned notes say why there are no plots.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

from qcc.io import write_atomic

WORST = 6  # layers whose clip range is drawn


def write_report_dir(
    folder: str | os.PathLike, analysis: dict[str, Any], report: dict[str, Any] | None
) -> tuple[list[str], list[str]]:
    """Writes the folder (see module docstring); returns the files written, and notes on what
    was skipped."""
    os.makedirs(folder, exist_ok=True)
    written = []
    if report is not None:
        written.append(_write(folder, "report.json", json.dumps(report, indent=2).encode()))
    written.append(_write(folder, "layers.json", json.dumps(analysis, indent=2).encode()))
    try:
        import matplotlib
    except ImportError:
        return written, ["no PNG plots: matplotlib is not installed (pip install 'qcc[plots]')"]
    matplotlib.use("Agg")
    mixed = (report or {}).get("mixed_precision") or {}
    written.append(_write(folder, "sqnr.png", _sqnr_png(analysis, mixed.get("kept_float", []))))
    if analysis["tensors"]:
        written.append(_write(folder, "clip_ranges.png", _clip_png(analysis)))
    return written, []


def _write(folder: str | os.PathLike, name: str, data: bytes) -> str:
    path = os.path.join(folder, name)
    write_atomic(path, data)
    return path


def _worst(analysis: dict[str, Any], count: int) -> list[dict[str, Any]]:
    ranked = [t for t in analysis["tensors"] if t["drop_db"] is not None]
    return sorted(ranked, key=lambda t: -t["drop_db"])[:count]


def _sqnr_png(analysis: dict[str, Any], kept_float: list[dict[str, Any]]) -> bytes:
    import matplotlib.pyplot as plt

    tensors = analysis["tensors"]
    x = list(range(len(tensors)))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    top.plot(x, [min(t["sqnr_db"], 80.0) for t in tensors], marker=".", color="tab:blue")
    top.set_ylabel("SQNR vs fp32 (dB)")
    top.set_title(f"qcc analyze -> {analysis['target']}: {len(tensors)} quantized activations, "
                  f"{analysis['samples']} samples; output SQNR "
                  + ", ".join(f"{k} {v:.1f} dB" for k, v in analysis["output_sqnr_db"].items()))
    top.grid(alpha=0.3)
    drops = [t["drop_db"] or 0.0 for t in tensors]
    bottom.bar(x, drops, color=["tab:red" if d > 0 else "tab:gray" for d in drops])
    bottom.set_ylabel("drop its node adds (dB)")
    bottom.set_xlabel("quantized tensor, graph order")
    bottom.grid(alpha=0.3)
    index = {t["name"]: i for i, t in enumerate(tensors)}
    for t in _worst(analysis, 5):
        bottom.annotate(t["producer"] or t["name"], (index[t["name"]], t["drop_db"]), fontsize=7, rotation=20,
                        xytext=(3, 3), textcoords="offset points")
    if kept_float:
        lines = "\n".join(k["node"] for k in kept_float[:12])
        more = f"\n... {len(kept_float) - 12} more" if len(kept_float) > 12 else ""
        top.text(1.01, 1.0, f"kept float by\nmixed precision:\n{lines}{more}", transform=top.transAxes,
                 fontsize=7, va="top")
    return _png(fig)


def _clip_png(analysis: dict[str, Any]) -> bytes:
    import matplotlib.pyplot as plt

    worst = [t for t in _worst(analysis, WORST) if t.get("histogram")]
    if not worst:
        worst = [t for t in analysis["tensors"] if t.get("histogram")][:WORST]
    cols = 3
    rows = max(1, -(-len(worst) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(12, 3.2 * rows), squeeze=False)
    for ax in axes.ravel()[len(worst):]:
        ax.axis("off")
    for ax, t in zip(axes.ravel(), worst, strict=False):
        hist = t["histogram"]
        edges, counts = hist["edges"], hist["counts"]
        ax.stairs(counts, edges, fill=True, color="tab:blue", alpha=0.6)
        ax.set_yscale("log")
        low, high = t["clip_range"]
        for edge in (low, high):
            ax.axvline(edge, color="tab:red", lw=1.2)
        ax.set_title(f"{t['producer'] or t['name']}\nSQNR {t['sqnr_db']:.1f} dB, drop {t['drop_db'] or 0:.1f} dB",
                     fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("float activations (log counts) and the int8 clip range (red) of the worst layers", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()
