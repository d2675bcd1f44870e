"""ONNX Runtime CPU target (``ort``): a QDQ ONNX model that the CPU EP runs with integer kernels.

Layout rules (measured facts in ``shared/targets/ORT.md``): activations per tensor with constant
scalar scale and zero point; weights int8 symmetric per output channel; biases int32 at
``s_x * s_w``; Relu/Clip absorbed into the producer's output quantizer; no Q/DQ around ops without
an int8 CPU kernel (LayerNorm, GELU, Div, ...), which would only add work. Activations are uint8
on x86 (``QDQS8ToU8Transformer`` rewrites int8 Q->DQ pairs only when the Q has one consumer, so
int8 activations leave Convs in float at every branch point) and int8 on ARM.

``verify()`` loads the artifact with the CPU EP, saves ONNX Runtime's optimized graph and counts
which quantized Conv/MatMul/Gemm became integer kernels, then compares outputs with the float
model on the given samples.
"""

from __future__ import annotations

import collections
import os
import tempfile
from typing import Any

import onnx
import onnx_ir as ir

from qcc.backends._dynamic import materialize_dynamic
from qcc.backends._onnx_artifact import onnx_artifact
from qcc.backends.base import Artifact, Backend
from qcc.context import PassContext
from qcc.data import Feed
from qcc.irutils import attr_float, attr_int
from qcc.metrics import OutputFidelity, concat_parts
from qcc.options import CompileOptions, Precision, WeightStorage, host_is_arm
from qcc.qdq import materialize_qdq
from qcc.runtime import session
from qcc.target import TargetSpec

INTEGER_KERNELS = frozenset(
    {"QLinearConv", "QLinearMatMul", "QGemm", "MatMulIntegerToFloat", "ConvInteger", "MatMulInteger",
     "DynamicQuantizeMatMul", "MatMulNBits"}
)
FLOAT_COMPUTE = frozenset({"Conv", "FusedConv", "MatMul", "FusedMatMul", "Gemm", "FusedGemm", "ConvTranspose"})


class OrtSpec(TargetSpec):
    """The ``ort`` spec: uint8 activations on x86, int8 on ARM."""

    def default_activation_dtype(self) -> ir.DataType:
        return ir.DataType.INT8 if host_is_arm() else ir.DataType.UINT8

    def min_opset(self, options: CompileOptions) -> int:
        # DequantizeLinear with int4 blocks (block_size) is opset 21.
        return 21 if options.precision == Precision.INT4 else 13

    def smoothing_mul_runs_float(self, producer: ir.Node | None, options: CompileOptions) -> bool:
        # A Mul runs int8 only inside an int8 chain (int8_chains_only): with --dynamic, or when the
        # producer's chain goes back to a float op (a decomposed LayerNorm's Div) it runs float.
        return options.dynamic or not self._writes_int8(producer, depth=0)

    def _writes_int8(self, node: ir.Node | None, depth: int) -> bool:
        """Whether the plan would likely make ``node`` int8: a weighted op, or an int8-capable op
        whose data inputs all come from such nodes (followed a few ops back; further: assume so)."""
        if node is None:
            return False  # a graph input: float
        if node.op_type in self.compute_ops or depth > 6:
            return True
        if node.op_type not in self.int8_ops | self.shared_scale_ops | self.fused_activations:
            return False
        data = [v for v in node.inputs if v is not None and v.const_value is None]
        if node.op_type in self.shared_scale_ops | self.fused_activations:
            data = data[:1]
        return bool(data) and all(self._writes_int8(v.producer(), depth + 1) for v in data)

    def weight_only_reason(self, node: ir.Node) -> str | None:
        # ORT fuses DequantizeLinear(int4) into MatMulNBits for MatMul and plain Gemm only (ORT.md §3).
        if node.op_type != "Gemm":
            return None
        if attr_int(node, "transA", 0) or attr_int(node, "transB", 0):
            return "ONNX Runtime runs int4 weights (MatMulNBits) only for a Gemm without transposes"
        if attr_float(node, "alpha", 1.0) != 1.0 or attr_float(node, "beta", 1.0) != 1.0:
            return "ONNX Runtime runs int4 weights (MatMulNBits) only for a Gemm with alpha = beta = 1"
        return None


ORT_SPEC = OrtSpec(
    name="ort",
    description="ONNX Runtime CPU: QDQ ONNX fused into QLinearConv/QLinearMatMul/QGemm kernels",
    compute_ops=frozenset({"Conv", "MatMul", "Gemm"}),
    int8_ops=frozenset(
        {"Add", "Mul", "Concat", "AveragePool", "GlobalAveragePool", "LeakyRelu", "Sigmoid", "Softmax", "Where"}
    ),
    shared_scale_ops=frozenset(
        {"MaxPool", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Gather",
         "GatherElements", "Expand", "Tile", "Resize", "Split", "ReduceMax", "ReduceMin"}
    ),
    fused_activations=frozenset({"Relu", "Clip"}),
    keep_fused_activation_nodes=False,
    symmetric_activations=False,
    bias_int32=True,
    artifact_suffix=".onnx",
    dynamic=True,
    precisions=frozenset({"int8", "int4"}),
    int8_chains_only=True,
    priced_in_onnxruntime=True,
)


class OrtBackend(Backend):
    """Emits and verifies QDQ models for ONNX Runtime's CPU execution provider."""

    spec = ORT_SPEC

    def emit(self, model: ir.Model, ctx: PassContext) -> Artifact:
        if ctx.options.dynamic:
            model = materialize_dynamic(model)
        qdq = materialize_qdq(
            model,
            keep_fused_activations=self.spec.keep_fused_activation_nodes,
            float_weights=ctx.options.weights == WeightStorage.QDQ,
        )
        return onnx_artifact(qdq, self.spec.name, self.spec.artifact_suffix)

    def verify(
        self,
        artifact: Artifact,
        reference: ir.Model,
        samples: list[Feed],
        planned_int8: frozenset[str] = frozenset(),
    ) -> dict[str, Any]:
        census, float_compute = fusion_census(artifact.runtime_model)
        unfused = sorted(name for name in float_compute if name in planned_int8)
        fidelity = compare_outputs(reference, artifact.runtime_model, samples)
        return {
            "ok": not unfused and fidelity["finite"],
            "runtime": "onnxruntime CPUExecutionProvider",
            "integer_kernels": sum(census[op] for op in INTEGER_KERNELS),
            "float_compute_ops": len(float_compute),
            "quantized_but_float": unfused,
            "census": dict(sorted(census.items())),
            "fidelity": fidelity,
        }


def fusion_census(model: bytes | str) -> tuple[collections.Counter, list[str]]:
    """Returns ONNX Runtime's optimized graph as an op-type histogram and the float compute nodes.

    The model is optimized at the extended level (where the QDQ fusions run) with one thread,
    exactly as the CPU EP would run it.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "optimized.onnx")
        session(model, threads=1, level="extended", optimized_path=path, what="the quantized model")
        optimized = onnx.load(path, load_external_data=False)
    census = collections.Counter(node.op_type for node in optimized.graph.node)
    float_compute = [node.name for node in optimized.graph.node if node.op_type in FLOAT_COMPUTE]
    return census, float_compute


def compare_outputs(
    reference: ir.Model | onnx.ModelProto | bytes,
    candidate: onnx.ModelProto | bytes | str,
    samples: list[Feed],
    level: str = "all",
) -> dict[str, Any]:
    """Runs both models on the samples and returns cosine and error of every output, pooled.

    ``level`` is the candidate's ONNX Runtime optimization level.
    """
    # One session at a time: a model of several GB is not held twice by ONNX Runtime.
    ref = session(reference, what="the float model")
    names = [meta.name for meta in ref.get_outputs()]
    expected = [ref.run(None, feed) for feed in samples]
    del ref
    cand = session(candidate, level=level, what="the quantized model")
    fidelity = OutputFidelity(concat_parts(reference))
    for feed, outputs in zip(samples, expected, strict=True):
        for name, e, g in zip(names, outputs, cand.run(None, feed), strict=True):
            fidelity.add(name, e, g)
        fidelity.samples += 1
    return fidelity.result()
