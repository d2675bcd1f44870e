"""Per-layer analysis: how far each quantized tensor of a compiled model is from the float model.

For every activation the compile quantized, its integers in qcc's ONNX form of the artifact (the
``ort``/``trt`` QDQ model, or the ``tflite`` simulation), dequantized with the tensor's scale and
zero point, are compared with the same tensor of the float model (after qcc's float rewrites, so
names match) on calibration samples::

    SQNR(t) = 10 log10(sum f^2 / sum (f - q)^2)        in dB, over all samples

Errors propagate, so a tensor's SQNR includes everything upstream. The *drop* from the lowest
SQNR among the quantized inputs of the node that writes ``t`` to ``t`` itself is that node's own
contribution (its quantization and its amplification of incoming error): rank by it to find where
quantization loses, not only where the loss shows. ``--exclude`` the worst offenders, or try
another ``--method``, and analyze again.

A Relu or Clip fused into its producer (a Conv's int8 output already clipped) writes the quantized
tensor, but the loss is the group's: the drop is measured from the group's quantized inputs and
given to its first node, the one ``--exclude`` takes. Tensors whose node the user excluded are
marked and not ranked (:func:`worst_first`): keeping them float again would not help.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
from typing import Any

import numpy as np
import onnx

from qcc import frontend
from qcc.annotations import float_twin
from qcc.backends import get_backend
from qcc.context import PassContext
from qcc.data import CalibrationSource, open_calibration, reiterable
from qcc.driver import CompileResult, compile_model
from qcc.errors import QccError
from qcc.options import CompileOptions
from qcc.pipeline import run_pipeline
from qcc.runtime import session

logger = logging.getLogger(__name__)

DEFAULT_SAMPLES = 4
HISTOGRAM_BINS = 80
FP8_MAX = 448.0  # the largest E4M3 value


def analyze_model(
    model: object,
    calibration: CalibrationSource,
    options: CompileOptions,
    samples: int = DEFAULT_SAMPLES,
    result: CompileResult | None = None,
) -> dict[str, Any]:
    """Compiles the model (unless ``result`` is its compile) and measures every quantized
    activation against the float model.

    Returns:
        ``{"target", "samples", "tensors": [{name, producer, op_type, fused, decision, excluded,
        sqnr_db, drop_db, clip_range, histogram: {edges, counts}}, ...]}`` in graph (topological)
        order, plus ``"output_sqnr_db"`` per graph output. ``producer`` is the node ``--exclude``
        takes: for a tensor a fused Relu/Clip writes, the node it is fused into, with the fused
        nodes in ``fused``; ``decision`` is that node's (int8, float, ...); ``excluded`` is True
        when the user kept it float. ``drop_db`` is None where no quantized input precedes the
        tensor. The histogram is of the float values, over the clip range widened by a quarter
        on each side, outliers in the end bins.

    Raises:
        QccError: the model, the data or the options (as for a compile).
    """
    if calibration is None:
        raise QccError("analyze needs calibration data to run both models on.", "pass --calib data.npz.")
    backend = get_backend(options.target)
    loaded = frontend.load(model, min_opset=backend.spec.min_opset(options))
    specs = loaded.input_specs()
    if not reiterable(calibration):  # read once, by the compile, which keeps the first samples for the analysis
        calibration = open_calibration(calibration, specs, options.max_calibration_samples)
    if result is None:
        result = compile_model(model, calibration, dataclasses.replace(options, verify=False, latency_budget=None))
    if result.artifact.data is None:
        raise QccError("analyze runs the artifact in memory, and this one is over 2 GB.", "analyze a smaller model.")
    quantized = result.artifact.simulation or result.artifact.proto
    if result.annotated is not None:  # the float function the artifact stands for (SmoothQuant's included)
        loaded.model = float_twin(result.annotated)
    else:
        run_pipeline(loaded.model, PassContext(options, backend.spec), float_only=True)
    order = _graph_order(loaded.model.graph)
    names = [t for t, info in result.report["tensors"].items() if info["role"] == "activation"]
    readers = _quantizer_outputs(quantized, set(names))
    names = sorted((n for n in names if n in readers), key=lambda n: order.get(n, len(order)))
    if not names:
        raise QccError(
            "the compiled model quantizes no activation; there is nothing to analyze.",
            "compile with calibration data and a target that quantizes activations.",
        )
    feeds = open_calibration(calibration, specs, samples).head(samples)
    floats = session(loaded.model, level="basic", what="the float model", extra_outputs=tuple(names))
    types = {readers[n]: getattr(onnx.TensorProto, result.report["tensors"][n]["dtype"].upper()) for n in names}
    simulated = session(quantized, level="disable", what="the quantized model", extra_outputs=types)
    signal, noise = np.zeros(len(names)), np.zeros(len(names))
    clips = {name: _clip_range(result.report["tensors"][name]) for name in names}
    edges = {}
    for name, (lo, hi) in clips.items():
        edges[name] = np.linspace(lo - (hi - lo) / 4, hi + (hi - lo) / 4, HISTOGRAM_BINS + 1)
    counts = {name: np.zeros(HISTOGRAM_BINS, np.int64) for name in names}
    float_names = [o.name for o in floats.get_outputs()]
    sim_names = [o.name for o in simulated.get_outputs()]
    for feed in feeds:
        f_out = dict(zip(float_names, floats.run(None, feed), strict=True))
        q_out = dict(zip(sim_names, simulated.run(None, feed), strict=True))
        for i, name in enumerate(names):
            f = np.asarray(f_out[name], np.float64)
            q = _dequantize(q_out[readers[name]], result.report["tensors"][name]).reshape(f.shape)
            bins = np.clip(np.searchsorted(edges[name], f.ravel(), side="right") - 1, 0, HISTOGRAM_BINS - 1)
            counts[name] += np.bincount(bins, minlength=HISTOGRAM_BINS)
            signal[i] += float(np.sum(f * f))
            noise[i] += float(np.sum((f - q) ** 2))
    sqnr = {name: _db(s, n) for name, s, n in zip(names, signal, noise, strict=True)}
    producers = {out.name: node for node in loaded.model.graph for out in node.outputs}
    decisions = {n["name"]: n["decision"] for n in result.report["nodes"]}
    excluded = set(options.exclude)
    tensors = []
    for name in names:
        group = _fused_group(producers.get(name), producers, decisions)
        inside = {out.name for node in group for out in node.outputs}
        upstream = [
            sqnr[v.name]
            for node in group
            for v in node.inputs
            if v is not None and v.name in sqnr and v.name not in inside
        ]
        head = group[0] if group else None
        decision = decisions.get(head.name) if head is not None else None
        tensors.append(
            {
                "name": name,
                "producer": head.name if head is not None else None,
                "op_type": head.op_type if head is not None else "input",
                "fused": [node.name for node in group[1:]],
                "decision": decision,
                "excluded": head is not None
                and decision == "float"
                and (head.name in excluded or head.op_type in excluded),
                "sqnr_db": round(sqnr[name], 2),
                "drop_db": round(min(upstream) - sqnr[name], 2) if upstream else None,
                "clip_range": [float(v) for v in clips[name]],
                "histogram": {"edges": edges[name].tolist(), "counts": counts[name].tolist()},
            }
        )
    outputs = {o.name: sqnr[o.name] for o in loaded.model.graph.outputs if o.name in sqnr}
    return {
        "target": options.target,
        "samples": len(feeds),
        "tensors": tensors,
        "output_sqnr_db": {k: round(v, 2) for k, v in outputs.items()},
    }


def worst_first(analysis: dict[str, Any]) -> list[dict[str, Any]]:
    """Returns the tensors of an :func:`analyze_model` result that can be ranked, largest drop
    first: those with a drop whose node the user did not exclude (an excluded node is float
    already; its tensor is quantized for its readers)."""
    ranked = [t for t in analysis["tensors"] if t["drop_db"] is not None and not t.get("excluded")]
    return sorted(ranked, key=lambda t: -t["drop_db"])


def _fused_group(node, producers: dict, decisions: dict[str, str]) -> list:
    """The nodes that write one quantized tensor in the artifact: ``node`` and, while a node is
    fused into its producer (a Relu/Clip into a Conv's quantized output), that producer, first
    node first. Empty for a graph input."""
    group = []
    while node is not None and node not in group:
        group.insert(0, node)
        if decisions.get(node.name) != "fused" or not node.inputs or node.inputs[0] is None:
            break
        node = producers.get(node.inputs[0].name)
    return group


def _graph_order(graph) -> dict[str, int]:
    """Each tensor's position in a topological order of the graph: the graph inputs, then the nodes'
    outputs, a node after all the nodes it reads (graph order among the ready ones)."""
    nodes = list(graph)
    written = {out.name: i for i, node in enumerate(nodes) for out in node.outputs}
    waiting = [
        {written[v.name] for v in node.inputs if v is not None and v.name in written and written[v.name] != i}
        for i, node in enumerate(nodes)
    ]
    readers: dict[int, list[int]] = {}
    for i, needs in enumerate(waiting):
        for j in needs:
            readers.setdefault(j, []).append(i)
    order = {v.name: k for k, v in enumerate(graph.inputs)}
    ready = [i for i, needs in enumerate(waiting) if not needs]
    heapq.heapify(ready)
    while ready:
        i = heapq.heappop(ready)
        for out in nodes[i].outputs:
            order.setdefault(out.name, len(order))
        for j in readers.get(i, []):
            waiting[j].discard(i)
            if not waiting[j]:
                heapq.heappush(ready, j)
    return order


def _dequantize(q: np.ndarray, params: dict) -> np.ndarray:
    """The real value of a per-tensor quantized activation, with the report's parameters."""
    scale = np.asarray(params["scale"], np.float64)
    zero_point = np.asarray(params["zero_point"], np.float64)
    return (np.asarray(q).astype(np.float64) - zero_point) * scale


def _clip_range(params: dict) -> tuple[float, float]:
    """The real values the int8 grid of a per-tensor activation spans."""
    scale, zero_point = float(np.ravel(params["scale"])[0]), float(np.ravel(params["zero_point"])[0])
    if not params["dtype"].startswith(("int", "uint")):
        return -FP8_MAX * scale, FP8_MAX * scale  # float8e4m3fn, symmetric
    info = np.iinfo(np.dtype(params["dtype"]))
    return (info.min - zero_point) * scale, (info.max - zero_point) * scale


def _db(signal: float, noise: float) -> float:
    if noise == 0.0:
        return float("inf")
    return float(10.0 * np.log10(max(signal, 1e-30) / noise))


def _quantizer_outputs(model: onnx.ModelProto, names: set[str]) -> dict[str, str]:
    """For each quantized tensor ``t``, the name of its quantizer's (integer) output in the QDQ model.

    The emitters name it ``t_quantized``. It is read rather than a dequantizer's output because
    the tflite simulation's integer-exact ops read the integers directly (the emitter's own
    dequantizer may be gone), and the integers are what the artifact carries.
    """
    found = {}
    for node in model.graph.node:
        base = node.output[0].removesuffix("_quantized") if node.op_type == "QuantizeLinear" else None
        if base in names:
            found[base] = node.output[0]
    return found
