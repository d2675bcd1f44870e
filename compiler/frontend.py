"""Frontend: turn whatever the user gave into a checked, shape-inferred onnx-ir model.

Accepted inputs: a path, raw bytes, an ``onnx.ModelProto``, an ``onnx_ir.Model`` or (when
onnx-graphsurgeon is installed) a graphsurgeon ``Graph``. The caller's object or file is never
modified: the frontend always works on its own copy.

Steps: parse -> already-quantized models (ONNX Runtime's QOperator format is refused) ->
non-positive declared dims (Paddle's ``-1`` batch) made dynamic -> check external data (locations
must stay inside the model's folder) -> ONNX checker -> opset upgrade to 13 when older (the ONNX
version converter) -> ONNX Runtime loads the float model (converted down to an older opset where
it lacks a newer operator version; an operator it has no kernel for is named before anything is
quantized) -> shape inference with data propagation (dynamic dims stay symbolic) -> onnx-ir; a QDQ
model's own Q/DQ are recorded (:class:`OwnQuantization`). External data is never copied into the
protobuf: for a model above protobuf's 2 GB limit the onnx-ir model refers to the files and reads
a tensor (memory-mapped) when a pass needs it, so it loads like any other; a smaller model's
tensors are read into memory. Every way this can fail is a
:class:`~qcc.errors.ModelLoadError` or :class:`~qcc.errors.UnsupportedModelError` that names the
problem and the fix.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import re

import numpy as np
import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from qcc.data import InputSpec
from qcc.errors import ModelLoadError, UnsupportedModelError
from qcc.irutils import check_onnx, is_float
from qcc.runtime import MAX_ORT_IR_VERSION, is_large, is_quantized_model, session

logger = logging.getLogger(__name__)

MIN_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear (axis) needs 13
_MAX_PROTO_BYTES = 2**31 - 1


@dataclasses.dataclass
class LoadedModel:
    """A model ready for the pipeline.

    Attributes:
        model: the onnx-ir model (the pipeline's own copy).
        proto: the float graph as checked and shape-inferred (without external tensor data),
            for the report.
        source: a short description of where it came from (path or object type).
        original_opset: the default-domain opset before any upgrade.
        own_quantization: the Q/DQ of an already-quantized (QDQ) model; None for a float model.
    """

    model: ir.Model
    proto: onnx.ModelProto
    source: str
    original_opset: int
    own_quantization: OwnQuantization | None = None

    def input_specs(self) -> list[InputSpec]:
        """Returns the model's real inputs (not initializers) as :class:`InputSpec`."""
        return input_specs(self.model)


@dataclasses.dataclass(frozen=True)
class OwnQuantization:
    """The quantization a QDQ model already carries (ONNX Runtime's ``quantize_static``, ModelOpt, a
    QAT export): weights behind DequantizeLinear, activations between QuantizeLinear/DequantizeLinear.

    Attributes:
        tensors: the DequantizeLinear outputs that carry the model's own scales.
        nodes: the model's Q/DQ nodes and the nodes that read or write the tensors between them:
            quantized with the model's own scales, so qcc leaves them as they are (quantizing them
            again would put a second, different rounding on the same tensor).
    """

    tensors: tuple[str, ...]
    nodes: tuple[str, ...]

    def summary(self) -> dict[str, object]:
        """The report's ``already_quantized`` section."""
        return {"format": "qdq", "tensors": len(self.tensors), "nodes": list(self.nodes)}


def load(source: object, min_opset: int = MIN_OPSET) -> LoadedModel:
    """Loads, checks and prepares a model for quantization.

    Args:
        source: path (str or os.PathLike), bytes, onnx.ModelProto, onnx_ir.Model or a
            graphsurgeon Graph.
        min_opset: upgrade models below this default-domain opset (at least 13).

    Returns:
        The prepared model. Unnamed nodes are named after their first output.

    Raises:
        ModelLoadError: the input cannot be read as a valid ONNX model.
        UnsupportedModelError: it is valid ONNX that qcc cannot quantize, such as an already-quantized
            QOperator model.
    """
    proto, origin, base_dir = _to_proto(source)
    _check_structure(proto, origin)
    _check_not_qoperator(proto, origin)
    _dynamic_dims(proto.graph)
    _explicit_defaults(proto.graph)
    external = _has_external_data(proto)
    if external and base_dir is None:
        raise ModelLoadError(
            f"{origin} refers to external data files, but was not loaded from a path.",
            "pass the model's file path so qcc can find its external data next to it.",
        )
    if external:
        _check_external_data(proto, base_dir, origin)
    original_opset = _default_opset(proto)
    proto = _upgrade_opset(proto, origin, original_opset, max(min_opset, MIN_OPSET))
    # The checker, ONNX Runtime and shape inference each take the model serialized: once for all
    # three (MiniLM-L6's 90 MB took 0.1 s to size and 0.1 s to serialize, three times each).
    serialized = _Serialized(proto)
    # With external data the checker reads the file itself (it resolves the data files next to it).
    _check(os.fspath(source) if external else serialized, origin)
    _check_input_types(proto.graph, origin)
    if not external:
        fitted = _fit_onnxruntime(serialized, origin)
        if fitted is not proto:
            proto, serialized = fitted, _Serialized(fitted)
    proto = _infer_shapes(serialized, origin)
    _name_nodes(proto.graph)
    model = ir.serde.deserialize_model(proto)
    if external:
        ir.external_data.set_base_dir(model.graph, os.path.realpath(base_dir))
        if not is_large(model):
            # Below protobuf's limit every later step may serialize the model as one protobuf.
            ir.external_data.load_to_model(model)
    _check_quantizable(model, origin)
    _check_no_nan_constants(model, origin)
    return LoadedModel(
        model=model,
        proto=proto,
        source=origin,
        original_opset=original_opset,
        own_quantization=own_quantization(proto.graph),
    )


# ONNX Runtime's QOperator format: ops computing on integers, with the quantization parameters as
# operands, and the positions of their integer data operands.
_QOPERATOR_DATA = {"QLinearConv": (0, 3), "QLinearMatMul": (0, 3), "ConvInteger": (0, 1), "MatMulInteger": (0, 1)}
# ONNX Runtime's contrib ops that only its quantizer writes (besides every QLinear* op).
_MS_QUANTIZED = frozenset(
    {
        "QGemm",
        "QAttention",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "MatMulNBits",
        "DynamicQuantizeLSTM",
        "QEmbedLayerNormalization",
        "QOrderedMatMul",
        "QOrderedAttention",
        "QOrderedLayerNormalization",
    }
)
_QDQ = ("QuantizeLinear", "DequantizeLinear")


def _check_not_qoperator(proto: onnx.ModelProto, origin: str) -> None:
    """Refuses a float model converted to ONNX Runtime's QOperator format (QLinearConv, QGemm, ...).

    Its weights are integers inside integer ops: there is no float layer left for qcc to quantize,
    and the scales it would choose could not replace the model's. Such a model quantizes its float
    activations itself (QuantizeLinear, or DynamicQuantizeLinear for ``quantize_dynamic``) and feeds
    integer ops with constant integer weights; ONNX Runtime's ``com.microsoft`` quantized ops (QGemm,
    QLinearAdd, ...) are written only by its quantizer. A QLinear op on a model's integer inputs, with
    nothing float quantized in the graph, is an integer operator like any other (ONNX's conformance
    cases; TFLite lowers it in float), not a quantized float model.

    Raises:
        UnsupportedModelError: naming the QOperator ops and how many of each.
    """
    constants = _constant_names(proto.graph)
    quantizes_activations = any(
        node.op_type in ("QuantizeLinear", "DynamicQuantizeLinear") and node.input[0] not in constants
        for node in proto.graph.node
    )
    found: collections.Counter = collections.Counter()
    for node in proto.graph.node:
        if node.domain in ("", "ai.onnx") and node.op_type in _QOPERATOR_DATA:
            weighted = any(i < len(node.input) and node.input[i] in constants for i in _QOPERATOR_DATA[node.op_type])
            if weighted and quantizes_activations:
                found[node.op_type] += 1
        elif node.domain == "com.microsoft" and (node.op_type.startswith("QLinear") or node.op_type in _MS_QUANTIZED):
            found[node.op_type] += 1
    if found:
        ops = ", ".join(f"{op} x{count}" for op, count in found.most_common())
        raise UnsupportedModelError(
            f"{origin} is already quantized (QOperator: {ops}); qcc quantizes float models and cannot take over "
            "the scales of integer operators.",
            "pass the float model it came from.",
        )


def own_quantization(graph: onnx.GraphProto) -> OwnQuantization | None:
    """The quantization of a QDQ model, or None when the model is not one.

    A model is already quantized when a DequantizeLinear reads a constant (an integer weight) or the
    QuantizeLinear of one (a float weight behind Q/DQ, ModelOpt's and QAT exports' form) and feeds
    another op. A lone Q/DQ pair on an activation of a float model is a float island the model
    computes with (a fake-quant left in), not its quantization; it is compiled like any other op.
    """
    producer = {o: n for n in graph.node for o in n.output}
    constants = _constant_names(graph)

    def is_qdq(node: onnx.NodeProto | None, op_type: str) -> bool:
        return node is not None and node.op_type == op_type and node.domain in ("", "ai.onnx", "com.microsoft")

    def quantized_input(dq: onnx.NodeProto) -> str | None:
        """``constant`` or ``quantized`` for a DQ that carries the model's quantization, else None."""
        data = dq.input[0]
        if data in constants:
            return "constant"
        q = producer.get(data)
        if is_qdq(q, "QuantizeLinear"):
            return "constant" if q.input[0] in constants else "quantized"
        return None

    readers: dict[str, list[onnx.NodeProto]] = collections.defaultdict(list)
    for node in graph.node:
        for name in node.input:
            readers[name].append(node)
    found = [(n, kind) for n in graph.node if is_qdq(n, "DequantizeLinear") and (kind := quantized_input(n))]
    dqs = [dq for dq, _ in found]
    weights = [
        dq for dq, kind in found if kind == "constant" and any(r.op_type not in _QDQ for r in readers[dq.output[0]])
    ]
    if not weights:
        return None
    nodes: dict[str, None] = {}  # ordered set
    for dq in dqs:
        nodes[dq.name] = None
        q = producer.get(dq.input[0])
        if is_qdq(q, "QuantizeLinear"):
            nodes[q.name] = None
            writer = producer.get(q.input[0])
            if writer is not None and writer.op_type != "Constant":
                nodes[writer.name] = None
        for reader in readers[dq.output[0]]:
            nodes[reader.name] = None
    return OwnQuantization(tensors=tuple(dq.output[0] for dq in dqs), nodes=tuple(nodes))


def _constant_names(graph: onnx.GraphProto) -> set[str]:
    return {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}


def read_model_file(path: str) -> onnx.ModelProto:
    """Reads an ONNX file as it is (no upgrade, no inference), for checks of finished models.

    Raises:
        ModelLoadError: the file is missing, unreadable or not an ONNX model.
    """
    proto = _read_file(path)
    _check_structure(proto, path)
    return proto


def input_specs(model: ir.Model) -> list[InputSpec]:
    """Returns the graph inputs that are not initializers, with numpy dtypes and static dims."""
    specs = []
    for value in model.graph.inputs:
        if value.is_initializer():
            continue
        dtype = value.dtype.numpy() if value.dtype is not None else np.dtype(np.float32)
        shape = None
        if value.shape is not None:
            shape = tuple(d if isinstance(d, int) and d > 0 else None for d in value.shape)
        specs.append(InputSpec(value.name, np.dtype(dtype), shape))
    return specs


def _to_proto(source: object) -> tuple[onnx.ModelProto, str, str | None]:
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        return _read_file(path), path, os.path.dirname(os.path.abspath(path))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _parse(bytes(source), "the model bytes"), "<bytes>", None
    if isinstance(source, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(source)
        return copy, "<onnx.ModelProto>", None
    if isinstance(source, ir.Model):
        return ir.serde.serialize_model(source.clone()), "<onnx_ir.Model>", None
    graphsurgeon_graph = _from_graphsurgeon(source)
    if graphsurgeon_graph is not None:
        return graphsurgeon_graph, "<onnx_graphsurgeon.Graph>", None
    raise ModelLoadError(
        f"cannot load a model from a {type(source).__name__}.",
        "pass a path, bytes, onnx.ModelProto, onnx_ir.Model or onnx_graphsurgeon.Graph.",
    )


def _from_graphsurgeon(source: object) -> onnx.ModelProto | None:
    if type(source).__module__.split(".")[0] != "onnx_graphsurgeon":
        return None
    import onnx_graphsurgeon as gs  # optional, only for graphsurgeon users

    return gs.export_onnx(source)


def _read_file(path: str) -> onnx.ModelProto:
    if not os.path.exists(path):
        raise ModelLoadError(f"model file {path} does not exist.", "check the path.")
    if os.path.isdir(path):
        raise ModelLoadError(f"{path} is a folder, not a model file.", "pass the .onnx file itself.")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc.strerror}.", "check the file's permissions.") from None
    return _parse(data, path)


def _parse(data: bytes, origin: str) -> onnx.ModelProto:
    if not data:
        raise ModelLoadError(f"{origin} is empty.", "pass a complete .onnx file.")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(
            f"{origin} is not an ONNX model (protobuf parse failed: {exc}); it may be truncated or another format.",
            "re-export the model to ONNX, or check that the file was copied completely.",
        ) from None
    return proto


def _check_structure(proto: onnx.ModelProto, origin: str) -> None:
    if not proto.HasField("graph") or not proto.opset_import or proto.ir_version <= 0:
        raise ModelLoadError(
            f"{origin} parses as protobuf but is not an ONNX model (no graph, opset or IR version).",
            "pass an .onnx model file exported by a framework or built with onnx.helper.",
        )
    if not proto.graph.output:
        raise UnsupportedModelError(f"{origin} has a graph with no outputs.", "export the model with its outputs.")
    if not proto.graph.node:
        raise UnsupportedModelError(f"{origin} has an empty graph (no nodes).", "export the full model.")


def _has_external_data(proto: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in onnx.external_data_helper._get_all_tensors(proto))


def _check_external_data(proto: onnx.ModelProto, base_dir: str, origin: str) -> None:
    """Every external tensor lies inside the model's folder, in a file large enough to hold it."""
    base = os.path.realpath(base_dir)
    for tensor in onnx.external_data_helper._get_all_tensors(proto):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        full = os.path.realpath(os.path.join(base, location))
        if os.path.isabs(location) or os.path.commonpath([base, full]) != base:
            raise ModelLoadError(
                f"tensor {tensor.name!r} in {origin} points to external data outside the model's folder "
                f"({location!r}); qcc refuses such paths.",
                "keep external data files next to the model and refer to them by relative name.",
            )
        if not os.path.isfile(full):
            raise ModelLoadError(
                f"external data file {location!r} for tensor {tensor.name!r} of {origin} is missing.",
                "copy the model together with its external data files.",
            )
        end = int(info.get("offset", 0) or 0) + int(info.get("length", 0) or 0)
        if end > os.path.getsize(full):
            raise ModelLoadError(
                f"external data file {location!r} is too short for tensor {tensor.name!r} of {origin} "
                f"(needs {end} bytes, has {os.path.getsize(full)}).",
                "copy the model together with its complete external data files.",
            )


def _default_opset(proto: onnx.ModelProto) -> int:
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return 0


def _upgrade_opset(proto: onnx.ModelProto, origin: str, opset: int, target: int) -> onnx.ModelProto:
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise UnsupportedModelError(
            f"{origin} uses ONNX opset {opset}; this onnx package knows opsets up to {newest}.",
            "upgrade the onnx package, or export the model with an older opset.",
        )
    if opset >= target:
        return proto
    if opset == 0:
        raise UnsupportedModelError(
            f"{origin} does not import the default ONNX domain.", "export the model with a standard opset."
        )
    logger.info("upgrading %s from opset %d to %d", origin, opset, target)
    try:
        upgraded = onnx.version_converter.convert_version(proto, target)
    except Exception as exc:  # the converter raises bare RuntimeError/IndexError on odd graphs
        raise UnsupportedModelError(
            f"{origin} uses opset {opset} and the ONNX version converter could not upgrade it to "
            f"{target} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}).",
            f"re-export the model with opset {target} or newer.",
        ) from None
    for before, after in zip(_ranks(proto.graph), _ranks(upgraded.graph), strict=True):
        if before != after:
            raise UnsupportedModelError(
                f"{origin} uses opset {opset}; upgrading it to {target} with the ONNX version converter changes "
                f"the rank of {before[0]!r} from {before[1]} to {after[1]} (e.g. Scan-8's batch axis).",
                f"re-export the model with opset {target} or newer.",
            )
    return upgraded


def _ranks(graph: onnx.GraphProto) -> list[tuple[str, int | None]]:
    values = list(graph.input) + list(graph.output)
    return [
        (v.name, len(v.type.tensor_type.shape.dim) if v.type.tensor_type.HasField("shape") else None) for v in values
    ]


def _name_nodes(graph: onnx.GraphProto) -> None:
    """Names every unnamed node after its first output, so reports and --exclude can refer to it."""
    taken = {node.name for node in graph.node if node.name}
    for index, node in enumerate(graph.node):
        if node.name:
            continue
        base = next((o for o in node.output if o), f"{node.op_type}_{index}")
        name, i = base, 0
        while name in taken:
            i += 1
            name = f"{base}_{i}"
        node.name = name
        taken.add(name)


def _dynamic_dims(graph: onnx.GraphProto) -> None:
    """Makes every non-positive ``dim_value`` of the graph's declared shapes a dynamic dimension.

    Paddle's exporter writes a dynamic batch as ``dim_value: -1`` and some older exporters write
    ``0``; ONNX means a size by ``dim_value``, so such a model would otherwise demand a batch of -1.
    The dimension is given a name (``dim_param``), as exporters that follow the spec write it.
    """
    for group in (graph.input, graph.output, graph.value_info):
        for value in group:
            if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
                continue
            for axis, dim in enumerate(value.type.tensor_type.shape.dim):
                if dim.HasField("dim_value") and dim.dim_value <= 0:
                    dim.Clear()
                    dim.dim_param = f"{value.name}_dim{axis}"


# Attribute defaults that ONNX's shape inference gets wrong when the attribute is absent: it takes
# STFT's onesided as 0 (a two-sided spectrum), where the operator's default and ONNX Runtime are 1.
_DEFAULTS = {"STFT": {"onesided": 1}}


def _explicit_defaults(graph: onnx.GraphProto) -> None:
    """Writes out the spec default of attributes listed in ``_DEFAULTS`` where a node omits them."""
    for node in graph.node:
        for name, value in _DEFAULTS.get(node.op_type, {}).items():
            if node.domain in ("", "ai.onnx") and all(a.name != name for a in node.attribute):
                node.attribute.append(onnx.helper.make_attribute(name, value))


# ONNX Runtime's "Could not find an implementation for X(N)" / "Failed to find kernel for X(N)".
_NO_KERNEL = re.compile(r"(?:implementation|kernel) for (\w+)\((\d+)\)")


class _Serialized:
    """A model proto with its serialized bytes, made once: ``None`` when it is over protobuf's 2 GB."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        self.proto = proto
        self.data = None if _too_large(proto) else proto.SerializeToString()


def _fit_onnxruntime(serialized: _Serialized, origin: str) -> onnx.ModelProto:
    """The model as ONNX Runtime can load it, which qcc needs to calibrate and verify it.

    A model of a newer opset than this ONNX Runtime implements for one of its operators
    (DequantizeLinear-25, RoiAlign-22) is converted down, one opset at a time, to the newest
    opset at which ONNX Runtime loads it, as long as the ONNX version converter knows the way
    (it refuses where an operator's meaning changed). Checked before anything is quantized, so an
    operator without a kernel is named up front, not found when the int8 artifact fails to load.

    Raises:
        UnsupportedModelError: ONNX Runtime cannot load the model at any reachable opset.
    """
    proto = serialized.proto
    if serialized.data is None:
        return proto
    try:
        loadable = serialized.data if proto.ir_version <= MAX_ORT_IR_VERSION else proto
        session(loadable, level="disable", what=origin, quantized=is_quantized_model(proto))
        return proto
    except UnsupportedModelError as error:
        first_error = error
    found = _NO_KERNEL.search(first_error.problem)
    if found is None:
        raise first_error
    opset = _default_opset(proto)
    for target in range(opset - 1, MIN_OPSET - 1, -1):
        try:
            lower = onnx.version_converter.convert_version(proto, target)
            session(lower, level="disable", what=origin)
        except Exception:  # noqa: BLE001 - no way down, or still no kernel: try the next opset
            continue
        logger.info("%s: ONNX Runtime has no %s-%s kernel; converted to opset %d", origin, *found.groups(), target)
        return lower
    import onnxruntime

    op_type, version = found.groups()
    raise UnsupportedModelError(
        f"{origin} uses {op_type} (opset {version}), which ONNX Runtime {onnxruntime.__version__} has no CPU kernel "
        "for with these input types, also at older opsets; qcc runs the float model in ONNX Runtime to calibrate "
        "and verify it.",
        f"replace {op_type} in the exported model, or cut the graph before it with onnx.utils.extract_model.",
    ) from None


def _too_large(proto: onnx.ModelProto) -> bool:
    try:
        return proto.ByteSize() > _MAX_PROTO_BYTES
    except Exception:  # noqa: BLE001 - protobuf cannot even size a message over 2 GB
        return True


def _check(model: _Serialized | str, origin: str) -> None:
    if isinstance(model, _Serialized) and model.data is None:
        return  # the in-memory checker cannot serialize > 2 GB; ORT validates on load
    try:
        check_onnx(model.data if isinstance(model, _Serialized) else model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "validation failed"
        raise ModelLoadError(
            f"{origin} is not a valid ONNX model: {first}", "fix the exporter output, then try again."
        ) from None


def _infer_shapes(serialized: _Serialized, origin: str) -> onnx.ModelProto:
    proto = serialized.proto
    if serialized.data is None:
        logger.warning("%s is larger than 2 GB; skipping ONNX shape inference", origin)
        return proto
    try:
        return onnx.shape_inference.infer_shapes(serialized.data, strict_mode=False, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - inference bugs must not stop a valid model
        logger.warning("shape inference failed on %s (%s); continuing without it", origin, exc)
        return proto


def _check_no_nan_constants(model: ir.Model, origin: str) -> None:
    """NaN in a float constant is never meaningful (unlike -inf masks) and would poison every scale."""
    for name, value in model.graph.initializers.items():
        if value.const_value is None or value.dtype not in (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE):
            continue
        if np.isnan(value.const_value.numpy()).any():
            raise UnsupportedModelError(
                f"constant {name!r} of {origin} contains NaN values.",
                "fix the exported weights (a NaN usually comes from a diverged training run or a bad export).",
            )


def _check_input_types(graph: onnx.GraphProto, origin: str) -> None:
    """Refuses inputs qcc cannot feed: non-tensors, and bfloat16 (ONNX Runtime's Python API cannot take it)."""
    initializers = {t.name for t in graph.initializer}
    for value in graph.input:
        if value.name in initializers:
            continue
        if not value.type.HasField("tensor_type"):
            raise UnsupportedModelError(
                f"input {value.name!r} of {origin} is of type {value.type.WhichOneof('value').removesuffix('_type')}"
                ", not a tensor; qcc's calibration samples are tensors.",
                "export the model with plain tensor inputs (an optional or sequence input can be unwrapped inside).",
            )
        if value.type.tensor_type.elem_type == onnx.TensorProto.BFLOAT16:
            raise UnsupportedModelError(
                f"input {value.name!r} of {origin} is bfloat16; ONNX Runtime's Python API cannot take bfloat16 "
                "arrays, and qcc runs the float model there to calibrate and verify it.",
                "export the model with float32 or float16 inputs (cast to bfloat16 inside the graph if needed).",
            )


def _check_quantizable(model: ir.Model, origin: str) -> None:
    """Refuses a model without any float tensor: an integer-only or already-quantized graph.

    A float input is enough (ArgMax, Shape, IsNaN of a float tensor): such a model compiles with
    nothing quantized, and the report says so.
    """
    if any(is_float(v) for v in model.graph.initializers.values()):
        return
    if any(is_float(v) for v in model.graph.inputs):
        return
    if any(is_float(v) for node in model.graph for v in node.outputs):
        return
    raise UnsupportedModelError(
        f"{origin} has no float tensors, so there is nothing to quantize.",
        "pass the float (fp32/fp16) model, not an already-quantized or integer-only one.",
    )
