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

One plan rule is code (``TfliteSpec.float_reason``): a square ``Mul(x, x)`` feeding a sum or
mean stays float.

``emit()`` works on a clone: static shapes from the calibration data, absorbed activations
removed, ``layout-nhwc``, lowering (``_tflite_lower``/``_tflite_ops``), version stamping, the
validator (``_tflite_validate``) and the writer (``_tflite_writer``). ``verify()`` runs the
artifact in LiteRT under the default resolver (XNNPACK) and under
``BUILTIN_WITHOUT_DEFAULT_DELEGATES``, and compares both with the ORT QDQ simulation (agreement
within one quantization step) and with the float model.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common

from qcc.annotations import Decision, get_quant, quantized_values, set_quant
from qcc.backends._qdq import materialize_qdq
from qcc.backends._tflite_litert import compare_with_simulation
from qcc.backends._tflite_lower import Lowering, absorb_activations
from qcc.backends._tflite_ops import FAMILIES
from qcc.backends._tflite_sim import integer_exact
from qcc.backends._tflite_validate import validate
from qcc.backends._tflite_versions import stamp_versions
from qcc.backends._tflite_writer import serialize
from qcc.backends.base import Artifact, Backend, TargetSpec
from qcc.context import PassContext
from qcc.data import Feed
from qcc.errors import BackendError
from qcc.options import IoType
from qcc.passes.canonicalize import fold_constants
from qcc.passes.layout_nhwc import LayoutNhwcPass
from qcc.runtime import MAX_ORT_IR_VERSION

logger = logging.getLogger(__name__)

# Rounds of constant folding + shape inference in emit (MiniLM's shape subgraphs need three).
_MAX_FOLD_ROUNDS = 8

# Ops that sum or average their input: a square feeding one is a variance or power term.
_REDUCTIONS = frozenset({"ReduceSum", "ReduceMean", "GlobalAveragePool"})


class TfliteSpec(TargetSpec):
    """The ``tflite`` spec plus plan rules for what int8 TFLite kernels lose (see ``float_reason``)."""

    def float_reason(self, node: ir.Node) -> str | None:
        """Keeps float a square ``Mul(x, x)`` whose output feeds a sum or mean (a variance).

        An int8 square carries ``[0, max(x)^2]`` in 256 steps, so most squares round to a few
        values, and a variance ``E[x^2] - E[x]^2`` cancels what is left. On Magika's two
        decomposed LayerNorms, keeping these two squares float raises top-1 agreement with fp32
        on the eval feeds from 0.72 to 0.91.

        Returns:
            The reason, or None when the node is not such a square.
        """
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

    Args:
        model: the IR after the pipeline; not modified.
        ctx: the compile context (``io``, ``nhwc_io``).
        feed: one input sample, whose shapes fix dynamic input dimensions.

    Raises:
        BackendError: a node cannot be lowered or the result breaks a TFLite rule.
    """
    clone = model.clone()
    _static_shapes(clone, feed)
    # With static shapes, shape subgraphs (Shape -> Gather -> Concat -> Reshape) fold to constants.
    # Only the folding step of canonicalize: its Identity removal would drop requantize nodes.
    # A folded tensor keeps its name, and keeps its parameters here.
    params = {v.name: get_quant(v) for v in quantized_values(clone.graph)}
    # A fold can make further shapes static (a Range over a folded length gives position ids of
    # a known size), so folding and shape inference alternate until nothing folds.
    for _round in range(_MAX_FOLD_ROUNDS):
        if not fold_constants(clone):
            break
        _infer_shapes(clone)
    for name, value in clone.graph.initializers.items():
        if name in params and get_quant(value) is None:
            set_quant(value, params[name])
    absorb_activations(clone.graph)
    LayoutNhwcPass(ctx)(clone)
    flat = Lowering(io_int8=ctx.options.io == IoType.INT8).lower(clone.graph)
    stamp_versions(flat)
    validate(flat)
    return serialize(flat)


def _static_shapes(model: ir.Model, feed: Feed | None) -> None:
    """Gives dynamic input dimensions the sample's sizes and infers every tensor's shape."""
    for value in model.graph.inputs:
        if value.shape is not None and all(isinstance(d, int) for d in value.shape):
            continue
        if feed is None or value.name not in feed:
            continue
        value.shape = ir.Shape(np.shape(feed[value.name]))
    _infer_shapes(model)


def _infer_shapes(model: ir.Model) -> None:
    """Runs ONNX shape inference, first dropping the node outputs' symbolic shapes.

    ONNX shape inference keeps a symbolic dimension it finds on a value rather than replace it
    with the static one it infers, so stale symbolic shapes are cleared first; static ones stay.
    """
    for node in model.graph:
        for out in node.outputs:
            if out.shape is not None and not all(isinstance(d, int) for d in out.shape):
                out.shape = None
    try:
        common.ShapeInferencePass()(model)
    except Exception as exc:  # noqa: BLE001 - ONNX shape inference raises several unrelated types
        # The lowering names any tensor that is left without a static shape.
        logger.debug("shape inference failed (%s); keeping the frontend's shapes", exc)


__all__ = ["TFLITE_SPEC", "TfliteBackend", "write_tflite"]
