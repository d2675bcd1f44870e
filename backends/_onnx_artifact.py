"""Serialize a materialized QDQ model (``qcc.qdq``) as a checked ONNX artifact (``ort``, ``trt``)."""

from __future__ import annotations

import tempfile

import onnx
import onnx_ir as ir

from qcc.backends.base import EXTERNAL_MODEL, Artifact
from qcc.errors import BackendError
from qcc.irutils import check_onnx
from qcc.runtime import MAX_ORT_IR_VERSION, is_large, save_external


def onnx_artifact(model: ir.Model, target: str, suffix: str) -> Artifact:
    """Serializes a materialized QDQ model for ONNX Runtime-compatible consumers, checked.

    A model with more than ``LARGE_MODEL_BYTES`` of tensors is written to a temporary folder with
    external data instead of one protobuf (see :class:`Artifact`).

    Raises:
        BackendError: the model fails the ONNX checker (a qcc bug; the message says so).
    """
    model.producer_name = "qcc"
    # The IR version the opsets need (opset 21 -> IR 10), never below what the model had.
    opsets = [onnx.helper.make_opsetid(domain, version) for domain, version in model.opset_imports.items()]
    needed = onnx.helper.find_min_ir_version_for(opsets, ignore_unknown=True)
    model.ir_version = max(min(model.ir_version, MAX_ORT_IR_VERSION), needed)
    if is_large(model):
        folder = tempfile.TemporaryDirectory(prefix="qcc-artifact-")
        path = save_external(model, folder.name, EXTERNAL_MODEL)
        _checked(target, lambda: check_onnx(path))
        return Artifact(data=None, suffix=suffix, proto=onnx.load(path, load_external_data=False), folder=folder)
    proto = ir.serde.serialize_model(model)
    proto.ir_version = model.ir_version
    _checked(target, lambda: check_onnx(proto))
    return Artifact(data=proto.SerializeToString(), suffix=suffix, proto=proto)


def _checked(target: str, check) -> None:
    try:
        check()
    except onnx.checker.ValidationError as exc:
        raise BackendError(
            f"the emitted {target} model failed the ONNX checker: {str(exc).splitlines()[0]}",
            "this is a qcc bug; please report it with the model, and --exclude the named node meanwhile.",
        ) from None
