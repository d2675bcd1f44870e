"""The TFLite flatbuffer writer: a small model of tensors and operators, serialized bottom-up.

The lowering (``_tflite_lower``) fills a :class:`FlatModel`; :func:`serialize` turns it into the
bytes of a ``.tflite`` file with the schema bindings of the ``tflite`` package. The rules that
LiteRT does not check, or checks only at ``invoke()`` (``shared/targets/TFLITE.md`` §8), are
applied here once:

* buffer 0 is the empty buffer every activation points at; constants get their own buffers,
  deduplicated by content, with payloads aligned to 16 bytes (the Python codegen ignores the
  schema's ``force_align``);
* every operator code carries both ``builtin_code`` (int32) and ``deprecated_builtin_code``
  (``min(code, 127)``), and a version from ``_tflite_versions``;
* options tables, strings and vectors are created before the table that holds them;
* a tensor marked ``is_variable`` (the state of UNIDIRECTIONAL_SEQUENCE_LSTM) has the flag set and
  no buffer;
* a ``serving_default`` signature maps the model's input and output names to tensors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
from typing import Any

import flatbuffers
import numpy as np
from tflite.BuiltinOperator import BuiltinOperator
from tflite.BuiltinOptions import BuiltinOptions
from tflite.TensorType import TensorType

# The package re-exports classes under the module names, so the builder functions are reached
# through the modules themselves.
Buffer, Model, OperatorCode, QuantizationParameters, SignatureDef, SubGraph, TensorMap, OperatorTable, TensorTable = (
    importlib.import_module(f"tflite.{name}")
    for name in (
        "Buffer",
        "Model",
        "OperatorCode",
        "QuantizationParameters",
        "SignatureDef",
        "SubGraph",
        "TensorMap",
        "Operator",
        "Tensor",
    )
)

SCHEMA_VERSION = 3
_PLACEHOLDER_FOR_GREATER_OP_CODES = 127
_ALIGN = 16

TENSOR_TYPES = {
    np.dtype(np.float32): TensorType.FLOAT32,
    np.dtype(np.float16): TensorType.FLOAT16,
    np.dtype(np.float64): TensorType.FLOAT64,
    np.dtype(np.int8): TensorType.INT8,
    np.dtype(np.uint8): TensorType.UINT8,
    np.dtype(np.int16): TensorType.INT16,
    np.dtype(np.int32): TensorType.INT32,
    np.dtype(np.int64): TensorType.INT64,
    np.dtype(np.bool_): TensorType.BOOL,
}


@dataclasses.dataclass
class Quant:
    """Affine quantization of a tensor: ``real = (q - zero_point) * scale`` along ``axis``."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int = 0


@dataclasses.dataclass
class Tensor:
    """One tensor of the subgraph. ``data`` is set for constants; ``shape`` is physical (NHWC)."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    data: np.ndarray | None = None
    quant: Quant | None = None
    shape_signature: tuple[int, ...] | None = None
    # A variable tensor (LSTM state): LiteRT keeps its contents across invocations, kernels update it in place.
    is_variable: bool = False

    @property
    def signature(self) -> tuple[int, ...]:
        """The shape with ``-1`` at dynamic dimensions (``shape`` when none is dynamic)."""
        return self.shape_signature if self.shape_signature is not None else self.shape


@dataclasses.dataclass
class Op:
    """One operator: builtin code, tensor indices (-1 for an omitted optional input), options."""

    code: int
    inputs: list[int]
    outputs: list[int]
    options: str | None = None
    option_fields: dict[str, Any] = dataclasses.field(default_factory=dict)
    version: int = 1
    source: str = ""


@dataclasses.dataclass
class FlatModel:
    """A single-subgraph TFLite model under construction."""

    tensors: list[Tensor] = dataclasses.field(default_factory=list)
    ops: list[Op] = dataclasses.field(default_factory=list)
    inputs: list[int] = dataclasses.field(default_factory=list)
    outputs: list[int] = dataclasses.field(default_factory=list)
    input_names: list[str] = dataclasses.field(default_factory=list)
    output_names: list[str] = dataclasses.field(default_factory=list)
    _names: set[str] = dataclasses.field(default_factory=set)

    def tensor(
        self,
        name: str,
        shape,
        dtype,
        *,
        data: np.ndarray | None = None,
        quant: Quant | None = None,
        shape_signature: tuple[int, ...] | None = None,
    ) -> Tensor:
        """Adds a tensor under a unique name and returns it."""
        tensor = Tensor(
            len(self.tensors),
            self._unique(name or "t"),
            tuple(int(d) for d in shape),
            np.dtype(dtype),
            data,
            quant,
            shape_signature,
        )
        self.tensors.append(tensor)
        return tensor

    def rename(self, tensor: Tensor, name: str) -> None:
        """Gives the tensor a new unique name (``name``, or ``name_<i>`` when taken), freeing its old one."""
        self._names.discard(tensor.name)
        tensor.name = self._unique(name)

    def _unique(self, name: str) -> str:
        """Reserves ``name``, or ``name_<i>`` with the smallest free ``i`` when it is taken."""
        unique, i = name, 0
        while unique in self._names:
            i += 1
            unique = f"{name}_{i}"
        self._names.add(unique)
        return unique

    def constant(self, name: str, array: np.ndarray, quant: Quant | None = None) -> Tensor:
        """Adds a constant tensor (0-d arrays stay 0-d; see TFLITE.md §8 pitfall 22)."""
        array = np.array(array, order="C")
        return self.tensor(name, array.shape, array.dtype, data=array, quant=quant)

    def op(self, code: int, inputs, outputs, options: str | None = None, source: str = "", **fields) -> Op:
        """Appends an operator and returns it; ``fields`` are the options table's fields."""
        ins = [t if isinstance(t, int) else t.index for t in inputs]
        outs = [t if isinstance(t, int) else t.index for t in outputs]
        op = Op(code, ins, outs, options, fields, source=source)
        self.ops.append(op)
        return op


def serialize(model: FlatModel, description: str = "qcc") -> bytes:
    """Returns the ``.tflite`` bytes of the model (see module docstring)."""
    b = flatbuffers.Builder(1024 + sum(t.data.nbytes for t in model.tensors if t.data is not None))
    buffer_of = _buffers(b, model)
    tensors = [_tensor(b, t, buffer_of[t.index]) for t in model.tensors]
    codes: dict[tuple[int, int], int] = {}
    for op in model.ops:
        codes.setdefault((op.code, op.version), len(codes))
    operators = [_operator(b, op, codes[(op.code, op.version)]) for op in model.ops]
    subgraph = _subgraph(b, model, tensors, operators)
    opcodes = [_opcode(b, code, version) for code, version in codes]
    signature = _signature(b, model)
    buffers = buffer_of["__tables__"]
    desc = b.CreateString(description)
    model_vectors = {
        "OperatorCodes": opcodes,
        "Subgraphs": [subgraph],
        "Buffers": buffers,
        "SignatureDefs": [signature],
    }
    offsets = {name: _offset_vector(b, Model, name, items) for name, items in model_vectors.items()}
    Model.Start(b)
    Model.AddVersion(b, SCHEMA_VERSION)
    Model.AddDescription(b, desc)
    for name, offset in offsets.items():
        getattr(Model, f"Add{name}")(b, offset)
    b.Finish(Model.End(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _offset_vector(b: flatbuffers.Builder, module, name: str, items: list[int]) -> int:
    getattr(module, f"Start{name}Vector")(b, len(items))
    for item in reversed(items):
        b.PrependUOffsetTRelative(item)
    return b.EndVector()


def _int_vector(b: flatbuffers.Builder, values, dtype=np.int32) -> int:
    return b.CreateNumpyVector(np.asarray(values, dtype=dtype).reshape(-1))


def _buffers(b: flatbuffers.Builder, model: FlatModel) -> dict:
    """Writes buffer 0 (empty) and one deduplicated, 16-byte aligned buffer per constant."""
    tables = []
    Buffer.Start(b)
    tables.append(Buffer.End(b))
    by_digest: dict[bytes, int] = {}
    buffer_of: dict[Any, Any] = {}
    for tensor in model.tensors:
        if tensor.data is None:
            buffer_of[tensor.index] = 0
            continue
        payload = np.ascontiguousarray(tensor.data).astype(tensor.data.dtype.newbyteorder("<")).tobytes()
        digest = hashlib.sha1(payload).digest() + len(payload).to_bytes(8, "little")
        if digest not in by_digest:
            b.StartVector(1, len(payload), _ALIGN)
            b.head -= len(payload)
            b.Bytes[b.head : b.head + len(payload)] = payload
            data = b.EndVector()
            Buffer.Start(b)
            Buffer.AddData(b, data)
            by_digest[digest] = len(tables)
            tables.append(Buffer.End(b))
        buffer_of[tensor.index] = by_digest[digest]
    buffer_of["__tables__"] = tables
    return buffer_of


def _tensor(b: flatbuffers.Builder, tensor: Tensor, buffer: int) -> int:
    name = b.CreateString(tensor.name)
    shape = _int_vector(b, tensor.shape)
    signature = _int_vector(b, tensor.shape_signature) if tensor.shape_signature is not None else None
    quant = _quantization(b, tensor.quant) if tensor.quant is not None else None
    TensorTable.Start(b)
    TensorTable.AddShape(b, shape)
    if signature is not None:
        TensorTable.AddShapeSignature(b, signature)
    TensorTable.AddType(b, TENSOR_TYPES[tensor.dtype])
    TensorTable.AddBuffer(b, buffer)
    TensorTable.AddName(b, name)
    if quant is not None:
        TensorTable.AddQuantization(b, quant)
    if tensor.is_variable:
        TensorTable.AddIsVariable(b, True)
    return TensorTable.End(b)


def _quantization(b: flatbuffers.Builder, quant: Quant) -> int:
    scale = b.CreateNumpyVector(np.asarray(quant.scale, dtype=np.float32).reshape(-1))
    zero_point = _int_vector(b, quant.zero_point, np.int64)
    QuantizationParameters.Start(b)
    QuantizationParameters.AddScale(b, scale)
    QuantizationParameters.AddZeroPoint(b, zero_point)
    QuantizationParameters.AddQuantizedDimension(b, int(quant.axis))
    return QuantizationParameters.End(b)


def _options(b: flatbuffers.Builder, name: str, fields: dict[str, Any]) -> int:
    """Builds an options table from field names (``stride_w`` -> ``AddStrideW``)."""
    module = importlib.import_module(f"tflite.{name}")
    vectors = {k: _int_vector(b, v) for k, v in fields.items() if isinstance(v, (list, tuple, np.ndarray))}
    module.Start(b)
    for key, value in fields.items():
        adder = getattr(module, "Add" + "".join(part.capitalize() for part in key.split("_")))
        adder(b, vectors.get(key, value))
    return module.End(b)


def _operator(b: flatbuffers.Builder, op: Op, opcode_index: int) -> int:
    options = _options(b, op.options, op.option_fields) if op.options is not None else None
    inputs = _int_vector(b, op.inputs)
    outputs = _int_vector(b, op.outputs)
    OperatorTable.Start(b)
    OperatorTable.AddOpcodeIndex(b, opcode_index)
    OperatorTable.AddInputs(b, inputs)
    OperatorTable.AddOutputs(b, outputs)
    if options is not None:
        OperatorTable.AddBuiltinOptionsType(b, getattr(BuiltinOptions, op.options))
        OperatorTable.AddBuiltinOptions(b, options)
    return OperatorTable.End(b)


def _subgraph(b: flatbuffers.Builder, model: FlatModel, tensors: list[int], operators: list[int]) -> int:
    tensor_vector = _offset_vector(b, SubGraph, "Tensors", tensors)
    operator_vector = _offset_vector(b, SubGraph, "Operators", operators)
    inputs = _int_vector(b, model.inputs)
    outputs = _int_vector(b, model.outputs)
    name = b.CreateString("main")
    SubGraph.Start(b)
    SubGraph.AddTensors(b, tensor_vector)
    SubGraph.AddInputs(b, inputs)
    SubGraph.AddOutputs(b, outputs)
    SubGraph.AddOperators(b, operator_vector)
    SubGraph.AddName(b, name)
    return SubGraph.End(b)


def _opcode(b: flatbuffers.Builder, code: int, version: int) -> int:
    OperatorCode.Start(b)
    OperatorCode.AddDeprecatedBuiltinCode(b, min(code, _PLACEHOLDER_FOR_GREATER_OP_CODES))
    OperatorCode.AddBuiltinCode(b, code)
    OperatorCode.AddVersion(b, version)
    return OperatorCode.End(b)


def _signature(b: flatbuffers.Builder, model: FlatModel) -> int:
    def maps(names: list[str], indices: list[int]) -> list[int]:
        out = []
        for name, index in zip(names, indices, strict=False):
            text = b.CreateString(name)
            TensorMap.Start(b)
            TensorMap.AddName(b, text)
            TensorMap.AddTensorIndex(b, index)
            out.append(TensorMap.End(b))
        return out

    inputs = _offset_vector(b, SignatureDef, "Inputs", maps(model.input_names, model.inputs))
    outputs = _offset_vector(b, SignatureDef, "Outputs", maps(model.output_names, model.outputs))
    key = b.CreateString("serving_default")
    SignatureDef.Start(b)
    SignatureDef.AddInputs(b, inputs)
    SignatureDef.AddOutputs(b, outputs)
    SignatureDef.AddSignatureKey(b, key)
    SignatureDef.AddSubgraphIndex(b, 0)
    return SignatureDef.End(b)


def builtin(name: str) -> int:
    """Returns the builtin operator code of a TFLite op name (``CONV_2D``)."""
    return getattr(BuiltinOperator, name)
