"""Dynamic shapes for the TFLite writer: which dimensions are dynamic, and what may fold.

TFLite tensors carry a static ``shape`` and a ``shape_signature`` with ``-1`` where a dimension
is dynamic; after ``resize_tensor_input`` LiteRT re-runs every kernel's shape computation, so a
model runs at any size as long as nothing in it *bakes* a size: a folded ``Shape`` subgraph, a
RESHAPE or SLICE constant, an op chosen for one size only.

qcc finds those without symbolic algebra, by *instantiation*. The model is prepared four times,
with every dynamic input dimension (ONNX ``dim_param``, unknown or non-positive) at the first
calibration sample's size ``s``, at ``2 s``, at ``(3 + j) s`` and at ``s + 1 + 2 j``, where ``j``
numbers the distinct dimensions (one per ``dim_param`` name; unnamed ones by axis) so that two
of them never move together by accident (``VARIANTS``). The odd sizes probe the remainders that
strided layers round differently; the last two instances are left out when the model does not
take them (an image size that must divide by 32, a height that must equal the width):

* a value folds to a constant only when it folds to the same array in every instance
  (``Shape(x)[1]`` of an image with static channels does; ``Shape(x)[0]`` of a dynamic batch
  does not, and stays a run-time ``SHAPE -> GATHER``);
* a value's dimension is dynamic (``-1`` in its signature) when it differs between instances;
* strided windows on a dynamic spatial dimension get an explicit Pad (:func:`explicit_padding`);
* each instance is lowered, and the flat models are compared (``_tflite_merge.merge``): they
  must be the same operators on the same tensors with the same constants, differing only in
  tensor shapes; then the first one, whose shapes are the sample's, runs at any size as the
  others do, and otherwise :class:`StaticReason` says which node's lowering depends on the size.

Instances are throwaway clones of the annotated model; their value names are the model's, and
the passes that run on them (folding, layout) name new values deterministically, so values and
flat tensors line up by name and by index.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common

from qcc.annotations import get_decision, get_quant, quantized_values, set_decision, set_quant
from qcc.data import Feed
from qcc.errors import BackendError
from qcc.irutils import NameAllocator, add_initializer, attr_int
from qcc.passes._folding import replace_with_constant
from qcc.passes.canonicalize import fold_constants
from qcc.passes.layout_nhwc import LAYOUT_KEY

logger = logging.getLogger(__name__)

# Instance sizes of the j-th dynamic dimension of sample size s: (a + j b) s + c + j d for each
# (a, b, c, d). Multiples, so that a size that only looks constant between two of them
# (ceil(n / 2) for n = 1 and 2) is still seen to change; distinct per dimension; and odd offsets
# for the sizes a stride rounds another way (TF SAME vs VALID at odd widths).
VARIANTS = ((1, 0, 0, 0), (2, 0, 0, 0), (3, 1, 0, 0), (1, 0, 1, 2))
# The instances the artifact must agree with; the others are dropped when the model cannot take them.
REQUIRED_VARIANTS = 2
# Rounds of constant folding + shape inference (MiniLM's shape subgraphs need three).
_MAX_FOLD_ROUNDS = 8
# value.meta key: the value's signature (a tuple with -1 at dynamic dimensions), set when it has one.
SIGNATURE_KEY = "qcc.tflite.signature"
# Prefix of the note a static artifact's description carries (``verify()`` reports it).
STATIC_NOTE = "static shapes: "


@dataclasses.dataclass
class Instance:
    """The model prepared at one set of input sizes (``inputs``: name -> shape)."""

    model: ir.Model
    inputs: dict[str, tuple[int, ...]]


@dataclasses.dataclass(frozen=True)
class StaticReason:
    """Why an artifact keeps static shapes although the model has dynamic dimensions."""

    message: str


def input_sizes(
    model: ir.Model, feed: Feed | None, pinned: Mapping[str, Sequence[int]] | None = None
) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[str | None, ...]]]:
    """The size of every graph input and which of its dimensions are dynamic.

    A dimension is dynamic when the ONNX model does not fix it (a ``dim_param``, an unknown
    dimension, a non-positive ``dim_value``); its size is the sample's. ``pinned`` shapes
    (``--input-shape``) fix every dimension of their input.

    Returns:
        ``sizes``: input name -> shape; ``dynamic``: input name -> per dimension, None when it is
        static, else its symbol (the ``dim_param``, or ``#axis`` for an unnamed one: unnamed
        dimensions on one axis of several inputs are taken to move together, as batches do).

    Raises:
        BackendError: a pinned shape names no input, has another rank, or contradicts a static
            dimension of the model.
    """
    pinned = dict(pinned or {})
    names = {v.name for v in model.graph.inputs}
    for name in pinned:
        if name not in names:
            raise BackendError(
                f"--input-shape names {name!r}, which is not an input of the model.",
                f"name one of {', '.join(sorted(names))}.",
            )
    sizes: dict[str, tuple[int, ...]] = {}
    dynamic: dict[str, tuple[bool, ...]] = {}
    for value in model.graph.inputs:
        declared = list(value.shape) if value.shape is not None else None
        if value.name in pinned:
            shape = tuple(int(d) for d in pinned[value.name])
            if declared is not None and (
                len(declared) != len(shape)
                or any(isinstance(d, int) and d > 0 and d != s for d, s in zip(declared, shape, strict=True))
            ):
                raise BackendError(
                    f"--input-shape {value.name}={','.join(map(str, shape))} does not fit the model's "
                    f"input shape {value.shape}.",
                    "give a size for every dimension, keeping the model's fixed ones.",
                )
            sizes[value.name], dynamic[value.name] = shape, (None,) * len(shape)
            continue
        sample = np.shape(feed[value.name]) if feed is not None and value.name in feed else None
        if declared is None and sample is None:
            continue
        if sample is None:
            if not all(isinstance(d, int) and d > 0 for d in declared):
                continue
            sample = tuple(declared)
        symbols = []
        for i, size in enumerate(sample):
            d = declared[i] if declared is not None and i < len(declared) else None
            static = (isinstance(d, int) and d > 0) or size <= 0
            named = d is not None and not isinstance(d, int) and getattr(d, "value", None)
            symbols.append(None if static else (str(named) if named else f"#{i}"))
        sizes[value.name] = tuple(int(d) for d in sample)
        dynamic[value.name] = tuple(symbols)
    return sizes, dynamic


def instances(
    model: ir.Model, sizes: Mapping[str, tuple[int, ...]], dynamic: Mapping[str, tuple[str | None, ...]]
) -> list[Instance]:
    """The model at each of ``VARIANTS``: shapes inferred, folded where all instances agree.

    With no dynamic dimension, one instance, folded completely (a static artifact).
    """
    symbols = list(dict.fromkeys(d for dims in dynamic.values() for d in dims if d is not None))
    variants = VARIANTS if symbols else VARIANTS[:1]
    result = []
    for a, b, c, d in variants:
        clone = model.clone()
        inputs = {}
        for value in clone.graph.inputs:
            if value.name in sizes:
                shape = []
                for size, symbol in zip(sizes[value.name], dynamic[value.name], strict=True):
                    j = symbols.index(symbol) if symbol is not None else None
                    shape.append(size if j is None else (a + j * b) * size + c + j * d)
                value.shape = ir.Shape(shape)
                inputs[value.name] = tuple(shape)
        infer_shapes(clone)
        result.append(Instance(clone, inputs))
    folded = [_fold_completely(i.model.clone()) for i in result]
    constants = _agreed_constants(result[0].model, folded)
    for instance, full in zip(result, folded, strict=True):
        _fold(instance.model, constants)
        _copy_shapes(instance.model, full)
    return result


def mark_signatures(instances_: Sequence[Instance]) -> None:
    """Sets ``SIGNATURE_KEY`` on every value whose shape differs between the instances (-1 there)."""
    models = [i.model for i in instances_]
    if len(models) < 2:
        return
    shapes = [_shapes_by_name(m.graph) for m in models]
    values = [_values_by_name(m.graph) for m in models]
    for name in values[0]:
        dims = [s.get(name) for s in shapes]
        if any(d is None or len(d) != len(dims[0]) for d in dims):
            continue
        signature = varying_signature(dims)
        if -1 in signature:
            for by_name in values:
                if name in by_name:
                    by_name[name].meta[SIGNATURE_KEY] = signature


def varying_signature(shapes: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """The first shape with ``-1`` at every dimension that differs between the (equal-rank) ``shapes``."""
    return tuple(-1 if len({s[i] for s in shapes}) > 1 else shapes[0][i] for i in range(len(shapes[0])))


def explicit_padding(model: ir.Model) -> None:
    """Moves the pads of strided Conv/MaxPool/AveragePool on a dynamic spatial dimension into a Pad node.

    The window rules write TF ``SAME`` padding when the ONNX pads equal it at the static size;
    with a stride, ``SAME`` pads depend on the size (input 8, kernel 3, stride 2: (0, 1); input 9:
    (1, 1)), so at other sizes it would not be the model's padding. An explicit ``Pad`` (zeros;
    the lowest value for max pooling) followed by the unpadded op is the model's at every size.
    Average pooling that excludes the padding from its divisor is left as it is (the instances'
    comparison then keeps the artifact static if its lowering depends on the size).
    """
    graph = model.graph
    names = NameAllocator(graph)
    for node in list(graph):
        if node.op_type not in ("Conv", "MaxPool", "AveragePool") or LAYOUT_KEY not in node.meta:
            continue
        x = node.inputs[0]
        signature = x.meta.get(SIGNATURE_KEY)
        spatial = len(x.shape) - 2 if x.shape is not None else 0
        attr = node.attributes.get("pads")
        pads = list(attr.as_ints()) if attr is not None else []
        strides = node.attributes.get("strides")
        strides = list(strides.as_ints()) if strides is not None else [1] * spatial
        auto = node.attributes.get("auto_pad")
        if signature is None or not any(pads) or (auto is not None and auto.as_string() != "NOTSET"):
            continue
        if not any(signature[1 + i] == -1 and strides[i] > 1 for i in range(spatial)):
            continue
        if node.op_type == "AveragePool" and not attr_int(node, "count_include_pad", 0):
            continue
        # NHWC / NLC pads: none on the batch and channel axes.
        begins, ends = [0, *pads[:spatial], 0], [0, *pads[spatial:], 0]
        explicit = np.array(begins + ends, np.int64)
        inputs = [x, add_initializer(graph, names.new(f"{node.name}_pads"), explicit, exact=True)]
        if node.op_type == "MaxPool":
            floor = np.array(np.finfo(np.float32).min, np.float32)
            lowest = add_initializer(graph, names.new(f"{node.name}_lowest"), floor, exact=True)
            if get_quant(x) is not None:
                set_quant(lowest, copy.copy(get_quant(x)))
            inputs.append(lowest)
        pad = ir.node("Pad", inputs, name=names.new(f"{node.name}_pad"))
        padded = pad.outputs[0]
        padded.name, padded.type = names.new(f"{x.name}_padded"), x.type
        padded.shape = ir.Shape([d + b + e for d, b, e in zip(x.shape, begins, ends, strict=True)])
        padded.meta[SIGNATURE_KEY] = signature
        if get_quant(x) is not None:
            shared = copy.copy(get_quant(x))
            shared.shared_with = x.name
            set_quant(padded, shared)
        decision = get_decision(node)
        if decision is not None:
            set_decision(pad, decision.decision, "explicit padding: the op's SAME padding would depend on the size")
        graph.insert_before(node, pad)
        node.replace_input_with(0, padded)
        node.attributes["pads"] = ir.AttrInt64s("pads", [0] * len(pads))


def infer_shapes(model: ir.Model) -> None:
    """Runs ONNX shape inference, first dropping the node outputs' symbolic shapes.

    ONNX shape inference keeps a symbolic dimension it finds on a value rather than replace it
    with the static one it infers, so stale symbolic shapes are cleared first; static ones stay.
    """
    for node in model.graph:
        for out in node.outputs:
            if out.shape is not None and not all(isinstance(d, int) for d in out.shape):
                out.shape = None
    # onnx-ir logs a failed inference as a warning with its traceback; here a failure is expected
    # (an instance at a size the model cannot take) and the lowering names any tensor it leaves
    # without a static shape, so the warning is taken off the user's console and kept at debug.
    failures = _Swallowed()
    inference_logger = logging.getLogger(common.shape_inference.__name__)
    inference_logger.addFilter(failures)
    try:
        common.ShapeInferencePass()(model)
    except Exception as exc:  # noqa: BLE001 - ONNX shape inference raises several unrelated types
        failures.errors.append(exc)
    finally:
        inference_logger.removeFilter(failures)
    for error in failures.errors:
        logger.debug("shape inference failed (%s); keeping the frontend's shapes", error)


class _Swallowed(logging.Filter):
    """Drops the records of one logger, keeping the exceptions they carry."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[object] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.errors.append(record.exc_info[1] if record.exc_info else record.getMessage())
        return False


# -- folding ---------------------------------------------------------------------------------------


def _fold_completely(model: ir.Model) -> ir.Model:
    """Folds every constant subgraph, alternating with shape inference (a fold can make a shape static)."""
    for _round in range(_MAX_FOLD_ROUNDS):
        if not fold_constants(model):
            break
        infer_shapes(model)
    return model


def _agreed_constants(model: ir.Model, folded: Sequence[ir.Model]) -> dict[str, np.ndarray]:
    """Node outputs of ``model`` that fold to the same array in every instance."""
    arrays = [{name: v.const_value.numpy() for name, v in f.graph.initializers.items()} for f in folded]
    agreed = {}
    for node in model.graph:
        for out in node.outputs:
            found = [a.get(out.name) for a in arrays]
            if any(f is None for f in found):
                continue
            if all(
                f.dtype == found[0].dtype and f.shape == found[0].shape and np.array_equal(f, found[0]) for f in found
            ):
                agreed[out.name] = found[0]
    return agreed


def _fold(model: ir.Model, constants: Mapping[str, np.ndarray]) -> None:
    """Replaces the agreed node outputs by constants (keeping names and parameters), drops dead nodes."""
    graph = model.graph
    params = {v.name: get_quant(v) for v in quantized_values(graph)}
    for node in list(graph):
        outs = [o for o in node.outputs if o.name in constants]
        for out in outs:
            name = out.name
            constant = replace_with_constant(graph, out, constants[name])
            if params.get(name) is not None:
                set_quant(constant, params[name])
    _remove_dead(graph)


def _remove_dead(graph: ir.Graph) -> None:
    outputs = {id(v) for v in graph.outputs}
    changed = True
    while changed:
        changed = False
        for node in reversed(list(graph)):
            if all(not o.uses() and id(o) not in outputs for o in node.outputs):
                graph.remove(node, safe=True)
                changed = True


def _copy_shapes(model: ir.Model, full: ir.Model) -> None:
    """Gives the instance's values the static shapes of the completely folded instance."""
    shapes = _shapes_by_name(full.graph)
    for name, value in _values_by_name(model.graph).items():
        shape = shapes.get(name)
        if shape is not None and value.const_value is None:
            value.shape = ir.Shape(shape)


def _values_by_name(graph: ir.Graph) -> dict[str, ir.Value]:
    values = {v.name: v for v in graph.inputs}
    for node in graph:
        for out in node.outputs:
            if out.name:
                values[out.name] = out
    return values


def _shapes_by_name(graph: ir.Graph) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for name, value in graph.initializers.items():
        if value.const_value is not None:
            shapes[name] = tuple(value.const_value.shape)
    for name, value in _values_by_name(graph).items():
        if value.shape is not None and all(isinstance(d, int) for d in value.shape):
            shapes[name] = tuple(int(d) for d in value.shape)
    return shapes
