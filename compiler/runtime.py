"""ONNX Runtime sessions for calibration, verification and benchmarks.

One place sets the session options qcc relies on and turns ONNX Runtime's failures into
:class:`~qcc.errors.QccError` messages that say which model could not be loaded or run.

A model whose tensors do not fit one protobuf (2 GB) never becomes one. For an onnx-ir model that
large, tensors still in the user's external data files stay there: the graph is written to a
temporary folder next to hard links of those files, and ONNX Runtime memory-maps them (no copy;
it refuses symbolic links that leave the model's folder). Tensors qcc made, or all of them when the
files cannot be linked (another file system), reach ONNX Runtime from memory
(``add_external_initializers``, which copies them once). Weight prepacking, which would copy every
MatMul weight again, is off for such sessions.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from qcc.errors import UnsupportedModelError

# onnx >= 1.23 writes IR version 14 by default; onnxruntime 1.31 loads up to 10 reliably with
# every opset qcc emits (<= 21). The graph content does not depend on the IR version here.
MAX_ORT_IR_VERSION = 10
# Tensor bytes above which a model is kept out of a single protobuf (whose limit is 2 GiB, graph
# included): it is written with external data instead.
LARGE_MODEL_BYTES = 1_800_000_000
# Tensors at least this large go to the external data file; smaller ones (scales, shapes) stay
# inline, so a model loaded without its external data still has them.
EXTERNAL_TENSOR_BYTES = 1 << 20

_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def model_bytes(model: onnx.ModelProto) -> bytes:
    """Serializes a model with an IR version ONNX Runtime accepts (the caller's proto is unchanged)."""
    if model.ir_version <= MAX_ORT_IR_VERSION:
        return model.SerializeToString()
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.ir_version = MAX_ORT_IR_VERSION
    return copy.SerializeToString()


def tensor_bytes(model: ir.Model) -> int:
    """Bytes held by the model's initializers (main graph), without reading external data."""
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


def is_large(model: ir.Model) -> bool:
    """True if the model must be stored with external data (see ``LARGE_MODEL_BYTES``)."""
    return tensor_bytes(model) > LARGE_MODEL_BYTES


def save_external(model: ir.Model, folder: str, name: str = "model.onnx") -> str:
    """Writes the model to ``folder/name`` with its large tensors in ``name + ".data"``.

    Returns:
        The model file's path.
    """
    path = os.path.join(folder, name)
    ir.save(model, path, external_data=f"{name}.data", size_threshold_bytes=EXTERNAL_TENSOR_BYTES)
    return path


def session(
    model: onnx.ModelProto | bytes | ir.Model | str,
    *,
    threads: int = 0,
    level: str = "all",
    optimized_path: str | None = None,
    what: str = "the model",
    extra_outputs: Sequence[str] | Mapping[str, int] = (),
) -> ort.InferenceSession:
    """Creates a CPU inference session.

    Args:
        model: the model, its serialized bytes, or the path of a model file.
        threads: intra-op threads (0: ONNX Runtime's default).
        level: graph optimization level: disable, basic, extended or all.
        optimized_path: where ONNX Runtime saves the optimized graph, if given.
        what: how to name the model in an error.
        extra_outputs: tensors to add as outputs: float32 names (calibration), or name -> ONNX
            element type (integer tensors); needs a model, not bytes.

    Raises:
        UnsupportedModelError: ONNX Runtime cannot load the model.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = _LEVELS[level]
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if optimized_path is not None:
        options.optimized_model_filepath = optimized_path
    arrays: list[np.ndarray] = []
    folder = None
    if isinstance(model, ir.Model) and is_large(model):
        folder = tempfile.TemporaryDirectory(prefix="qcc-session-")
        linked = _link_external_files(model, folder.name)
        proto, names, arrays = _without_large_tensors(model, keep=linked)
        options.add_external_initializers(names, [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays])
        options.add_session_config_entry("session.disable_prepacking", "1")
        data = os.path.join(folder.name, "model.onnx")
        with open(data, "wb") as f:
            f.write(model_bytes(_with_outputs(proto, extra_outputs)))
    elif isinstance(model, ir.Model):
        data = model_bytes(_with_outputs(ir.serde.serialize_model(model), extra_outputs))
    elif isinstance(model, onnx.ModelProto):
        data = model_bytes(_with_outputs(model, extra_outputs))
    else:
        data = model
    try:
        created = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        created.qcc_arrays = arrays  # ONNX Runtime reads the external initializers from these
        created.qcc_folder = folder  # and the linked external data files from here
        return created
    except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedModelError(
            f"ONNX Runtime cannot load {what}: {first}",
            "check that the float model runs in onnxruntime; qcc calibrates by running it there.",
        ) from None


def _with_outputs(proto: onnx.ModelProto, outputs: Sequence[str] | Mapping[str, int]) -> onnx.ModelProto:
    """The proto with the named tensors as outputs too (float32, or name -> ONNX element type)."""
    types = outputs if isinstance(outputs, Mapping) else dict.fromkeys(outputs, onnx.TensorProto.FLOAT)
    existing = {o.name for o in proto.graph.output}
    missing = [name for name in types if name not in existing]
    if not missing:
        return proto
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    for name in missing:
        copy.graph.output.append(onnx.helper.make_tensor_value_info(name, types[name], None))
    return copy


def _link_external_files(model: ir.Model, folder: str) -> set[str]:
    """Hard-links the external data files of the model's initializers into ``folder`` under their
    locations; returns the locations linked (none when the file system refuses)."""
    linked: set[str] = set()
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if not isinstance(tensor, ir.ExternalTensor) or tensor.location in linked:
            continue
        target = os.path.join(folder, tensor.location)
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.link(tensor.path, target)
        except OSError:
            return set()
        linked.add(tensor.location)
    return linked


def _without_large_tensors(
    model: ir.Model, keep: set[str] = frozenset()
) -> tuple[onnx.ModelProto, list[str], list[np.ndarray]]:
    """Serializes the model with every tensor of ``EXTERNAL_TENSOR_BYTES`` or more marked external.

    External tensors whose file location is in ``keep`` keep their reference to that file.

    Returns:
        The proto, and the names and numpy arrays of the tensors left out.
    """
    large = [
        v for v in model.graph.initializers.values()
        if v.const_value is not None and v.const_value.nbytes >= EXTERNAL_TENSOR_BYTES
        and not (isinstance(v.const_value, ir.ExternalTensor) and v.const_value.location in keep)
    ]
    tensors = [v.const_value for v in large]
    try:
        for value, tensor in zip(large, tensors, strict=True):
            value.const_value = ir.ExternalTensor(
                "qcc-in-memory", 0, tensor.nbytes, tensor.dtype, shape=tensor.shape, name=value.name
            )
        proto = ir.serde.serialize_model(model)
    finally:
        for value, tensor in zip(large, tensors, strict=True):
            value.const_value = tensor
    arrays = [np.ascontiguousarray(t.numpy()) for t in tensors]
    return proto, [v.name for v in large], arrays
