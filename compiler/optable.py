"""Facts about ONNX operators that every target shares.

Which inputs of an op may ever carry quantized data (Reshape's ``shape`` or Clip's ``min`` never
do), which input is a weight and on which axis its output channels lie, and which input is a bias.
Targets decide *whether* to quantize an op; this table says *what* quantizing it would mean.
"""

from __future__ import annotations

import onnx_ir as ir

# Inputs that may be quantized; an op missing here has all-float-data inputs quantizable only if
# a target lists it (then every input is considered).
QUANTIZABLE_INPUTS: dict[str, tuple[int, ...]] = {
    "Conv": (0, 1, 2),
    "ConvTranspose": (0, 1, 2),
    "Gemm": (0, 1, 2),
    "MatMul": (0, 1),
    "Add": (0, 1),
    "Sub": (0, 1),
    "Mul": (0, 1),
    "Div": (0, 1),
    "Concat": tuple(range(64)),
    "Where": (1, 2),
    "Clip": (0,),
    "Relu": (0,),
    "LeakyRelu": (0,),
    "Sigmoid": (0,),
    "Tanh": (0,),
    "HardSwish": (0,),
    "HardSigmoid": (0,),
    "Softmax": (0,),
    "AveragePool": (0,),
    "GlobalAveragePool": (0,),
    "MaxPool": (0,),
    "GlobalMaxPool": (0,),
    "ReduceMean": (0,),
    "ReduceMax": (0,),
    "ReduceMin": (0,),
    "Reshape": (0,),
    "Flatten": (0,),
    "Squeeze": (0,),
    "Unsqueeze": (0,),
    "Transpose": (0,),
    "Slice": (0,),
    "Gather": (0,),
    "GatherElements": (0,),
    "Expand": (0,),
    "Tile": (0,),
    "Split": (0,),
    "Resize": (0,),
    "Pad": (0,),
    "DepthToSpace": (0,),
    "SpaceToDepth": (0,),
    "GatherND": (0,),
    "Compress": (0,),
    "CenterCropPad": (0,),
    "Trilu": (0,),
}

# Ops whose weight input (index 1) is quantized per channel, and the input index of the bias.
WEIGHT_INPUT = 1
BIAS_INPUT: dict[str, int] = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2}


def weight_axis(node: ir.Node) -> int:
    """Returns the axis of the output channels in the node's weight tensor.

    Conv weights are (M, C/g, kH, kW): axis 0. ConvTranspose weights are (C, M/g, kH, kW): axis 1.
    Gemm B is (N, K) with transB=1 (axis 0) or (K, N) otherwise (axis 1). MatMul B is (..., K, N):
    the last axis.
    """
    op = node.op_type
    if op == "Conv":
        return 0
    if op == "ConvTranspose":
        return 1
    if op == "Gemm":
        trans_b = node.attributes.get("transB")
        return 0 if trans_b is not None and trans_b.as_int() == 1 else 1
    if op == "MatMul":
        return -1
    raise ValueError(f"{op} has no weight input")


def quantizable_inputs(node: ir.Node) -> tuple[int, ...]:
    """Returns the indices of the node's inputs that may carry quantized data."""
    indices = QUANTIZABLE_INPUTS.get(node.op_type, tuple(range(len(node.inputs))))
    return tuple(i for i in indices if i < len(node.inputs) and node.inputs[i] is not None)
