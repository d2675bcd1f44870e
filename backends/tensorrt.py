"""TensorRT target (``trt``): explicit-quantization QDQ ONNX that TensorRT builds into int8 engines.

Placement follows TensorRT's rules (``shared/targets/TENSORRT.md`` §4):

* int8 symmetric everywhere (zero point 0); weights per channel on the op's output-channel axis,
  activations per tensor; biases stay float (TensorRT adds them in high precision).
* Q/DQ on the *inputs* of quantized ops only: no Q/DQ between a weighted op and the BatchNorm /
  Relu / Clip TensorRT fuses into it, no output Q on weighted ops (the next layer's input Q does
  it), except pooling, whose output is quantized.
* A residual Add fed by a weighted op is fused into that op's epilogue: only its skip input is
  quantized, so Conv+Add(+Relu) runs with an int8 output.
* Concat inputs and output share one scale; copy ops (Reshape, Transpose, MaxPool, ...) reuse
  their input's scale so Q/DQ propagates.
* GEMVs, tiny GEMMs (K or N < 16), attention MatMuls between two activations and Convs with few
  channels (< 16 and not a multiple of 8, except on the model input) stay float: TensorRT runs
  them as fast or faster in float. The report says so per node.

There is no GPU here: ``verify()`` checks the rules on the artifact (``_trt_rules``), executes the
same graph in ONNX Runtime and compares with fp32. When the ``tensorrt`` package and a GPU are
present, building an engine is attempted too.
"""

from __future__ import annotations

import struct
from typing import Any

import onnx
import onnx_ir as ir

from qcc.annotations import ALREADY_QUANTIZED_REASON, Decision, get_decision
from qcc.backends._onnx_artifact import onnx_artifact
from qcc.backends._trt_rules import check_tensorrt_rules, summarize
from qcc.backends.base import Artifact, Backend
from qcc.backends.onnxruntime import compare_outputs
from qcc.context import PassContext
from qcc.data import Feed
from qcc.errors import BackendError
from qcc.irutils import attr_int, const_array
from qcc.options import CompileOptions, Precision, WeightStorage
from qcc.qdq import materialize_qdq
from qcc.target import TargetSpec

_MIN_GEMM_DIM = 16
# Opsets the low-bit formats need: FP8 Q/DQ (19), DequantizeLinear with block_size and INT4 (21).
MIN_OPSET = {Precision.FP8: 19, Precision.INT4: 21}
_WEIGHTED = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


class TrtSpec(TargetSpec):
    """The ``trt`` spec plus TensorRT's fusion rules (see module docstring)."""

    def smoothing_mul_runs_float(self, producer: ir.Node | None, options: CompileOptions) -> bool:
        return "Mul" not in self.int8_ops  # a Mul ahead of a MatMul's input Q runs in TensorRT's float pointwise

    def float_reason(self, node: ir.Node) -> str | None:
        weight = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
        if node.op_type in ("Gemm", "MatMul"):
            if weight is None:
                return "MatMul between two activations (attention): TensorRT's fused attention runs it"
            if weight.ndim == 2:
                trans_b = node.op_type == "Gemm" and attr_int(node, "transB", 0) == 1
                k, n = (weight.shape[1], weight.shape[0]) if trans_b else weight.shape
                if k < _MIN_GEMM_DIM or n < _MIN_GEMM_DIM:
                    return f"tiny GEMM (K={k}, N={n}): faster in float on TensorRT"
            x = node.inputs[0]
            if x.shape is not None and len(x.shape) == 2 and x.shape[0] == 1:
                return "GEMV (batch 1): faster in float on TensorRT"
        if node.op_type in ("Conv", "ConvTranspose") and weight is not None:
            groups = attr_int(node, "group", 1)
            c_in = weight.shape[1] * groups if node.op_type == "Conv" else weight.shape[0]
            c_out = weight.shape[0] if node.op_type == "Conv" else weight.shape[1] * groups
            if _few(c_out) or (_few(c_in) and not node.inputs[0].is_graph_input()):
                return f"few channels ({c_in} in, {c_out} out): TensorRT has no faster int8 kernel"
        return None

    def float_after_calibration(
        self, graph: ir.Graph, rows: dict[str, int], ranges: dict[str, tuple[float, float]]
    ) -> dict[str, str]:
        """A Gemm/MatMul whose rows are symbolic in the graph but 1 in every sample is a GEMV.

        A symbolic leading dimension (``batch``) is resolved through any calibrated tensor that
        carries the same symbolic dimension, such as the model input.
        """
        symbolic_rows: dict[str, int] = {}
        for value in (*graph.inputs, *(out for node in graph for out in node.outputs)):
            shape = value.shape
            if value.name in rows and shape is not None and len(shape) and not isinstance(shape[0], int):
                key = str(shape[0])
                symbolic_rows[key] = max(symbolic_rows.get(key, 0), rows[value.name])
        found = {}
        for node in graph:
            decision = get_decision(node)
            if node.op_type not in ("Gemm", "MatMul") or decision is None or decision.decision != Decision.INT8:
                continue
            x = node.inputs[0]
            if x.shape is None or len(x.shape) != 2:
                continue
            seen = rows.get(x.name) or symbolic_rows.get(str(x.shape[0]))
            if seen == 1:
                found[node.name] = "GEMV at the calibration batch (1): faster in float on TensorRT"
        return found

    def min_opset(self, options: CompileOptions) -> int:
        return MIN_OPSET.get(options.precision, 13)

    def decide(self, node: ir.Node) -> tuple[Decision, str] | None:
        if node.op_type != "Add":
            return None
        if len(node.inputs) != 2 or any(v is None or v.const_value is not None for v in node.inputs):
            return Decision.FLOAT, "Add with a constant input: a bias or offset TensorRT fuses in float"
        for branch in node.inputs:
            producer = branch.producer()
            decision = get_decision(producer) if producer is not None else None
            if (
                decision is not None
                and decision.decision == Decision.INT8
                and producer.op_type in _WEIGHTED
                and len(branch.consumers()) == 1
                and not branch.is_graph_output()
            ):
                return (
                    Decision.FUSED,
                    f"residual Add fused into {producer.name}'s epilogue; only the skip input is quantized",
                )
        return Decision.FLOAT, "not a residual Add after a weighted op; TensorRT runs it in float"


def _few(channels: int) -> bool:
    return channels < 16 and channels % 8 != 0


TRT_SPEC = TrtSpec(
    name="trt",
    description="TensorRT: explicit-quantization QDQ ONNX (int8 symmetric) for trtexec / the ONNX parser",
    compute_ops=frozenset(_WEIGHTED),
    int8_ops=frozenset({"AveragePool", "GlobalAveragePool", "Concat"}),
    shared_scale_ops=frozenset(
        {"MaxPool", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Resize", "Split"}
    ),
    fused_activations=frozenset({"Relu", "Clip", "LeakyRelu"}),
    keep_fused_activation_nodes=True,
    symmetric_activations=True,
    bias_int32=False,
    artifact_suffix=".onnx",
    quantize_all_outputs=False,
    output_quantized_ops=frozenset({"MaxPool", "AveragePool"}),
    shared_group_ops=frozenset({"Concat"}),
    rule_ops=frozenset({"Add"}),
    precisions=frozenset({"int8", "fp8", "int4"}),
    # Neither minmax nor meanmax alone reaches NVIDIA ModelOpt's fidelity on every zoo model (meanmax
    # wins big on MobileNetV2, silero, PP-OCRv5; minmax keeps one more YOLO box and Magika file); the
    # pair does. TensorRT quantizes layer inputs, never graph outputs.
    meanmax_candidate=True,
)


class TrtBackend(Backend):
    """Emits TensorRT-ready QDQ ONNX and verifies it (rules + ONNX Runtime numerics)."""

    spec = TRT_SPEC

    def emit(self, model: ir.Model, ctx: PassContext) -> Artifact:
        # INT4 weights are always stored packed behind a DequantizeLinear (TensorRT has no INT4 Q).
        precision = ctx.options.precision
        float_weights = ctx.options.weights != WeightStorage.INT8 and precision != Precision.INT4
        qdq = materialize_qdq(model, keep_fused_activations=True, float_weights=float_weights)
        artifact = onnx_artifact(qdq, self.spec.name, self.spec.artifact_suffix)
        errors = [v for v in check_tensorrt_rules(artifact.proto) if v.severity == "error"]
        # The input model's own quantization, not qcc's: its Q/DQ nodes, and the nodes between them that
        # qcc left as the model quantized them (a rule names the Conv for a Q/DQ between it and its Relu).
        own = {
            n.name: n.op_type
            for n in model.graph
            if n.op_type in ("QuantizeLinear", "DequantizeLinear")
            or getattr(get_decision(n), "reason", None) == ALREADY_QUANTIZED_REASON
        }
        theirs = [v for v in errors if v.node in own]
        if theirs:
            first = theirs[0]
            raise BackendError(
                f"the model's own {own[first.node]} {first.node!r} breaks TensorRT's explicit-quantization rule "
                f"{first.rule!r}: {first.message}.",
                "pass the float model (qcc places Q/DQ by TensorRT's rules), or fix the model's Q/DQ where the "
                "rule says (`qcc check --target trt model.onnx` lists every violation).",
            )
        if errors:
            first = errors[0]
            raise BackendError(
                f"the emitted trt model breaks TensorRT rule {first.rule!r} at {first.node!r}: {first.message}",
                "this is a qcc bug; please report it, and --exclude that node meanwhile.",
            )
        return artifact

    def verify(
        self,
        artifact: Artifact,
        reference: ir.Model,
        samples: list[Feed],
        planned_int8: frozenset[str] = frozenset(),
    ) -> dict[str, Any]:
        rules = summarize(check_tensorrt_rules(artifact.proto))
        # ONNX Runtime's optimizer crashes on FP8 Q/DQ around MaxPool (ORT.md 10 #12): run unoptimized.
        fp8 = any(t.data_type == onnx.TensorProto.FLOAT8E4M3FN for t in artifact.proto.graph.initializer)
        fidelity = compare_outputs(reference, artifact.runtime_model, samples, level="disable" if fp8 else "all")
        return {
            "ok": rules["errors"] == 0 and fidelity["finite"],
            "runtime": "onnxruntime CPUExecutionProvider (TensorRT numerics simulated; no GPU here)",
            "tensorrt_rules": rules,
            "engine": _try_engine(artifact),
            "fidelity": fidelity,
        }


def _try_engine(artifact: Artifact) -> dict[str, Any]:
    """Builds an int8 TensorRT engine when TensorRT and a GPU are available; says why not otherwise."""
    try:
        import tensorrt as trt  # optional: only on machines with TensorRT
    except ImportError:
        return {"built": False, "reason": "the tensorrt package is not installed"}
    try:
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        parsed = (
            parser.parse(artifact.data) if artifact.data is not None else parser.parse_from_file(artifact.runtime_model)
        )
        if not parsed:
            return {"built": False, "reason": str(parser.get_error(0))}
        config = builder.create_builder_config()
        config.set_flag(trt.BuilderFlag.INT8)
        engine = builder.build_serialized_network(network, config)
        return {"built": engine is not None, "reason": None if engine is not None else "build failed"}
    except Exception as exc:  # noqa: BLE001 - no GPU, driver errors: report, never fail the compile
        return {"built": False, "reason": f"{type(exc).__name__}: {exc}"}


def calibration_cache(report: dict[str, Any], version: str = "100100") -> str:
    """Returns TensorRT's implicit-INT8 calibration cache text for a ``trt`` compile report.

    Format: a header ``TRT-<version>-MinMaxCalibration``, then one line per activation tensor,
    ``<name>: <big-endian float32 scale as 8 hex digits>`` with ``scale = max|x| / 127``. qcc's
    trt activations are symmetric, so their scale is exactly that (not ORT's ``max(hi, lo)``).
    """
    lines = [f"TRT-{version}-MinMaxCalibration"]
    for name, tensor in report["tensors"].items():
        if tensor["role"] == "activation":
            lines.append(f"{name}: {struct.pack('>f', float(tensor['scale'])).hex()}")
    return "\n".join(lines) + "\n"
