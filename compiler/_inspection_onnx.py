"""The ONNX reader of ``qcc.inspection``: per node int8, int16, fp8, weight-only or float, per
integer tensor its scale and zero point, read from the graph without running it.

* **QDQ ONNX** (``QuantizeLinear``/``DequantizeLinear`` around float ops). A runtime fuses
  DQ -> op -> Q into an integer kernel, so a compute node is int8 when its data inputs come from
  ``DequantizeLinear`` (for Conv/MatMul/Gemm the weight too). TensorRT and ModelOpt graphs put Q/DQ
  on layer inputs only: a weighted op's output may stay float and a Relu/Clip/residual Add right
  after it is fused into its epilogue, so those count as int8 with the reason saying so. Data
  movement (Reshape, Transpose, MaxPool, ...) on dequantized values is exact in int8: runtimes move
  the Q/DQ past it. Any other op with quantized inputs is int8 only when its output is requantized.
* **QOperator ONNX** (``QLinearConv``, ``MatMulInteger``, ...): those ops are integer kernels, and
  data movement on their integer outputs stays integer.

The tensor reported is the one that holds the integers (a Q's output, a DQ's input). The nodes of
control-flow subgraphs (If, Loop, Scan) follow their node, named ``node/attribute/name``. onnx is
imported only when a model is read, so that importing ``qcc.inspection`` stays light.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

from qcc.errors import ModelLoadError

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
# Integer kernels of the QOperator format: (input, scale, zero point) positions of the quantized
# inputs, then of the quantized output (None: a float output).
_QOPERATORS: dict[str, tuple[tuple[tuple[int, int | None, int | None], ...], tuple[int, int, int] | None]] = {
    "QLinearConv": (((0, 1, 2), (3, 4, 5)), (0, 6, 7)),
    "QLinearConvTranspose": (((0, 1, 2), (3, 4, 5)), (0, 6, 7)),
    "QLinearMatMul": (((0, 1, 2), (3, 4, 5)), (0, 6, 7)),
    "QLinearAdd": (((0, 1, 2), (3, 4, 5)), (0, 6, 7)),
    "QLinearMul": (((0, 1, 2), (3, 4, 5)), (0, 6, 7)),
    "QGemm": (((0, 1, 2), (3, 4, 5)), (0, 7, 8)),
    "QLinearSigmoid": (((0, 1, 2),), (0, 3, 4)),
    "QLinearLeakyRelu": (((0, 1, 2),), (0, 3, 4)),
    "QLinearSoftmax": (((0, 1, 2),), (0, 3, 4)),
    "QLinearAveragePool": (((0, 1, 2),), (0, 3, 4)),
    "QLinearGlobalAveragePool": (((0, 1, 2),), (0, 3, 4)),
    "QLinearReduceMean": (((0, 1, 2),), (0, 3, 4)),
    "QLinearWhere": (((1, 2, 3), (4, 5, 6)), (0, 7, 8)),
    "MatMulIntegerToFloat": (((0, 2, 4), (1, 3, 5)), None),
    "DynamicQuantizeMatMul": (((1, 2, 3),), None),
    "ConvInteger": (((0, None, 2), (1, None, 3)), None),
    "MatMulInteger": (((0, None, 2), (1, None, 3)), None),
}
# Integer kernels whose inputs are not laid out as above (attention, concat): int8, no tensors read.
_OTHER_QOPERATORS = frozenset({"QLinearConcat", "QAttention", "QEmbedLayerNormalization", "QOrderedMatMul"})
WEIGHTED = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})
# Exact on integers (they only move or select values): runtimes move the Q/DQ past them.
MOVEMENT = frozenset(
    {
        "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "MaxPool", "Slice", "Identity", "Split",
        "Gather", "Expand", "Tile", "DepthToSpace", "SpaceToDepth",
    }
)  # fmt: skip
# Pointwise ops TensorRT and ONNX Runtime fuse into a weighted op's epilogue.
EPILOGUE = frozenset({"Relu", "Clip", "LeakyRelu", "Add", "BatchNormalization"})
# Inputs that carry data (the rest are parameters: shapes, axes, clip bounds, scales).
_DATA_INPUTS = {
    "Conv": (0, 1), "ConvTranspose": (0, 1), "Gemm": (0, 1), "MatMul": (0, 1), "Where": (1, 2),
    "ScatterND": (0, 2), "ScatterElements": (0, 2),
}  # fmt: skip
_FIRST_INPUT_ONLY = frozenset(
    {
        "Clip", "Reshape", "Expand", "Tile", "Slice", "Pad", "Resize", "Upsample", "Gather", "GatherElements",
        "GatherND", "Split", "Squeeze", "Unsqueeze", "TopK", "BatchNormalization", "InstanceNormalization",
        "LayerNormalization", "GroupNormalization", "CumSum", "Dropout",
    }
)  # fmt: skip
_INT64_OUTPUT = frozenset({"Shape", "Size", "ArgMax", "ArgMin", "NonZero"})


def load_onnx(path: Path) -> Any:
    """Parses an ONNX model without its external data.

    Returns:
        The ``onnx.ModelProto``.

    Raises:
        ModelLoadError: the file is not an ONNX model, or one with no nodes.
    """
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError, RuntimeError) as error:
        raise ModelLoadError(
            f"{path} is neither an ONNX model nor a TFLite flatbuffer ({type(error).__name__}).",
            "pass an .onnx model or a .tflite file; if it was copied or downloaded, check that it is complete.",
        ) from error
    if not model.graph.node:
        raise ModelLoadError(
            f"{path} has no graph nodes: it is not an ONNX model (or an empty one).",
            "pass an .onnx model or a .tflite file.",
        )
    return model


def onnx_kind(model: Any) -> str:
    """``qoperator-onnx``, ``qdq-onnx`` or ``float-onnx``: the quantization format of a model's
    ops, its control-flow bodies included."""
    ops: set[str] = set()
    graphs = [model.graph]
    while graphs:  # control-flow bodies too
        graph = graphs.pop()
        for node in graph.node:
            ops.add(node.op_type)
            graphs.extend(subgraph for _, subgraph in _subgraphs(node))
    if ops & (set(_QOPERATORS) | _OTHER_QOPERATORS) or "MatMulNBits" in ops:
        return "qoperator-onnx"
    return "qdq-onnx" if ops & QDQ_OPS else "float-onnx"


def inspect_onnx(model: Any, base_dir: Path) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Classifies every node of a loaded ONNX model and reads its integer tensors' parameters.

    Args:
        model: the ``onnx.ModelProto`` (loaded by :func:`load_onnx`, external data not loaded).
        base_dir: the folder external data is read from, when a scale or zero point lives there.

    Returns:
        ``(nodes, tensors)`` in the layout of :func:`qcc.inspection.inspect_artifact`.

    Raises:
        ModelLoadError: a scale's or zero point's external data cannot be read.
    """
    return _OnnxInspector(model, base_dir).run()


def _dtype_name(elem_type: int | None) -> str:
    import onnx

    return onnx.TensorProto.DataType.Name(elem_type).lower() if elem_type else "unknown"


def _bits(elem_type: int | None) -> str | None:
    """The precision an integer (or fp8) tensor of this ONNX type computes in; None for others."""
    import onnx

    names = {
        onnx.TensorProto.INT8: "int8",
        onnx.TensorProto.UINT8: "int8",
        onnx.TensorProto.INT16: "int16",
        onnx.TensorProto.UINT16: "int16",
        onnx.TensorProto.FLOAT8E4M3FN: "fp8",
        onnx.TensorProto.FLOAT8E5M2: "fp8",
    }
    for name in ("INT4", "UINT4"):
        if hasattr(onnx.TensorProto, name):
            names[getattr(onnx.TensorProto, name)] = "int4"
    return names.get(elem_type)


# onnx.TensorProto's FLOAT and UINT8 (onnx is imported only when a model is read).
_FLOAT, _UINT8 = 1, 2
_FLOAT_TYPES = frozenset({_FLOAT, 10, 11, 16})  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


def _subgraphs(node: Any) -> list[tuple[str, Any]]:
    """The bodies of a control-flow node (If's branches, Loop's and Scan's body), with their labels."""
    found = []
    for attribute in node.attribute:
        if attribute.HasField("g"):
            found.append((attribute.name, attribute.g))
        found.extend((f"{attribute.name}[{i}]", graph) for i, graph in enumerate(attribute.graphs))
    return found


def _plain(array: Any) -> float | int | list | None:
    """A scale or zero point as JSON: a number when it is a scalar, else a (nested, for blocks) list."""
    import numpy as np

    if array is None:
        return None
    array = np.asarray(array)
    if array.dtype.kind not in "iuf":  # int4 and float8 types from ml_dtypes
        array = array.astype(np.int32 if "int" in array.dtype.name else np.float32)
    return array.tolist()


class _OnnxInspector:
    """One walk over an ONNX graph in topological order (see module docstring for the rules)."""

    def __init__(self, model: Any, base_dir: Path) -> None:
        self.graph = model.graph
        self.base_dir = base_dir
        self.initializers: dict[str, Any] = {}
        self.constants: dict[str, Any] = {}
        self.types: dict[str, int] = {}
        self.consumers: dict[str, list[Any]] = collections.defaultdict(list)
        self.graph_outputs: set[str] = set()
        self._index(self.graph)
        # Float tensors that stand for integers: name -> precision (DQ outputs, moved int8 data).
        self.dequantized: dict[str, str] = {}
        self.stored: dict[str, str] = {}  # a DQ output -> the integer tensor it dequantizes
        # Float outputs of int8 weighted ops (and of epilogues fused into them) -> the weighted op.
        self.int8_accumulator: dict[str, str] = {}
        self.integer_outputs: set[str] = set()  # outputs of integer kernels (int32 accumulators)
        self.tensors: dict[str, dict[str, Any]] = {}
        from qcc.backends.tensorrt import TRT_SPEC

        # Ops TensorRT runs int8 from dequantized inputs even when their output is not requantized.
        self.trt_int8_ops = TRT_SPEC.int8_ops

    def _index(self, graph: Any) -> None:
        """Registers a graph's constants, known types and consumers, and those of its subgraphs
        (which may read the outer graph's values by name)."""
        self.initializers.update((t.name, t) for t in graph.initializer)
        for value in (*graph.input, *graph.output, *graph.value_info):
            if value.type.tensor_type.elem_type:
                self.types[value.name] = value.type.tensor_type.elem_type
        self.graph_outputs.update(value.name for value in graph.output)
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = node.attribute[0].t
            for name in node.input:
                self.consumers[name].append(node)
            for _, subgraph in _subgraphs(node):
                self._index(subgraph)
        for name, tensor in (*self.initializers.items(), *self.constants.items()):
            self.types[name] = tensor.data_type

    def run(self) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
        nodes: list[dict[str, Any]] = []
        self._walk(self.graph, "", nodes)
        return nodes, self.tensors

    def _walk(self, graph: Any, prefix: str, nodes: list[dict[str, Any]]) -> None:
        for index, node in enumerate(graph.node):
            name = prefix + (node.name or f"{node.op_type}_{index}")
            subgraphs = _subgraphs(node)
            if not subgraphs:
                precision, why = self._classify(node)
                self._propagate_types(node, precision)
                nodes.append({"name": name, "op": node.op_type, "precision": precision, "why": why})
                continue
            nodes.append({"name": name, "op": node.op_type, "precision": "shape", "why": "control flow: the nodes of "
                          "its subgraphs follow it"})  # fmt: skip
            for label, subgraph in subgraphs:
                self._walk(subgraph, f"{name}/{label}/", nodes)
            # Its outputs are its body's (Loop's body also returns the loop condition first).
            body = subgraphs[0][1].output[1:] if node.op_type == "Loop" else subgraphs[0][1].output
            for out, value in zip(node.output, body, strict=False):
                self.types.setdefault(out, self.types.get(value.name, _FLOAT))

    # -- values

    def _array(self, name: str) -> Any:
        """A constant's value (None for an activation or a missing optional input)."""
        import onnx
        from onnx import numpy_helper

        tensor = self.initializers.get(name) or self.constants.get(name)
        if tensor is None:
            return None
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            tensor = onnx.TensorProto.FromString(tensor.SerializeToString())
            try:
                onnx.external_data_helper.load_external_data_for_tensor(tensor, str(self.base_dir))
            except (OSError, onnx.checker.ValidationError) as error:
                raise ModelLoadError(
                    f"the external data of tensor {name!r} cannot be read ({error}).",
                    "keep the model's .data file next to it, under the name the model records.",
                ) from error
        return numpy_helper.to_array(tensor)

    def _record(self, name: str, of: str | None, scale: str | None, zero_point: str | None, axis: int | None,
                elem_type: int | None, block_size: int = 0) -> None:  # fmt: skip
        """Adds an integer tensor's parameters; ``scale``/``zero_point`` name constants or activations."""
        import numpy as np

        if scale is None and name in self.tensors:
            return  # ConvInteger/MatMulInteger carry zero points only: keep what a Q/DQ said
        scale_array = self._array(scale) if scale else None
        zp_array = self._array(zero_point) if zero_point else None
        entry = {
            "dtype": _dtype_name(elem_type),
            "scale": _plain(scale_array),
            "zero_point": _plain(zp_array) if zp_array is not None else (0 if scale_array is not None else None),
            "axis": axis if scale_array is not None and np.asarray(scale_array).size > 1 else None,
            "float": of,
        }
        if scale and scale_array is None:
            entry["dynamic"] = True  # the scale is computed at run time (DynamicQuantizeLinear)
        if block_size:
            entry["block_size"] = block_size
        self.tensors[name] = entry

    def _elem_type_of_q(self, node: Any) -> int:
        import onnx

        for attr in node.attribute:
            if attr.name == "output_dtype" and attr.i:
                return attr.i
        if len(node.input) > 2 and node.input[2]:
            return self.types.get(node.input[2], onnx.TensorProto.UINT8)
        return onnx.TensorProto.UINT8

    def _data_inputs(self, node: Any) -> list[str]:
        if node.op_type in _DATA_INPUTS:
            positions = _DATA_INPUTS[node.op_type]
        elif node.op_type in _FIRST_INPUT_ONLY or node.op_type.startswith("Reduce"):
            positions = (0,)
        else:
            positions = tuple(range(len(node.input)))
        return [node.input[i] for i in positions if i < len(node.input) and node.input[i]]

    # -- classification

    def _classify(self, node: Any) -> tuple[str, str]:
        op = node.op_type
        if op in QDQ_OPS:
            return "conversion", self._conversion(node)
        if op in _QOPERATORS or op in _OTHER_QOPERATORS:
            return self._qoperator(node)
        if op == "MatMulNBits":
            return "weight-only", "int4 weight blocks dequantized in the kernel; the input is float"
        if op == "Constant":
            return "shape", "a constant"
        if op in ("Shape", "Size"):
            return "shape", "reads only the tensor's shape"
        if op == "Cast":
            return self._cast(node)
        quantized, floats = [], []
        for name in self._data_inputs(node):
            elem_type = self.types.get(name)
            if name in self.dequantized:
                quantized.append((name, self.dequantized[name]))
            elif elem_type is not None and _bits(elem_type):
                quantized.append((name, _bits(elem_type)))  # QOperator integer data, moved as is
            elif elem_type is None or elem_type in _FLOAT_TYPES:
                floats.append(name)
            # Other integer inputs are indices or shapes.
        if not quantized and not floats:
            return "shape", "integer (shape) arithmetic only"
        epilogue = self._epilogue(node, floats, quantized)
        if epilogue:
            return "int8", epilogue
        if op in WEIGHTED:
            return self._weighted(node, quantized, floats)
        if floats:
            return "float", self._float_why(floats[0])
        precision = quantized[0][1]
        if op in MOVEMENT:
            for out in node.output:
                self.dequantized[out] = precision
            return precision, "moves integer data: the runtime keeps the values quantized through it"
        requantized = [q.name or q.output[0] for out in node.output for q in self.consumers[out]
                       if q.op_type == "QuantizeLinear"]  # fmt: skip
        if requantized:
            return precision, f"{precision} inputs, output requantized by {requantized[0]!r}"
        if op in self.trt_int8_ops:
            return precision, (
                f"{precision} inputs, float output (TensorRT runs it int8; ONNX Runtime fuses only "
                "DequantizeLinear -> op -> QuantizeLinear)"
            )
        return "float", (
            f"no QuantizeLinear on its output {node.output[0]!r}: it runs float on dequantized inputs "
            "(ONNX Runtime fuses only DequantizeLinear -> op -> QuantizeLinear)"
        )

    def _cast(self, node: Any) -> tuple[str, str]:
        source = self.types.get(node.input[0])
        target = next(a.i for a in node.attribute if a.name == "to")
        if node.input[0] in self.integer_outputs:
            return "conversion", f"integer accumulator {node.input[0]!r} to float"
        what = f"casts {node.input[0]!r} ({_dtype_name(source)}) to {_dtype_name(target)}"
        if _bits(source) or _bits(target):
            return "conversion", what
        if target in _FLOAT_TYPES:
            return "float", what
        if source is None or source in _FLOAT_TYPES:
            return "float", f"input {node.input[0]!r} is float"
        return "shape", "integer (shape) arithmetic only"

    def _float_why(self, name: str) -> str:
        if name in self.initializers or name in self.constants:
            return f"input {name!r} is a float constant"
        return f"input {name!r} is float"

    def _conversion(self, node: Any) -> str:
        if node.op_type == "DynamicQuantizeLinear":
            self._record(node.output[0], node.input[0], node.output[1], node.output[2], None,
                         self.types.get(node.output[2], _UINT8))  # fmt: skip
            return f"quantizes {node.input[0]!r} at run time"
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        block_size = next((a.i for a in node.attribute if a.name == "block_size"), 0)
        scale = node.input[1] if len(node.input) > 1 else None
        zero_point = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if node.op_type == "QuantizeLinear":
            elem_type = self._elem_type_of_q(node)
            self._record(node.output[0], node.input[0], scale, zero_point, axis, elem_type, block_size)
            return f"quantizes {node.input[0]!r} to {_dtype_name(elem_type)}"
        elem_type = self.types.get(node.input[0])
        if elem_type is None and zero_point:
            elem_type = self.types.get(zero_point)
        # The float tensor it stands for: the quantizing Q's input, if there is one.
        of = self.tensors.get(node.input[0], {}).get("float") or node.output[0]
        self._record(node.input[0], of, scale, zero_point, axis, elem_type, block_size)
        bits = _bits(elem_type)
        if bits:
            self.dequantized[node.output[0]] = bits
            self.stored[node.output[0]] = node.input[0]
        return f"dequantizes {node.input[0]!r} ({_dtype_name(elem_type)})"

    def _qoperator(self, node: Any) -> tuple[str, str]:
        inputs, output = _QOPERATORS.get(node.op_type, ((), None))
        bits = []
        for position, (tensor, scale, zero_point) in enumerate(inputs):
            if tensor >= len(node.input) or not node.input[tensor]:
                continue
            name = node.input[tensor]
            elem_type = self.types.get(name)
            if elem_type is None and zero_point is not None and zero_point < len(node.input):
                elem_type = self.types.get(node.input[zero_point])
            bits.append(_bits(elem_type))
            scale_name = node.input[scale] if scale is not None and scale < len(node.input) else None
            zp_name = node.input[zero_point] if zero_point is not None and zero_point < len(node.input) else None
            weight = position == 1 or node.op_type == "DynamicQuantizeMatMul"
            self._record(name, None, scale_name, zp_name, self._weight_axis(node, name) if weight else None, elem_type)
        if output is not None and output[1] < len(node.input) and node.input[output[1]]:
            _, scale, zero_point = output
            zp_name = node.input[zero_point] if zero_point < len(node.input) and node.input[zero_point] else None
            elem_type = self.types.get(zp_name, _UINT8) if zp_name else _UINT8
            self.types[node.output[0]] = elem_type
            self._record(node.output[0], None, node.input[scale], zp_name, None, elem_type)
        elif node.op_type in ("ConvInteger", "MatMulInteger"):
            self.integer_outputs.add(node.output[0])
        precision = next((b for b in bits if b), "int8")
        if node.op_type == "DynamicQuantizeMatMul":
            return precision, f"{precision} weight {node.input[1]!r}; input {node.input[0]!r} quantized at run time"
        return precision, "integer kernel (QOperator)"

    def _weight_axis(self, node: Any, weight: str) -> int:
        """The output-channel axis of a QOperator kernel's weight (where per-channel scales run)."""
        if node.op_type in ("QLinearConv", "ConvInteger"):
            return 0
        if node.op_type == "QLinearConvTranspose":
            return 1
        if node.op_type == "QGemm":
            return 0 if any(a.name == "transB" and a.i for a in node.attribute) else 1
        tensor = self.initializers.get(weight)
        return len(tensor.dims) - 1 if tensor is not None else -1  # MatMul: the weight's last axis

    def _weighted(self, node: Any, quantized: list[tuple[str, str]], floats: list[str]) -> tuple[str, str]:
        x, weight = node.input[0], node.input[1]
        names = dict(quantized)
        if x in floats and weight in names:
            stored = self.stored.get(weight, weight)
            return "weight-only", f"{names[weight]} weight {stored!r} dequantized in the kernel; input {x!r} is float"
        if floats:
            role = "weight" if floats[0] == weight else "input"
            return "float", f"{role} {floats[0]!r} is float"
        precision = names[x]
        out = node.output[0]
        readers = self.consumers[out]
        if any(r.op_type == "QuantizeLinear" for r in readers):
            return precision, f"{precision} inputs, output requantized"
        self.int8_accumulator[out] = node.name or out
        if len(readers) == 1 and readers[0].op_type in EPILOGUE and out not in self.graph_outputs:
            return precision, f"{precision} inputs; {readers[0].op_type} {readers[0].name!r} fused into its epilogue"
        why = f"{precision} inputs, float output"
        if node.op_type in ("Conv", "ConvTranspose"):
            why += " (TensorRT runs it int8; ONNX Runtime's CPU EP fuses a Conv only with a QuantizeLinear after it)"
        return precision, why

    def _epilogue(self, node: Any, floats: list[str], quantized: list[tuple[str, str]]) -> str | None:
        """The reason a pointwise op is fused into the int8 weighted op before it, or None."""
        if node.op_type not in EPILOGUE:
            return None
        main = [name for name in floats if name in self.int8_accumulator]
        if len(main) != 1 or len(floats) != 1:
            return None  # the other inputs must be quantized (a residual's skip input) or parameters
        if node.op_type == "Add" and not quantized:
            return None
        root = self.int8_accumulator[main[0]]
        out = node.output[0]
        readers = self.consumers[out]
        if len(readers) == 1 and readers[0].op_type in EPILOGUE and out not in self.graph_outputs:
            self.int8_accumulator[out] = root
        return f"fused into {root!r} (the epilogue of its int8 kernel)"

    def _propagate_types(self, node: Any, precision: str) -> None:
        """Records the output types the rules need where the model's value_info does not say."""
        import onnx

        outputs = [o for o in node.output if o]
        if node.op_type == "QuantizeLinear":
            self.types[outputs[0]] = self._elem_type_of_q(node)
        elif node.op_type == "DequantizeLinear":
            self.types[outputs[0]] = self.types.get(node.input[1], onnx.TensorProto.FLOAT)
        elif node.op_type == "DynamicQuantizeLinear":
            self.types.update(
                zip(outputs, (onnx.TensorProto.UINT8, onnx.TensorProto.FLOAT, onnx.TensorProto.UINT8), strict=False)
            )
        elif node.op_type in ("ConvInteger", "MatMulInteger"):
            self.types[outputs[0]] = onnx.TensorProto.INT32
        elif node.op_type in _INT64_OUTPUT:
            self.types.update(dict.fromkeys(outputs, onnx.TensorProto.INT64))
        elif node.op_type == "Cast":
            self.types[outputs[0]] = next(a.i for a in node.attribute if a.name == "to")
        for out in outputs:
            if out in self.types:
                continue
            if node.op_type in MOVEMENT and node.input and node.input[0] in self.types:
                self.types[out] = self.types[node.input[0]]
            else:
                self.types[out] = onnx.TensorProto.INT64 if precision == "shape" else onnx.TensorProto.FLOAT
