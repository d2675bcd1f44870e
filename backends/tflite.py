"""TFLite / LiteRT target (``tflite``): a fully-int8 ``.tflite`` flatbuffer written from the IR.

Rules (measured facts in ``shared/targets/TFLITE.md``): activations int8 asymmetric per tensor;
weights int8 symmetric per output channel (``quantized_dimension`` 0 for CONV_2D and
FULLY_CONNECTED, 3 for DEPTHWISE_CONV_2D); int32 biases at exactly ``s_x * s_w``; pooling,
reshapes, transposes, pads, slices, resizes and gathers share their input's parameters; Concat
inputs share the output's; Softmax/Logistic outputs are fixed at (1/256, -128) and Tanh at
(1/128, 0).
The spec below states these as data; the shared passes (plan, activation-qparams,
target-constraints) apply them to the annotations, so the ORT QDQ simulation of the annotated
model uses exactly the parameters the flatbuffer carries.

Two plan rules are code (``TfliteSpec.float_reason``): a MatMul of two activations (attention)
and a square ``Mul(x, x)`` feeding a sum or mean stay float.

``emit()`` works on clones: the calibration sample's sizes for dynamic input dimensions (and
other sizes, to find what stays dynamic: ``_tflite_shapes``), shape subgraphs
folded where they do not depend on a dynamic size, absorbed activations removed,
``layout-nhwc``, lowering (``_tflite_lower``/``_tflite_ops``), version stamping, the validator
(``_tflite_validate``) and the writer (``_tflite_writer``). ``verify()`` runs the
artifact in LiteRT under the default resolver (XNNPACK) and under
``BUILTIN_WITHOUT_DEFAULT_DELEGATES``, and compares both with the ORT QDQ simulation (agreement
within one quantization step) and with the float model.
"""

from __future__ import annotations

import logging
from typing import Any

import onnx_ir as ir

from qcc.annotations import Decision, get_decision, get_quant
from qcc.backends._tflite_litert import compare_with_simulation
from qcc.backends._tflite_lower import Lowering, absorb_activations
from qcc.backends._tflite_merge import merge
from qcc.backends._tflite_ops import FAMILIES
from qcc.backends._tflite_shapes import (
    REQUIRED_VARIANTS,
    STATIC_NOTE,
    StaticReason,
    explicit_padding,
    input_sizes,
    instances,
    mark_signatures,
)
from qcc.backends._tflite_sim import integer_exact
from qcc.backends._tflite_validate import validate
from qcc.backends._tflite_versions import stamp_versions
from qcc.backends._tflite_writer import FlatModel, serialize
from qcc.backends.base import Artifact, Backend
from qcc.context import PassContext
from qcc.data import Feed
from qcc.errors import BackendError
from qcc.options import IoType
from qcc.passes.layout_nhwc import LayoutNhwcPass
from qcc.qdq import materialize_qdq
from qcc.runtime import MAX_ORT_IR_VERSION
from qcc.target import TargetSpec

logger = logging.getLogger(__name__)

# XNNPACK delegates an int8 BATCH_MATMUL only if its rhs has zero point 0 (TFLITE.md §2); with an
# asymmetric rhs the op runs on LiteRT's reference kernel, and MiniLM's twelve attention products
# made the int8 artifact slower than fp32. Float, XNNPACK runs them.
_ACTIVATION_MATMUL = (
    "MatMul between two activations (attention): XNNPACK takes an int8 BATCH_MATMUL only with a zero-point-0 "
    "rhs, else LiteRT's reference kernel runs it, slower than float"
)
# Ops that sum or average their input: a square feeding one is a variance or power term.
_REDUCTIONS = frozenset({"ReduceSum", "ReduceMean", "GlobalAveragePool"})


class TfliteSpec(TargetSpec):
    """The ``tflite`` spec plus plan rules for what int8 TFLite kernels lose (see ``float_reason``)."""

    def float_reason(self, node: ir.Node) -> str | None:
        """Keeps float a MatMul of two activations (``_ACTIVATION_MATMUL``), and a square ``Mul(x, x)``
        whose output feeds a sum or mean (a variance).

        An int8 square carries ``[0, max(x)^2]`` in 256 steps, so most squares round to a few
        values, and a variance ``E[x^2] - E[x]^2`` cancels what is left. On Magika's two
        decomposed LayerNorms, keeping these two squares float raises top-1 agreement with fp32
        on the eval feeds from 0.72 to 0.91.

        Returns:
            The reason, or None when the node is neither.
        """
        if node.op_type == "MatMul" and all(v is not None and v.const_value is None for v in node.inputs[:2]):
            return _ACTIVATION_MATMUL
        if node.op_type != "Mul" or len(node.inputs) != 2 or node.inputs[0] is not node.inputs[1]:
            return None
        reductions = sorted({use.node.op_type for use in node.outputs[0].uses()} & _REDUCTIONS)
        if not reductions:
            return None
        return f"square Mul(x, x) feeding {', '.join(reductions)} (a variance): int8 squares lose the small values"

    def decide(self, node: ir.Node) -> tuple[Decision, str] | None:
        # The plan asks float_reason only about compute ops; pending ops (Mul) get it here.
        reason = self.float_reason(node)
        return (Decision.FLOAT, reason) if reason is not None else None

    def float_after_calibration(
        self, graph: ir.Graph, rows: dict[str, int], ranges: dict[str, tuple[float, float]]
    ) -> dict[str, str]:
        """Keeps float a Concat whose inputs' calibrated ranges differ by more than ``CONCAT_RANGE_RATIO``.

        TFLite's int8 CONCATENATION takes one scale for every input (TFLITE.md §7), so the
        narrowest input keeps only ``256 / ratio`` levels: YOLOv8's head concatenates box
        coordinates in pixels (0-640) with class probabilities (0-1), which int8 leaves at 0
        (eval box F1 0.29 against 0.73 with the Concat float). A float Concat dequantizes each
        input at its own scale.
        """
        found = {}
        values = {v.name: v for v in (*graph.inputs, *(out for node in graph for out in node.outputs))}
        for node in graph:
            decision = get_decision(node)
            if node.op_type != "Concat" or decision is None or decision.decision != Decision.INT8:
                continue
            widths = [_width(value.name, ranges, values) for value in node.inputs if value is not None]
            widths = [w for w in widths if w is not None]
            if len(widths) < 2 or min(widths) <= 0 or max(widths) / min(widths) <= CONCAT_RANGE_RATIO:
                continue
            ratio = max(widths) / min(widths)
            found[node.name] = (
                f"Concat of inputs whose ranges differ {ratio:.0f}x: TFLite's int8 CONCATENATION takes one scale "
                f"for all of them, which would leave the narrowest {256 / ratio:.1f} levels"
            )
        return found


# Above this ratio of widest to narrowest input range a Concat stays float: the narrowest input
# would keep fewer than 16 of the 256 int8 levels.
CONCAT_RANGE_RATIO = 16.0


def _width(name: str, ranges: dict[str, tuple[float, float]], values: dict[str, ir.Value]) -> float | None:
    """The calibrated range width of a value, through the values whose parameters it shares."""
    seen = set()
    while name not in ranges and name in values and name not in seen:
        seen.add(name)
        quant = get_quant(values[name])
        if quant is None or quant.shared_with is None:
            return None
        name = quant.shared_with
    if name not in ranges:
        return None
    low, high = ranges[name]
    return float(high) - float(low)


# Int8 ops and shared-scale ops that the op-family modules add (``_tflite_ops.FAMILIES``).
_FAMILY_INT8_OPS = frozenset().union(*(family.INT8_OPS for family in FAMILIES))
_FAMILY_SHARED_SCALE_OPS = frozenset().union(*(family.SHARED_SCALE_OPS for family in FAMILIES))

TFLITE_SPEC = TfliteSpec(
    name="tflite",
    description="TFLite / LiteRT: fully-int8 .tflite flatbuffer (XNNPACK or builtin kernels)",
    compute_ops=frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"}),
    int8_ops=frozenset(
        {
            "Add",
            "Sub",
            "Mul",
            "Concat",
            "GlobalAveragePool",
            "ReduceMean",
            "Sigmoid",
            "Tanh",
            "Softmax",
            "HardSwish",
            "LeakyRelu",
            "PRelu",
            "Gelu",
        }
    )
    | _FAMILY_INT8_OPS,
    shared_scale_ops=frozenset(
        {
            "MaxPool",
            "AveragePool",
            "GlobalMaxPool",
            "ReduceMax",
            "Reshape",
            "Flatten",
            "Squeeze",
            "Unsqueeze",
            "Transpose",
            "Pad",
            "Slice",
            "Split",
            "Resize",
            "Gather",
            # Not Expand, though BROADCAST_TO could copy int8: it would carry int8 into Magika's
            # LayerNorm variance (E[x^2] - E[x]^2), which cancels catastrophically (top-1 0.72 -> 0.53).
        }
    )
    | _FAMILY_SHARED_SCALE_OPS,
    fused_activations=frozenset({"Relu", "Clip"}),
    keep_fused_activation_nodes=False,
    symmetric_activations=False,
    bias_int32=True,
    artifact_suffix=".tflite",
    fixed_output_params={"Softmax": (1.0 / 256, -128), "Sigmoid": (1.0 / 256, -128), "Tanh": (1.0 / 128, 0)},
    shared_group_ops=frozenset({"Concat"}),
    # Every TFLite int8 op requantizes its output: meanmax raised MobileNetV2's all-int8 cosine 0.963 -> 0.977.
    meanmax_candidate=True,
)


class TfliteBackend(Backend):
    """Writes and verifies fully-int8 TFLite flatbuffers."""

    spec = TFLITE_SPEC

    def emit(self, model: ir.Model, ctx: PassContext) -> Artifact:
        if ctx.activation_dtype != ir.DataType.INT8:
            raise BackendError(
                f"--target tflite runs int8 activations, not {ctx.activation_dtype.name.lower()}.",
                "drop --activation-type or pass --activation-type int8.",
            )
        simulation = integer_exact(materialize_qdq(model, keep_fused_activations=False))
        simulation.ir_version = min(simulation.ir_version, MAX_ORT_IR_VERSION)
        simulation.producer_name = "qcc"
        feed = ctx.calibration.head(1)[0] if ctx.calibration is not None else None
        data = write_tflite(model, ctx, feed)
        return Artifact(data=data, suffix=self.spec.artifact_suffix, simulation=ir.serde.serialize_model(simulation))

    def verify(
        self,
        artifact: Artifact,
        reference: ir.Model,
        samples: list[Feed],
        planned_int8: frozenset[str] = frozenset(),
    ) -> dict[str, Any]:
        return compare_with_simulation(artifact.data, artifact.simulation, reference, samples)


def write_tflite(model: ir.Model, ctx: PassContext, feed: Feed | None = None) -> bytes:
    """Lowers an annotated (or, without annotations, float) model to ``.tflite`` bytes.

    Dynamic input dimensions stay dynamic (``-1`` in ``shape_signature``, shapes computed at run
    time) when the lowering does not depend on their size, which ``_tflite_shapes`` checks by
    lowering the model at several sizes; otherwise, or for inputs pinned by ``--input-shape``, the
    artifact has the sample's static shapes and its description says why.

    Args:
        model: the IR after the pipeline; not modified.
        ctx: the compile context (``io``, ``nhwc_io``, ``input_shapes``).
        feed: one input sample, whose shapes give the static sizes of dynamic input dimensions.

    Raises:
        BackendError: a node cannot be lowered or the result breaks a TFLite rule.
    """
    sizes, dynamic = input_sizes(model, feed, ctx.options.input_shapes)
    io_int8 = ctx.options.io == IoType.INT8
    description = "qcc"
    result: FlatModel | StaticReason | None = None
    if any(any(flags) for flags in dynamic.values()):
        result = _lower_dynamic(model, ctx, io_int8, sizes, dynamic)
    if isinstance(result, FlatModel):
        flat = result
    else:
        if result is not None:
            logger.warning("the .tflite keeps the first sample's static input shapes: %s", result.message)
            description = f"qcc; {STATIC_NOTE}{result.message}"
        static = {name: (None,) * len(shape) for name, shape in sizes.items()}
        (clone,) = instances(model, sizes, static)
        flat = _lower(clone.model, ctx, io_int8)
    _refuse_empty_constant_outputs(flat)
    stamp_versions(flat)
    validate(flat)
    return serialize(flat, description)


def _refuse_empty_constant_outputs(flat: FlatModel) -> None:
    """Refuses a graph output that is a zero-size constant (``Shape`` with ``start > end``, ...).

    LiteRT loads such a model but cannot read the output: its buffer is empty, the tensor has no
    data pointer and ``get_tensor`` raises "Invalid tensor size" (measured, LiteRT 2.3.0).

    Raises:
        BackendError: naming the output.
    """
    for index, name in zip(flat.outputs, flat.output_names, strict=True):
        tensor = flat.tensors[index]
        if tensor.data is not None and tensor.data.size == 0:
            raise BackendError(
                f"graph output {name!r} is empty whatever the input (a constant of shape {tensor.shape}): LiteRT "
                "cannot return a zero-size constant output (its interpreter raises 'Invalid tensor size').",
                "drop the output from the model; it carries no values.",
            )


def _lower_dynamic(model: ir.Model, ctx: PassContext, io_int8: bool, sizes, dynamic) -> FlatModel | StaticReason:
    """The model lowered at the ``VARIANTS`` sizes and merged (``_tflite_shapes``), or why it stays static.

    A node the lowering cannot write with run-time shapes (one that needs a constant the static
    artifact folds) is a reason to stay static, not an error: the static lowering may take it.
    """
    clones = instances(model, sizes, dynamic)
    for clone in clones:
        _prepare(clone.model, ctx)
    mark_signatures(clones)
    for clone in clones:
        explicit_padding(clone.model)
    flats, checked = [], []
    for position, clone in enumerate(clones):
        try:
            flats.append(Lowering(io_int8=io_int8).lower(clone.model.graph))
        except BackendError as exc:
            if position < REQUIRED_VARIANTS:
                return StaticReason(f"with run-time shapes, {exc.problem}")
            # The model does not take these sizes (a stride chain that needs divisible sizes, a
            # height that must equal the width): the artifact is checked at the others.
            logger.debug("not checking the dynamic artifact at %s: %s", clone.inputs, exc.problem)
            continue
        checked.append(clone)
    return merge(flats, checked, {node.name: node for node in clones[0].model.graph})


def _lower(clone: ir.Model, ctx: PassContext, io_int8: bool) -> FlatModel:
    """Prepares and lowers one static instance."""
    _prepare(clone, ctx)
    return Lowering(io_int8=io_int8).lower(clone.graph)


def _prepare(clone: ir.Model, ctx: PassContext) -> None:
    """Absorbs fused activations and moves image ops to NHWC."""
    absorb_activations(clone.graph)
    LayoutNhwcPass(ctx)(clone)


__all__ = ["TFLITE_SPEC", "TfliteBackend", "write_tflite"]
