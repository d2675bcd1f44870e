"""Typed quantization annotations on onnx-ir values and nodes.

Passes record their decisions on the IR itself, under ``qcc.*`` keys of ``Value.meta`` and
``Node.meta``; this module is the only code that reads or writes those keys. Backends read the
final annotations and materialize them (Q/DQ nodes, flatbuffer quantization tables).

Lifecycle of a tensor's quantization (after PPQ):

* ``PLANNED``: the plan pass decided the tensor is quantized, with which dtype/scheme/axis.
* ``CALIBRATED``: a range is known (weights from their values, activations from calibration).
* ``FINAL``: scale and zero point are fixed and consistent with every shared-scale constraint.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx_ir as ir

from qcc.quantmath import fake_quantize

_TENSOR_KEY = "qcc.quant"
_RANGE_KEY = "qcc.range"
_NODE_KEY = "qcc.decision"
_MIXED_KEY = "qcc.mixed_precision"
_HISTOGRAM_KEY = "qcc.histogram"
_CHANNEL_MEAN_KEY = "qcc.channel_mean"
_FLOAT_VALUE_KEY = "qcc.float_value"
_MOMENTS_KEY = "qcc.input_moments"
_ROUNDING_KEY = "qcc.weight_rounding"
_SMOOTHING_KEY = "qcc.smoothing"
_REFIT_KEY = "qcc.refit"
_REPLAN_KEY = "qcc.replan"
# The reason every node kept float by the mixed-precision pass starts with.
MIXED_REASON = "kept float by mixed precision (--tolerance)"
# The reason of every node left as an already-quantized (QDQ) model quantized it.
ALREADY_QUANTIZED_REASON = "already quantized: kept with the model's own Q/DQ and scales"


class Role(str, enum.Enum):
    """What a quantized tensor is to the nodes that consume it."""

    ACTIVATION = "activation"
    WEIGHT = "weight"
    BIAS = "bias"


class Stage(str, enum.Enum):
    """How far a tensor's quantization parameters have got (see module docstring)."""

    PLANNED = "planned"
    CALIBRATED = "calibrated"
    FINAL = "final"


class Decision(str, enum.Enum):
    """What a node becomes in the artifact."""

    INT8 = "int8"  # runs on quantized inputs/outputs
    WEIGHT_ONLY = "weight-only"  # only its weight is quantized (int4 blocks); it computes in float
    FUSED = "fused"  # absorbed into its producer's quantized output (Relu/Clip)
    FLOAT = "float"  # stays float; the reason says why


@dataclasses.dataclass
class TensorQuant:
    """Quantization of one tensor.

    Attributes:
        role: activation, weight or bias.
        dtype: the integer type it is stored in (``ir.DataType.UINT8``, ``INT8``, ``INT32``).
        symmetric: zero point fixed at 0 (the dtype's centre for unsigned types is not used).
        axis: per-channel axis, or None for per-tensor.
        stage: lifecycle stage.
        scale: float32 array, shape () per-tensor or (C,) per-channel; None before FINAL.
        zero_point: array of ``dtype``, same shape as scale; None before FINAL.
        shared_with: name of the value whose parameters this one must equal (shared-scale ops and
            absorbed activations), or None.
        block_size: for block quantization, the block length along ``axis``; the scale then has
            the tensor's shape with that axis divided by the block size.
    """

    role: Role
    dtype: ir.DataType
    symmetric: bool
    axis: int | None = None
    stage: Stage = Stage.PLANNED
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    shared_with: str | None = None
    block_size: int | None = None

    def grid_values(self, array: np.ndarray) -> np.ndarray:
        """What ``array`` stands for on this tensor's grid, ``DQ(Q(array))`` as float32 (per
        channel or per tensor; not blocks)."""
        axis = self.axis if np.ndim(self.scale) == 1 else None
        return fake_quantize(array, self.scale, self.zero_point, axis, self.dtype)


@dataclasses.dataclass
class TensorRange:
    """Observed value range of a tensor (per-tensor), from calibration or constant values."""

    min: float
    max: float


@dataclasses.dataclass(frozen=True)
class NodeDecision:
    """The plan's decision for one node, and why."""

    decision: Decision
    reason: str


def get_quant(value: ir.Value) -> TensorQuant | None:
    """Returns the tensor's quantization annotation, or None if it stays float."""
    return value.meta.get(_TENSOR_KEY)


def set_quant(value: ir.Value, quant: TensorQuant | None) -> None:
    """Sets (or with None, removes) the tensor's quantization annotation."""
    if quant is None:
        value.meta.pop(_TENSOR_KEY, None)
    else:
        value.meta[_TENSOR_KEY] = quant


def get_range(value: ir.Value) -> TensorRange | None:
    """Returns the observed range of the tensor, or None if it was not calibrated."""
    return value.meta.get(_RANGE_KEY)


def set_range(value: ir.Value, value_range: TensorRange) -> None:
    """Records the observed range of the tensor."""
    value.meta[_RANGE_KEY] = value_range


def get_histogram(value: ir.Value) -> object | None:
    """Returns the calibration histogram (``passes._histogram.TensorHistogram``) kept on the
    tensor for a later choice of its clip range, or None."""
    return value.meta.get(_HISTOGRAM_KEY)


def set_histogram(value: ir.Value, histogram: object) -> None:
    """Keeps the tensor's calibration histogram on it (for ``passes/_clip_search.py``: ranges by
    other methods, per tensor with ``--method auto`` or for the whole model)."""
    value.meta[_HISTOGRAM_KEY] = histogram


def get_channel_mean(value: ir.Value) -> tuple[np.ndarray, tuple[int, ...] | None] | None:
    """Returns the tensor's per-channel mean over the calibration data and the shape it had
    (the last sample's), if calibration kept them."""
    return value.meta.get(_CHANNEL_MEAN_KEY)


def set_channel_mean(value: ir.Value, mean: np.ndarray, shape: tuple[int, ...] | None = None) -> None:
    """Records the tensor's per-channel mean over the calibration data, and a shape it had
    (bias correction)."""
    value.meta[_CHANNEL_MEAN_KEY] = (mean, shape)


def set_float_value(value: ir.Value, array: np.ndarray) -> None:
    """Records what a constant held in the float model before a pass corrected it for the
    quantized model (bias correction); ``float_twin`` puts it back."""
    value.meta.setdefault(_FLOAT_VALUE_KEY, array)


def get_float_value(value: ir.Value) -> np.ndarray | None:
    """What the constant held in the float model, if a pass changed it (see ``set_float_value``)."""
    return value.meta.get(_FLOAT_VALUE_KEY)


def float_twin(model: ir.Model) -> ir.Model:
    """A copy of the model computing the float model's function: corrected constants restored."""
    twin = model.clone()
    for value in twin.graph.initializers.values():
        original = get_float_value(value)
        if original is not None:
            value.const_value = ir.Tensor(original, name=value.name)
    return twin


def get_input_moments(node: ir.Node) -> object | None:
    """Returns the second moment of what the node's weight multiplies on the calibration data
    (``passes._input_moments.InputMoments``), if calibration kept it."""
    return node.meta.get(_MOMENTS_KEY)


def set_input_moments(node: ir.Node, moments: object) -> None:
    """Keeps the node's input moments on it for the weight rounding (``passes/weight_rounding.py``)."""
    node.meta[_MOMENTS_KEY] = moments


@dataclasses.dataclass(frozen=True)
class Rounding:
    """How a node's weight was rounded, with the output error each rounding gives on the
    calibration inputs (mean squared, per output row): ``error`` for the one used, ``nearest`` for
    plain rounding; ``reason``: why a layer was rounded to nearest."""

    method: str
    error: float
    nearest: float
    reason: str = ""


def get_rounding(node: ir.Node) -> Rounding | None:
    """Returns how the weight rounding pass rounded the node's weight, or None."""
    return node.meta.get(_ROUNDING_KEY)


def set_rounding(node: ir.Node, rounding: Rounding) -> None:
    """Records how the node's weight was rounded."""
    node.meta[_ROUNDING_KEY] = rounding


@dataclasses.dataclass(frozen=True)
class Smoothing:
    """How SmoothQuant scaled a MatMul/Gemm's input channels (``passes/smooth_activations.py``).

    Attributes:
        tensor: the input tensor, as the float model names it.
        alpha: the migration strength chosen (0: not smoothed).
        error: the layers' relative output error on the calibration rows with it.
        unsmoothed: the same error without smoothing.
        folded_into: where ``1/s`` went: ``LayerNormalization``/``Mul``/``Div`` (the producer's
            constants), ``Mul (inserted)``, or "" when not smoothed.
        reason: why the input was not smoothed, or "".
    """

    tensor: str
    alpha: float
    error: float
    unsmoothed: float
    folded_into: str = ""
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class Refit:
    """What the refit pass did with a layer's weights (``passes/refit_weights.py``).

    Attributes:
        choice: ``kept`` (its levels stay) or the damping of the fit used (``d=0.1``).
        error: the chosen weights' output error on held-out calibration samples (two folds).
        kept_error: the same error with the levels it had.
        reason: why the layer kept its levels, or "".
    """

    choice: str
    error: float
    kept_error: float
    reason: str = ""


def get_refit(node: ir.Node) -> Refit | None:
    """Returns what the refit pass did with the node's weights, or None."""
    return node.meta.get(_REFIT_KEY)


def set_refit(node: ir.Node, refit: Refit) -> None:
    """Records what the refit pass did with the node's weights."""
    node.meta[_REFIT_KEY] = refit


def get_smoothing(node: ir.Node) -> Smoothing | None:
    """Returns how the smoothing pass treated the node's input, or None."""
    return node.meta.get(_SMOOTHING_KEY)


def set_smoothing(node: ir.Node, smoothing: Smoothing) -> None:
    """Records how the node's input was smoothed (or why not)."""
    node.meta[_SMOOTHING_KEY] = smoothing


def get_decision(node: ir.Node) -> NodeDecision | None:
    """Returns the plan's decision for the node, or None before planning."""
    return node.meta.get(_NODE_KEY)


def set_decision(node: ir.Node, decision: Decision, reason: str) -> None:
    """Records the plan's decision for the node."""
    node.meta[_NODE_KEY] = NodeDecision(decision, reason)


def is_quantized(value: ir.Value | None) -> bool:
    """True if the value carries a quantization annotation."""
    return value is not None and _TENSOR_KEY in value.meta


def quantized_values(graph: ir.Graph) -> list[ir.Value]:
    """Returns every annotated value of the graph: inputs, initializers and node outputs."""
    seen: dict[int, ir.Value] = {}
    for value in [*graph.inputs, *graph.initializers.values()]:
        if is_quantized(value):
            seen[id(value)] = value
    for node in graph:
        for value in [*node.inputs, *node.outputs]:
            if is_quantized(value):
                seen[id(value)] = value
    return list(seen.values())


def clear_annotations(graph: ir.Graph) -> None:
    """Removes every qcc annotation from the graph's nodes and values (before planning again)."""
    tensor_keys = (_TENSOR_KEY, _RANGE_KEY, _HISTOGRAM_KEY, _CHANNEL_MEAN_KEY)
    node_keys = (_NODE_KEY, _MOMENTS_KEY, _ROUNDING_KEY, _REFIT_KEY)
    # ``del`` where present: the metadata store's ``pop`` of an absent key raises and catches a
    # KeyError, and mixed precision clears a graph once per candidate plan.
    for value in [*graph.inputs, *graph.initializers.values()]:
        _drop(value.meta, tensor_keys)
    for node in graph:
        _drop(node.meta, node_keys)
        for value in node.outputs:
            _drop(value.meta, tensor_keys)


def _drop(meta, keys: tuple[str, ...]) -> None:
    for key in keys:
        if key in meta:
            del meta[key]


@dataclasses.dataclass
class MixedPrecision:
    """What the mixed-precision pass measured on the simulated model (see passes/mixed_precision.py).

    Attributes:
        metric: ``cosine`` (1 - cosine similarity) or ``relative`` (relative L2 error).
        bound: the tolerance: the largest error allowed on any output.
        error: the worst output's error with every quantized node quantized, as planned.
        outputs: each output's error.
        evaluations: simulated runs the search took.
        samples: calibration samples each run used.
        search: how the float search ended, when one ran: ``stopped`` (``bound``: the simulated
            error reached the target; ``no_gain``: no unit left closes ``MIN_GAIN`` of the gap;
            ``budget``: the units left would pass ``MAX_FLOAT_SHARE``; ``latency``: they would pass
            ``--latency-budget``; ``exhausted``: nothing is left to float) and ``left``: the most
            helpful units it left int8 (those whose last measurement lowered the error at all),
            each with its ``tensor``, ``nodes`` and measured ``effect`` (how much floating it
            lowered the error) and, priced, ``cost_ms``; priced, ``latency``: the prices of the
            float nodes, the predicted time, the units pruned and the ``path`` (float nodes,
            simulated error, predicted ms after each unit taken).
    """

    metric: str
    bound: float
    error: float
    outputs: dict[str, float]
    evaluations: int
    samples: int
    search: dict[str, Any] | None = None


def get_mixed_precision(graph: ir.Graph) -> MixedPrecision | None:
    """Returns the mixed-precision pass's measurement, or None if it did not run."""
    return graph.meta.get(_MIXED_KEY)


def set_mixed_precision(graph: ir.Graph, measured: MixedPrecision) -> None:
    """Records the mixed-precision pass's measurement."""
    graph.meta[_MIXED_KEY] = measured


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a compile settled beyond its options, which another compile can start from instead of
    searching again (``driver._refit_plan`` compiles the chosen candidate's plan with the refit).

    Attributes:
        keep_float: node name -> why it is float (non-finite tensors, a target rule that needed
            data, mixed precision); the nodes the plan would otherwise quantize.
        tensor_methods: tensor name -> clip method chosen by ``--method auto``'s search (the rest
            minmax); None where the search has not run.
    """

    keep_float: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tensor_methods: Mapping[str, str] | None = None
    search: Mapping[str, Any] | None = None  # how the float search ended (``MixedPrecision.search``)

    def merged(self, replan: Replan) -> Plan:
        """This plan with a pass's re-plan request applied."""
        methods = self.tensor_methods
        if replan.methods is not None:
            methods = {**(methods or {}), **replan.methods}
        search = replan.search if replan.search is not None else self.search
        return Plan({**self.keep_float, **replan.keep_float}, methods, search)


@dataclasses.dataclass(frozen=True)
class Replan:
    """A pass's request to plan the model again: the pipeline stops after that pass, and the driver
    starts over from the float model with these nodes float (re-planning is data, not an exception).

    Attributes:
        keep_float: node name -> why it must be float.
        methods: tensor name -> clip method (the clip search's choice); None: not a clip search.
        nonfinite: tensors that took NaN/Inf in calibration (``keep_float`` holds their readers and
            writers); what the driver reports if planning does not settle.
        search: how mixed precision's search ended (``MixedPrecision.search``): the re-planned
            compile only measures, and reports it.
    """

    keep_float: Mapping[str, str]
    methods: Mapping[str, str] | None = None
    nonfinite: tuple[str, ...] = ()
    search: Mapping[str, Any] | None = None  # the mixed-precision search's ending, for the report

    def describe(self) -> str:
        """One line for the log: what the next plan changes."""
        what = f"{len(self.keep_float)} node(s) float: {', '.join(list(self.keep_float)[:5])}"
        if self.methods:
            what += f"; {len(self.methods)} tensor(s) with another clip range"
        return what


def request_replan(graph: ir.Graph, replan: Replan) -> None:
    """Asks for the model to be planned again (see :class:`Replan`)."""
    graph.meta[_REPLAN_KEY] = replan


def pending_replan(graph: ir.Graph) -> Replan | None:
    """The re-plan a pass asked for, if any."""
    return graph.meta.get(_REPLAN_KEY)
