"""What keeping nodes float costs on ONNX Runtime's CPU provider: a latency model of the plan.

Mixed precision chooses which nodes to keep float. A node's price is not its count: on Silero VAD
the STFT Conv does 60 times the multiply-accumulates of the output Conv. The model prices each
node's float and int8 time from its work, at rates measured once with ONNX Runtime's profiler (one
thread, per-node kernel times, fp32 model against the all-int8 QDQ model) on the zoo's MobileNetV2
on this project's 2-core x86 host:

============  ================  ===============  =====================================
class         fp32 GMAC/s       int8 GMAC/s      ops
============  ================  ===============  =====================================
``gemm``      94                282              Conv (group 1), MatMul/Gemm over rows
``depthwise`` 24                36               grouped Conv (memory-bound: 1.5x, not 3x)
``gemv``      10.5              35.6             MatMul/Gemm with at most ``GEMV_ROWS`` rows
============  ================  ===============  =====================================

and one quantize or dequantize costs ``CONVERSION_NS`` per element (the same profile: the input's
QuantizeLinear, the logits' DequantizeLinear). The cost of keeping a set ``S`` of nodes float is

    cost(S) = sum over n in S of (float_ms[n] - int8_ms[n])
              + conversion * (elements of the tensors S makes boundaries - of those it removes)

where a quantized tensor is a boundary when it joins a float node (in ``S``, or float anyway, or a
graph input or output) to an int8 one: there a Q or DQ runs. Floating a whole region is thus
cheaper than floating the same nodes scattered.

The model is computed, not timed during the compile: timings taken then move with the machine's
load, and a search built on them chose differently from one compile to the next (PP-OCRv5 det on
``ort``: two float sets, mask IoU 0.938 and 0.949), where the same inputs must give the same
artifact. Absolute times are this host's; the search only compares them with each other and with
the time the whole plan saves.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Iterable, Mapping

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from qcc.data import Feed
from qcc.errors import UnsupportedModelError
from qcc.runtime import session

logger = logging.getLogger(__name__)

# (fp32, int8) multiply-accumulates per millisecond, by class (module docstring).
RATES = {"gemm": (94e6, 282e6), "depthwise": (24e6, 36e6), "gemv": (10.5e6, 35.6e6)}
CONVERSION_NS = 0.1  # one element quantized or dequantized (0.08-0.16 ns measured)
GEMV_ROWS = 4  # a MatMul/Gemm with at most this many output rows is bound by its weights
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})


@dataclasses.dataclass
class Tensor:
    """A quantized tensor as the latency model sees it.

    Attributes:
        nodes: the quantized nodes that write or read it.
        joins_float: a float node (or the graph's edge) writes or reads it too.
        elements: its size on the sample the model was priced on.
    """

    nodes: frozenset[str]
    joins_float: bool
    elements: int = 0


@dataclasses.dataclass
class LatencyModel:
    """Per-node milliseconds of the float and of the all-int8 plan, and their totals.

    Attributes:
        float_ms: compute node name -> its time in float.
        int8_ms: compute node name -> its time in int8.
        fp32_total_ms: the float model's compute.
        int8_total_ms: the all-int8 plan's compute and conversions.
        ms_per_element: one element quantized or dequantized.
        tensors: the quantized tensors, by name.
        runtime: what the prices stand for.
    """

    float_ms: dict[str, float]
    int8_ms: dict[str, float]
    fp32_total_ms: float
    int8_total_ms: float
    ms_per_element: float
    tensors: dict[str, Tensor]
    runtime: str = "onnxruntime CPUExecutionProvider, 1 thread: multiply-accumulates at measured rates"

    def affordable(self, nodes: Iterable[str], budget: float) -> bool:
        """With ``nodes`` float, the plan takes at most ``budget`` times the float model's time."""
        return self.int8_total_ms + self.cost(nodes) <= budget * self.fp32_total_ms

    def cost(self, nodes: Iterable[str]) -> float:
        """Milliseconds that keeping ``nodes`` float adds to the all-int8 plan (module docstring)."""
        floating = set(nodes)
        compute = sum(self.float_ms.get(n, 0.0) - self.int8_ms.get(n, 0.0) for n in floating)
        return compute + self.ms_per_element * (self.converted(floating) - self.converted_all_int8)

    @functools.cached_property
    def converted_all_int8(self) -> int:
        """Elements converted between float and int8 in the all-int8 plan."""
        return self.converted(set())

    def converted(self, floating: set[str]) -> int:
        """Elements converted between float and int8 when ``floating`` nodes are float."""
        return sum(
            t.elements for t in self.tensors.values() if (t.joins_float or t.nodes & floating) and t.nodes - floating
        )

    def summary(self, nodes: Iterable[str] = ()) -> dict[str, object]:
        """The report's view: totals, the conversion rate and, for ``nodes``, each one's float and
        int8 milliseconds."""
        return {
            "runtime": self.runtime,
            "fp32_ms": round(self.fp32_total_ms, 4),
            "int8_ms": round(self.int8_total_ms, 4),
            "ns_per_converted_element": round(self.ms_per_element * 1e6, 4),
            "nodes": {
                n: {"float_ms": round(self.float_ms.get(n, 0.0), 4), "int8_ms": round(self.int8_ms.get(n, 0.0), 4)}
                for n in sorted(nodes)
            },
        }


def estimate(model: ir.Model, feed: Feed, tensors: Mapping[str, Tensor]) -> LatencyModel:
    """Prices every compute node of ``model`` float and int8 at the shapes ``feed`` gives.

    Args:
        model: the model (its node names are the annotated graph's); not modified.
        feed: one input sample, which fixes the shapes.
        tensors: the quantized tensors; their ``elements`` are filled in here.

    Returns:
        The latency model; nodes whose shapes cannot be inferred are priced at zero.
    """
    shapes = _static_shapes(model, feed)
    float_ms: dict[str, float] = {}
    int8_ms: dict[str, float] = {}
    for node in model.graph:
        if node.op_type not in COMPUTE_OPS or node.domain not in ("", "ai.onnx"):
            continue
        work = _macs(node, shapes)
        if work is None:
            continue
        macs, kind = work
        fp32_rate, int8_rate = RATES[kind]
        float_ms[node.name], int8_ms[node.name] = macs / fp32_rate, macs / int8_rate
    sized = {name: dataclasses.replace(t, elements=_size(shapes.get(name))) for name, t in tensors.items()}
    per_element = CONVERSION_NS * 1e-6
    base = LatencyModel(float_ms, int8_ms, sum(float_ms.values()), 0.0, per_element, sized)
    base.int8_total_ms = sum(int8_ms.values()) + per_element * base.converted_all_int8
    return base


def _macs(node: ir.Node, shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, str] | None:
    """Multiply-accumulates of one compute node and its rate class, or None without shapes."""
    x = shapes.get(node.inputs[0].name) if node.inputs and node.inputs[0] is not None else None
    w = shapes.get(node.inputs[1].name) if len(node.inputs) > 1 and node.inputs[1] is not None else None
    out = shapes.get(node.outputs[0].name)
    if x is None or w is None or out is None or not x or not w:
        return None
    group = node.attributes["group"].as_int() if "group" in node.attributes else 1
    if node.op_type == "Conv":
        return _size(out) * int(np.prod(w[1:])), "depthwise" if group > 1 else "gemm"
    if node.op_type == "ConvTranspose":
        return _size(x) * int(np.prod(w[1:])), "depthwise" if group > 1 else "gemm"
    trans_a = node.op_type == "Gemm" and "transA" in node.attributes and node.attributes["transA"].as_int()
    depth = x[-2] if trans_a and len(x) > 1 else x[-1]
    rows = _size(out) // max(out[-1], 1) if out else 1
    return _size(out) * depth, "gemv" if rows <= GEMV_ROWS else "gemm"


def _size(shape: tuple[int, ...] | None) -> int:
    return int(np.prod(shape)) if shape is not None else 0


def _static_shapes(model: ir.Model, feed: Feed) -> dict[str, tuple[int, ...]]:
    """The shapes of the compute nodes' inputs and outputs and of the other float activations, from
    one run of the float model on ``feed`` (ONNX shape inference stops at data-dependent shapes:
    Silero's padding). Weights are read from the graph; an empty result when the model will not run."""
    shapes = {name: tuple(v.const_value.shape) for name, v in model.graph.initializers.items() if v.const_value}
    wanted = [
        v.name
        for node in model.graph
        for v in [*node.inputs, *node.outputs]
        if v is not None and v.name and v.name not in shapes and v.dtype == ir.DataType.FLOAT
    ]
    graph_outputs = {v.name for v in model.graph.outputs}
    extra = list(dict.fromkeys(n for n in wanted if n not in graph_outputs))
    try:
        runner = session(model, level="disable", what="the float model", extra_outputs=extra)
        names = [o.name for o in runner.get_outputs()]
        inputs = {i.name for i in runner.get_inputs()}
        arrays = runner.run(names, {k: v for k, v in feed.items() if k in inputs})
    except (UnsupportedModelError, ort.capi.onnxruntime_pybind11_state.Fail) as exc:
        logger.debug("latency model without shapes: %s", exc)
        return {}
    shapes.update((name, tuple(np.shape(a))) for name, a in zip(names, arrays, strict=True))
    shapes.update((name, tuple(np.shape(a))) for name, a in feed.items())
    return shapes
