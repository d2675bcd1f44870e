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

Every session of a compile is made here, so this is where a compile's cost is counted: the driver
makes a :class:`CostCounter` current for one top-level compile (:func:`counting_cost`), and
:func:`session` counts each session it creates and each ``run`` of it, by the stage that was
current (the driver's load, emit and verify, each pass of the pipeline) and by whether the model
holds quantize/dequantize nodes (a simulation or an artifact) or not (the float model). The counter
lives in a context variable that :func:`counting_cost` resets, so nothing carries over from one
compile to the next; outside a compile nothing is counted and sessions are left as ONNX Runtime
makes them. The report's ``cost`` section is :meth:`CostCounter.report`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

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

# Parts of the op types that make a graph a quantized one (a simulation or an artifact) for the cost
# counts: (Dequantize|DynamicQuantize|Quantize)Linear, ONNX Runtime's QLinear* and *Integer kernels.
_QUANTIZED_OPS = ("QuantizeLinear", "QLinear", "Integer")

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
    disabled_optimizers: Sequence[str] = (),
    quantized: bool | None = None,
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
        disabled_optimizers: ONNX Runtime graph transformers not to run (by name).
        quantized: whether the model is a quantized one, for the cost count (None: read from the
            model; serialized bytes are searched, which the caller holding the proto can spare).

    Raises:
        UnsupportedModelError: ONNX Runtime cannot load the model.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = _LEVELS[level]
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Between its runs a compile computes in numpy (moments, sums, fits); ONNX Runtime's idle workers
    # spin by default and take those cores: a refit's sums 2.3x slower on 2 cores. Values unchanged.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
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
        created = ort.InferenceSession(
            data, options, providers=["CPUExecutionProvider"], disabled_optimizers=list(disabled_optimizers)
        )
        created.qcc_arrays = arrays  # ONNX Runtime reads the external initializers from these
        created.qcc_folder = folder  # and the linked external data files from here
    except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedModelError(
            f"ONNX Runtime cannot load {what}: {first}",
            "check that the float model runs in onnxruntime; qcc calibrates by running it there.",
        ) from None
    cost = _current.get()
    if cost is not None:
        cost.count(created, quantized=is_quantized_model(model) if quantized is None else quantized)
    return created


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
        v
        for v in model.graph.initializers.values()
        if v.const_value is not None
        and v.const_value.nbytes >= EXTERNAL_TENSOR_BYTES
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


@dataclasses.dataclass
class CompileCost:
    """One compile inside a top-level compile: the one asked for, or a candidate a selection made.

    Attributes:
        why: the selections that made it, outermost first, joined by ``/`` (``requested``: the
            compile of the options as given; see ``qcc.report``'s ``cost`` section).
        options: the options that tell it from the other compiles (method, rounding, ...).
        pipeline_runs: the pass pipeline's runs, float rewrites included.
        replans: runs of the annotation passes alone, on a model the rewrites already ran on (a
            pass asked to plan again, or an earlier compile of the call rewrote it alike).
        seconds: from loading the model to the report, without the compiles it then compared.
    """

    why: str
    options: dict[str, Any]
    pipeline_runs: int = 0
    replans: int = 0
    seconds: float = 0.0


@dataclasses.dataclass
class StageCost:
    """What one stage (load, a pass, emit, verify) cost over every compile of a top-level compile."""

    seconds: float = 0.0
    sessions: int = 0
    float_model_runs: int = 0
    quantized_model_runs: int = 0
    simulation_runs: int = 0
    litert_runs: int = 0


class CostCounter:
    """Counts what one top-level compile cost: its compiles, pipeline runs, ONNX Runtime sessions and
    runs, simulation runs and seconds, by stage. Made current by :func:`counting_cost`."""

    def __init__(self) -> None:
        self.compiles: list[CompileCost] = []
        self.stages: dict[str, StageCost] = {}
        self._lock = threading.Lock()  # sessions may run on several threads at once (a simulation)
        self._stage = "other"  # where sessions made outside a named stage are counted
        self._why: list[str] = []
        self._start = time.perf_counter()

    def begin_compile(self, options: dict[str, Any]) -> CompileCost:
        """Records a compile, made for the selections now open (:meth:`selection`), and returns it."""
        compile_ = CompileCost("/".join(self._why) or "requested", options)
        self.compiles.append(compile_)
        return compile_

    @contextlib.contextmanager
    def selection(self, why: str) -> Iterator[None]:
        """Marks the compiles made inside as candidates of the selection ``why``."""
        self._why.append(why)
        try:
            yield
        finally:
            self._why.pop()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Counts the sessions, runs and seconds inside as the stage ``name``'s."""
        previous, self._stage = self._stage, name
        start = time.perf_counter()
        try:
            yield
        finally:
            self._current_stage().seconds += time.perf_counter() - start
            self._stage = previous

    def count(self, created: ort.InferenceSession, *, quantized: bool) -> None:
        """Counts a new session, and each of its runs from now on (its class becomes a subclass whose
        ``run`` counts: a wrapper stored on the session would make a reference cycle, keeping the
        session and its folder of hard links to the user's external data, which the ONNX checker
        then refuses to load, alive until a garbage collection)."""
        self._current_stage().sessions += 1
        created.qcc_cost = self
        created.qcc_run_field = "quantized_model_runs" if quantized else "float_model_runs"
        created.__class__ = _counted_class(type(created))

    def count_run(self, field: str) -> None:
        """Counts one run of a session, as ``field``, in the current stage."""
        with self._lock:
            stage = self._current_stage()
            setattr(stage, field, getattr(stage, field) + 1)

    def count_simulation(self) -> None:
        """Counts one run of a simulation (one candidate scored on its samples)."""
        self._current_stage().simulation_runs += 1

    def report(self) -> dict[str, Any]:
        """The report's ``cost`` section (documented in ``qcc.report``)."""
        fields = [f.name for f in dataclasses.fields(StageCost) if f.name != "seconds"]  # the counts, in order
        totals = {f: sum(getattr(s, f) for s in self.stages.values()) for f in fields}
        return {
            "pipeline_runs": sum(c.pipeline_runs for c in self.compiles),
            "replans": sum(c.replans for c in self.compiles),
            "compiles": [
                {
                    "why": c.why,
                    **c.options,
                    "pipeline_runs": c.pipeline_runs,
                    "replans": c.replans,
                    "seconds": round(c.seconds, 4),
                }
                for c in self.compiles
            ],
            **totals,
            "seconds": {
                **{name: round(s.seconds, 4) for name, s in self.stages.items() if name != "other"},
                "total": round(time.perf_counter() - self._start, 4),
            },
            "stages": {
                name: {f: getattr(s, f) for f in fields}
                for name, s in self.stages.items()
                if any(getattr(s, f) for f in fields)
            },
        }

    def _current_stage(self) -> StageCost:
        return self.stages.setdefault(self._stage, StageCost())


@functools.cache
def _counted_class(base: type) -> type:
    """The subclass of a session class whose ``run`` is counted by the session's ``qcc_cost``."""

    def run(self, *args: Any, **kwargs: Any) -> Any:
        self.qcc_cost.count_run(self.qcc_run_field)
        return base.run(self, *args, **kwargs)

    return type(f"Counted{base.__name__}", (base,), {"run": run})


_current: contextvars.ContextVar[CostCounter | None] = contextvars.ContextVar("qcc_cost", default=None)


@contextlib.contextmanager
def counting_cost() -> Iterator[CostCounter]:
    """Makes a new :class:`CostCounter` current inside; the one before (if any) after."""
    counter = CostCounter()
    token = _current.set(counter)
    try:
        yield counter
    finally:
        _current.reset(token)


def current_cost() -> CostCounter | None:
    """The counter of the compile running now, or None outside a compile."""
    return _current.get()


def cost_stage(name: str) -> contextlib.AbstractContextManager[None]:
    """:meth:`CostCounter.stage` of the current counter; does nothing outside a compile."""
    counter = _current.get()
    return counter.stage(name) if counter is not None else contextlib.nullcontext()


def is_quantized_model(model: onnx.ModelProto | bytes | ir.Model | str) -> bool:
    """True if the model's main graph has a quantize, dequantize or integer node (``_QUANTIZED_OPS``);
    serialized bytes are searched for those op type names."""
    if isinstance(model, ir.Model):
        op_types = {node.op_type for node in model.graph}
    elif isinstance(model, onnx.ModelProto):
        op_types = {node.op_type for node in model.graph.node}
    elif isinstance(model, str):
        op_types = {node.op_type for node in onnx.load(model, load_external_data=False).graph.node}
    else:
        return any(marker.encode() in model for marker in _QUANTIZED_OPS)
    return any(marker in op_type for op_type in op_types for marker in _QUANTIZED_OPS)
