"""The per-layer report folder: ``qcc compile --report-dir DIR`` and ``qcc analyze --report-dir DIR``.

Writes, atomically each:

* ``report.json``: the compile report (``qcc.report``), when there was a compile;
* ``layers.json``: the per-tensor analysis (``qcc.analyze``), clip ranges and histograms included;
* ``sqnr.png``: per quantized tensor in graph (topological) order, ticks labelled with the node
  that writes it, SQNR against fp32 and the drop that node adds (the worst named; nodes the user
  excluded drawn apart and never named worst), with the nodes mixed precision kept float listed
  beside it;
* ``clip_ranges.png``: for the worst layers, the float activation's histogram on the analyzed
  samples with the chosen clip range (what the int8 grid covers) drawn over it;
* ``mixed_precision.png``, after a compile whose report has a ``mixed_precision`` section: each
  node kept float for ``--tolerance`` and the output error it saved, and the error after each
  choice against the bound. Without the section nothing is written and the notes say why.

Titles (and each PNG's ``Title`` metadata) name the command that wrote the folder.

The PNGs need matplotlib (``pip install 'qcc[plots]'``); without it the JSON is still written and
the returned notes say why there are no plots.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from typing import Any

from qcc.analyze import worst_first
from qcc.io import write_atomic

WORST = 6  # layers whose clip range is drawn
MAX_TICKS = 60  # tick labels on the SQNR plot's x axis; more tensors label every k-th
NAME_CHARS = 28  # node names longer than this are shortened to their end (where ONNX paths differ)
# The mixed-precision pass states each choice's measured effect in the node's reason
# (passes/mixed_precision.py): "... error falls <saved>; all chosen so far: <before> -> <after>".
_EFFECT = re.compile(r"error falls ([-+0-9.eE]+); all chosen so far: ([-+0-9.eE]+) -> ([-+0-9.eE]+)")
_UNIT = re.compile(r"around '([^']*)'")


def write_report_dir(
    folder: str | os.PathLike,
    analysis: dict[str, Any],
    report: dict[str, Any] | None,
    command: str | None = None,
) -> tuple[list[str], list[str]]:
    """Writes the folder (see module docstring).

    Args:
        folder: created if missing.
        analysis: :func:`qcc.analyze.analyze_model`'s result.
        report: the compile report, or None (``analyze``).
        command: the qcc command writing the folder, named in the plots' titles; None: ``compile``
            when there is a compile report, else ``analyze``.

    Returns:
        The files written, and notes on what was skipped and why.

    Raises:
        OutputError: a file cannot be written.
    """
    command = command or ("compile" if report is not None else "analyze")
    os.makedirs(folder, exist_ok=True)
    written, notes = [], []
    if report is not None:
        written.append(_write(folder, "report.json", json.dumps(report, indent=2).encode()))
    written.append(_write(folder, "layers.json", json.dumps(analysis, indent=2).encode()))
    try:
        import matplotlib
    except ImportError:
        return written, ["no PNG plots: matplotlib is not installed (pip install 'qcc[plots]')"]
    matplotlib.use("Agg")
    mixed = (report or {}).get("mixed_precision")
    kept_float = (mixed or {}).get("kept_float") or []
    written.append(_write(folder, "sqnr.png", _png(*_sqnr_figure(analysis, kept_float, command))))
    if analysis["tensors"]:
        written.append(_write(folder, "clip_ranges.png", _png(*_clip_figure(analysis, command))))
    if mixed:
        written.append(_write(folder, "mixed_precision.png", _png(*_mixed_figure(mixed, report, command))))
    elif report is not None:
        notes.append(
            "no mixed_precision.png: the compile ran no mixed precision (--tolerance off or --no-verify), "
            "so its report has no mixed_precision section"
        )
    return written, notes


def _write(folder: str | os.PathLike, name: str, data: bytes) -> str:
    path = os.path.join(folder, name)
    write_atomic(path, data)
    return path


def short_name(name: str) -> str:
    """A node name cut to its last ``NAME_CHARS`` characters (ONNX paths differ at their end)."""
    return name if len(name) <= NAME_CHARS else "…" + name[-(NAME_CHARS - 1) :]


def _label(tensor: dict[str, Any]) -> str:
    return tensor["producer"] or tensor["name"]


def _bar_colour(tensor: dict[str, Any]) -> str:
    if tensor.get("excluded"):
        return "lightgray"
    return "tab:red" if (tensor["drop_db"] or 0.0) > 0 else "tab:gray"


def _sqnr_figure(analysis: dict[str, Any], kept_float: list[dict[str, Any]], command: str):
    """Returns the SQNR figure and its title."""
    import matplotlib.pyplot as plt

    tensors = analysis["tensors"]
    x = list(range(len(tensors)))
    width = min(max(12.0, 0.2 * len(tensors)), 40.0)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(width, 8), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    title = (
        f"qcc {command} -> {analysis['target']}: {len(tensors)} quantized activations, "
        f"{analysis['samples']} samples; output SQNR "
        + ", ".join(f"{k} {v:.1f} dB" for k, v in analysis["output_sqnr_db"].items())
    )
    top.plot(x, [min(t["sqnr_db"], 80.0) for t in tensors], marker=".", color="tab:blue")
    top.set_ylabel("SQNR vs fp32 (dB)")
    top.set_title(title)
    top.grid(alpha=0.3)
    drops = [t["drop_db"] or 0.0 for t in tensors]
    colors = [_bar_colour(t) for t in tensors]
    bars = bottom.bar(x, drops, color=colors)
    excluded = [bar for bar, t in zip(bars, tensors, strict=True) if t.get("excluded")]
    for bar in excluded:
        bar.set_hatch("//")
    if excluded:
        bottom.legend([excluded[0]], ["excluded by the user (--exclude): not ranked"], fontsize=7, loc="best")
    bottom.set_ylabel("drop its node adds (dB)")
    bottom.set_xlabel("quantized tensor, in graph (topological) order, by the node that writes it")
    bottom.grid(alpha=0.3)
    step = max(1, math.ceil(len(tensors) / MAX_TICKS))
    ticks = x[::step]
    bottom.set_xticks(ticks)
    bottom.set_xticklabels([short_name(_label(tensors[i])) for i in ticks], rotation=90, fontsize=7)
    index = {t["name"]: i for i, t in enumerate(tensors)}
    for t in worst_first(analysis)[:5]:
        bottom.annotate(
            short_name(_label(t)),
            (index[t["name"]], t["drop_db"]),
            fontsize=7,
            rotation=20,
            xytext=(3, 3),
            textcoords="offset points",
        )
    if kept_float:
        lines = "\n".join(short_name(k["node"]) for k in kept_float[:12])
        more = f"\n... {len(kept_float) - 12} more" if len(kept_float) > 12 else ""
        top.text(
            1.01, 1.0, f"kept float by\nmixed precision:\n{lines}{more}", transform=top.transAxes, fontsize=7, va="top"
        )
    return fig, title


def _clip_figure(analysis: dict[str, Any], command: str):
    """Returns the clip-range figure (the worst layers' histograms) and its title."""
    import matplotlib.pyplot as plt

    worst = [t for t in worst_first(analysis)[:WORST] if t.get("histogram")]
    if not worst:
        worst = [t for t in analysis["tensors"] if t.get("histogram")][:WORST]
    cols = 3
    rows = max(1, -(-len(worst) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(12, 3.2 * rows), squeeze=False)
    for ax in axes.ravel()[len(worst) :]:
        ax.axis("off")
    for ax, t in zip(axes.ravel(), worst, strict=False):
        hist = t["histogram"]
        edges, counts = hist["edges"], hist["counts"]
        ax.stairs(counts, edges, fill=True, color="tab:blue", alpha=0.6)
        ax.set_yscale("log")
        low, high = t["clip_range"]
        for edge in (low, high):
            ax.axvline(edge, color="tab:red", lw=1.2)
        ax.set_title(
            f"{short_name(_label(t))}\nSQNR {t['sqnr_db']:.1f} dB, drop {t['drop_db'] or 0:.1f} dB", fontsize=8
        )
        ax.tick_params(labelsize=7)
    title = (
        f"qcc {command} -> {analysis['target']}: float activations (log counts) and the int8 clip range (red) "
        "of the worst layers"
    )
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig, title


def mixed_precision_choices(mixed: dict[str, Any]) -> list[dict[str, Any]]:
    """The nodes a compile kept float for ``--tolerance``, each with the output error its unit
    saved (``saved``, None if the reason does not say) and the error after it (``after``), in the
    order of the report's ``kept_float``."""
    choices = []
    for kept in mixed.get("kept_float") or []:
        effect = _EFFECT.search(kept.get("reason", ""))
        unit = _UNIT.search(kept.get("reason", ""))
        choices.append(
            {
                "node": kept["node"],
                "op_type": kept.get("op_type", ""),
                "unit": unit.group(1) if unit else kept["node"],
                "saved": float(effect.group(1)) if effect else None,
                "before": float(effect.group(2)) if effect else None,
                "after": float(effect.group(3)) if effect else None,
            }
        )
    return choices


def _mixed_figure(mixed: dict[str, Any], report: dict[str, Any] | None, command: str):
    """Returns the mixed-precision figure (nodes kept float and the error each saved) and its title."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    choices = mixed_precision_choices(mixed)
    what = "1 - cosine" if mixed.get("metric") == "cosine" else "relative error"
    error = mixed.get("artifact_error")
    verdict = {True: "within", False: "above", None: "not measured against"}[mixed.get("met")]
    measured = f"{error:.3g}" if error is not None else "not measured"
    title = (
        f"qcc {command} -> {(report or {}).get('target', '?')}: mixed precision kept {len(choices)} nodes float; "
        f"artifact output {what} {measured}, {verdict} the bound {mixed.get('bound'):g}"
    )
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(13, max(3.5, 0.25 * len(choices) + 1.5)), gridspec_kw={"width_ratios": [3, 2]}
    )
    fig.suptitle(title, fontsize=10)
    if not choices:
        left.text(0.5, 0.5, "no node kept float", ha="center", va="center", transform=left.transAxes)
        left.axis("off")
    else:
        units = list(dict.fromkeys(c["unit"] for c in choices))
        palette = plt.get_cmap("tab10")
        y = list(range(len(choices)))
        left.barh(
            y, [c["saved"] or 0.0 for c in choices], color=[palette(units.index(c["unit"]) % 10) for c in choices]
        )
        left.set_yticks(y)
        left.set_yticklabels([f"{short_name(c['node'])} ({c['op_type']})" for c in choices], fontsize=7)
        left.invert_yaxis()
        left.set_xlabel(f"output {what} its float unit saved (same colour: floated together)")
        left.grid(alpha=0.3, axis="x")
    steps = sorted({(c["before"], c["after"]) for c in choices if c["after"] is not None}, key=lambda s: -s[1])
    if steps:
        errors = [steps[0][0], *(after for _, after in steps)]
        right.step(range(len(errors)), errors, where="post", marker="o", color="tab:blue", label="simulated error")
        right.set_xlabel("float units chosen, in the order chosen")
        right.xaxis.set_major_locator(MaxNLocator(integer=True))
    if error is not None:
        right.axhline(error, color="tab:green", lw=1, label=f"artifact error {error:.3g}")
    if mixed.get("bound") is not None:
        right.axhline(mixed["bound"], color="tab:red", ls="--", lw=1, label=f"bound {mixed['bound']:g}")
    right.set_ylabel(f"output {what}")
    right.grid(alpha=0.3)
    right.legend(fontsize=7)
    fig.tight_layout()
    return fig, title


def _png(fig, title: str) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Title": title})
    plt.close(fig)
    return buffer.getvalue()
