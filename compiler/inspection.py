"""Read a quantized artifact and say, per node, whether it runs in integers or float.

``qcc inspect`` on a model that is already quantized (qcc's own artifacts or anyone else's: ONNX
Runtime's ``quantize_static`` output, a ModelOpt or QAT export, a LiteRT ``.tflite``) reports what
the file itself says, without compiling anything. This module recognizes the file, hands it to its
reader and totals and renders what the reader found:

* **QDQ ONNX** (``QuantizeLinear``/``DequantizeLinear`` around float ops) and **QOperator ONNX**
  (``QLinearConv``, ``MatMulInteger``, ...): ``_inspection_onnx`` says which nodes a runtime fuses
  into integer kernels and which run float on dequantized values.
* **TFLite**: an op runs in int8 (int16) when its main inputs are int8/uint8 (int16) tensors;
  ``QUANTIZE``/``DEQUANTIZE`` convert (the reader is ``_inspection_tflite``).

Per tensor the report gives the integer tensor's dtype, scale, zero point and channel axis: in ONNX
the tensor that holds the integers (a Q's output, a DQ's input), in TFLite every tensor that carries
quantization parameters. The nodes of ONNX control-flow subgraphs (If, Loop, Scan) follow their
node, named ``node/attribute/name``.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Any

from qcc._inspection_onnx import inspect_onnx, load_onnx, onnx_kind
from qcc._inspection_tflite import TFLITE_MAGIC, inspect_tflite
from qcc.errors import ModelLoadError

SCHEMA_VERSION = 1


def is_quantized_artifact(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a quantized artifact: any ``.tflite`` flatbuffer, or an ONNX model
    holding Q/DQ, QOperator or integer ops.

    The ONNX file is parsed without its external data. An unreadable file is not an artifact:
    returns False, so that the caller's own loading reports the problem.
    """
    return _sniff(Path(path)) is not None


def inspect_if_quantized(path: str | os.PathLike) -> dict[str, Any] | None:
    """:func:`inspect_artifact`'s result when ``path`` is a quantized artifact, else None.

    One parse of the file serves both the question and the inspection (``qcc inspect`` would
    otherwise read an ONNX model twice). None, like :func:`is_quantized_artifact`'s False, for a
    float ONNX model and for an unreadable file, so that the caller's own loading reports it.

    Raises:
        ModelLoadError: a quantized artifact whose contents cannot be read.
    """
    path = Path(path)
    sniffed = _sniff(path)
    if sniffed is None:
        return None
    kind, model = sniffed
    nodes, tensors = inspect_tflite(path) if model is None else inspect_onnx(model, path.parent)
    return _describe(path, kind, nodes, tensors)


def _sniff(path: Path) -> tuple[str, Any] | None:
    """``(kind, the parsed ONNX model or None for TFLite)`` of a quantized artifact; None otherwise."""
    try:
        with open(path, "rb") as file:
            head = file.read(8)
    except OSError:
        return None
    if head[4:8] == TFLITE_MAGIC:
        return "tflite", None
    try:
        model = load_onnx(path)
    except ModelLoadError:
        return None
    kind = onnx_kind(model)
    return None if kind == "float-onnx" else (kind, model)


def inspect_artifact(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a QDQ/QOperator ONNX model or a ``.tflite`` file and describes its quantization.

    Returns:
        A JSON-able dict: ``schema_version``, ``kind`` (``qdq-onnx``, ``qoperator-onnx``,
        ``tflite``; ``float-onnx`` for an ONNX model with no quantization at all), ``path``,
        ``nodes`` (``name``, ``op``, ``precision``: ``int8``, ``int16``, ``fp8``, ``weight-only``,
        ``float``, ``conversion`` or ``shape``, and ``why``), ``tensors`` (integer tensor name ->
        ``dtype``, ``scale``, ``zero_point``, ``axis`` (None: per tensor); in ONNX also ``float``,
        the float tensor it stands for, ``block_size`` for blocked scales and ``dynamic: True``
        where the scale is computed at run time, with ``scale`` None) and ``totals`` (count per
        precision, ``nodes``, ``by_op``).

    Raises:
        ModelLoadError: the file is missing or is neither an ONNX model nor a TFLite flatbuffer.
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model file {path} does not exist.", "check the path.")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder, not a model file.", "pass the .onnx or .tflite file itself.")
    try:
        with path.open("rb") as file:
            head = file.read(8)
    except OSError as error:
        raise ModelLoadError(f"cannot read {path}: {error.strerror}.", "check the file's permissions.") from None
    if not head:
        raise ModelLoadError(f"{path} is empty.", "pass a complete .onnx or .tflite file.")
    if head[4:8] == TFLITE_MAGIC:
        kind, nodes, tensors = "tflite", *inspect_tflite(path)
    else:
        model = load_onnx(path)
        kind = onnx_kind(model)
        nodes, tensors = inspect_onnx(model, path.parent)
    return _describe(path, kind, nodes, tensors)


def _describe(path: Path, kind: str, nodes: list[dict[str, Any]], tensors: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "path": str(path),
        "nodes": nodes,
        "tensors": tensors,
        "totals": _totals(nodes),
    }


def render_inspection(info: dict[str, Any], console: Any, limit: int = 20) -> None:
    """Prints ``inspect_artifact``'s result to a rich ``console``: totals, a per-op table, the
    float nodes with their reasons and the scales of the first ``limit`` tensors."""
    from rich.markup import escape
    from rich.table import Table

    totals = info["totals"]
    counts = ", ".join(f"{n} {p}" for p, n in totals.items() if isinstance(n, int) and p != "nodes" and n)
    console.print(f"[bold]{escape(info['path'])}[/]  {info['kind']}, {totals['nodes']} nodes: {counts or 'none'}")
    precisions = [p for p in _PRECISIONS if any(p in c for c in totals["by_op"].values())]
    table = Table(title="nodes per op and precision")
    table.add_column("op")
    for precision in precisions:
        table.add_column(precision, justify="right")
    for op, by_precision in sorted(totals["by_op"].items(), key=lambda item: -sum(item[1].values())):
        table.add_row(op, *(str(by_precision.get(p, "")) for p in precisions))
    console.print(table)
    floats = [n for n in info["nodes"] if n["precision"] in ("float", "weight-only")]
    if floats:
        weight_only = sum(n["precision"] == "weight-only" for n in floats)
        note = f", {weight_only} of them weight-only" if weight_only else ""
        console.print(f"[bold]float nodes[/] ({len(floats)}{note}):")
        for node in floats[:limit]:
            console.print(f"  {escape(node['name'])} ({node['op']}): {escape(node['why'])}", highlight=False)
        if len(floats) > limit:
            console.print(f"  ... and {len(floats) - limit} more (--json lists every node)")
    else:
        console.print("no float nodes")
    if info["tensors"]:
        table = Table(title=f"quantized tensors (first {min(limit, len(info['tensors']))} of {len(info['tensors'])})")
        for column in ("tensor", "dtype", "scale", "zero point", "axis"):
            table.add_column(column, overflow="fold")
        for name, tensor in list(info["tensors"].items())[:limit]:
            axis = "" if tensor["axis"] is None else str(tensor["axis"])
            scale = "run time" if tensor.get("dynamic") else _short(tensor["scale"])
            table.add_row(escape(name), tensor["dtype"], scale, _short(tensor["zero_point"]), axis)
        console.print(table)


_PRECISIONS = ("int8", "int16", "int4", "fp8", "weight-only", "float", "conversion", "shape")


def _totals(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    counts = collections.Counter(n["precision"] for n in nodes)
    by_op: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for node in nodes:
        by_op[node["op"]][node["precision"]] += 1
    totals: dict[str, Any] = {"nodes": len(nodes)}
    totals.update({p: counts[p] for p in _PRECISIONS if p in ("int8", "float", "conversion") or counts[p]})
    totals.update({p: n for p, n in counts.items() if p not in totals})
    totals["by_op"] = {op: dict(c) for op, c in sorted(by_op.items())}
    return totals


def _short(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        while any(isinstance(v, list) for v in value):  # blocked scales: one row per block
            value = [v for row in value for v in (row if isinstance(row, list) else [row])]
        if len(set(value)) == 1:
            return f"{_short(value[0])} (x{len(value)})"
        return f"{len(value)} values, {_short(min(value))}..{_short(max(value))}"
    return f"{value:.6g}" if isinstance(value, float) else str(value)
