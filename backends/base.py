"""What every target is: a declarative spec plus an emitter and a verifier.

The spec, :class:`qcc.target.TargetSpec`, is data in the core (the passes read it to plan and
annotate); a :class:`Backend` pairs one with ``emit()``, the only code that turns annotations into
an artifact, and ``verify()``, which runs the artifact in its runtime.
"""

from __future__ import annotations

import abc
import dataclasses
import os
import tempfile
from typing import TYPE_CHECKING, Any

import onnx
import onnx_ir as ir

from qcc.io import copy_from, write_atomic, write_files_atomic
from qcc.target import TargetSpec

if TYPE_CHECKING:
    from qcc.context import PassContext
    from qcc.data import Feed


@dataclasses.dataclass
class Artifact:
    """What a backend produced: the bytes to write, and the ONNX model when it is one.

    ``simulation`` is the ONNX QDQ model carrying exactly the artifact's quantization, for targets
    whose artifact is not ONNX (``tflite``): ``verify()`` compares the runtime against it.

    An ONNX artifact too large for one protobuf (over ``LARGE_MODEL_BYTES`` of tensors) has no
    ``data``: it lives in ``folder`` as ``model.onnx`` plus ``model.onnx.data``, and ``proto`` is
    its graph without the external tensors' data.
    """

    data: bytes | None
    suffix: str
    proto: onnx.ModelProto | None = None
    simulation: onnx.ModelProto | None = None
    folder: tempfile.TemporaryDirectory | None = None

    @property
    def runtime_model(self) -> bytes | str:
        """What ONNX Runtime loads: the bytes, or the path of the model file with external data."""
        return self.data if self.data is not None else os.path.join(self.folder.name, EXTERNAL_MODEL)

    @property
    def size(self) -> int:
        """Bytes of the artifact, external data included."""
        if self.data is not None:
            return len(self.data)
        return sum(os.path.getsize(os.path.join(self.folder.name, f)) for f in os.listdir(self.folder.name))

    def save(self, path: str | os.PathLike) -> None:
        """Writes the artifact atomically; with external data, also ``<path>.data`` beside it.

        Raises:
            OutputError: a file cannot be written.
        """
        if self.data is not None:
            write_atomic(path, self.data)
            return
        path = os.fspath(path)
        data_name = f"{os.path.basename(path)}.data"
        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        for tensor in onnx.external_data_helper._get_all_tensors(proto):
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                for entry in tensor.external_data:
                    if entry.key == "location":
                        entry.value = data_name
        data_path = os.path.join(os.path.dirname(os.path.abspath(path)), data_name)
        source = os.path.join(self.folder.name, f"{EXTERNAL_MODEL}.data")
        model = proto.SerializeToString()
        # Both complete before either is renamed; the data first, so the model never points at nothing.
        write_files_atomic([(data_path, copy_from(source)), (path, lambda f: f.write(model))])


EXTERNAL_MODEL = "model.onnx"


class Backend(abc.ABC):
    """A target: its spec, an emitter that never mutates its input, and a real-runtime verifier."""

    spec: TargetSpec

    @abc.abstractmethod
    def emit(self, model: ir.Model, ctx: PassContext) -> Artifact:
        """Materializes the annotated model as this target's artifact.

        Args:
            model: the annotated IR after the pipeline; not modified.
            ctx: the compile context.

        Returns:
            The artifact.

        Raises:
            BackendError: a node cannot be expressed for this target (the message names it).
        """

    @abc.abstractmethod
    def verify(self, artifact: Artifact, reference: ir.Model, samples: list[Feed]) -> dict[str, Any]:
        """Runs the artifact in its real runtime on ``samples`` and compares with the float model.

        Returns:
            A JSON-serializable dict; ``ok`` says whether every check passed.
        """
