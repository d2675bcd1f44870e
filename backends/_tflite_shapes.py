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
* each instance is lowered, and the flat models are compared (:func:`merge`): they must be the
  same operators on the same tensors with the same constants, differing only in tensor shapes.
  Then the first one, whose shapes are the sample's, runs at any size as the others do. Window
  ops written SAME where the model pads nothing become VALID (exact), and two differences are
  repaired: a RESHAPE or SLICE constant holding a dynamic size (``-1``, or a run-time shape
  gathered from ``SHAPE`` of the input); any other difference keeps the static artifact, and
  :class:`StaticReason` says which node's lowering depends on the size.

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
from tflite.BuiltinOperator import BuiltinOperator

from qcc.annotations import get_decision, get_quant, quantized_values, set_decision, set_quant
from qcc.backends._tflite_writer import FlatModel, Op, Tensor, builtin
from qcc.data import Feed
from qcc.errors import BackendError
from qcc.irutils import NameAllocator, attr_int
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
_CODE_NAMES = {code: name for name, code in vars(BuiltinOperator).items() if not name.startswith("_")}


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
        signature = tuple(-1 if len({d[i] for d in dims}) > 1 else dims[0][i] for i in range(len(dims[0])))
        if -1 in signature:
            for by_name in values:
                if name in by_name:
                    by_name[name].meta[SIGNATURE_KEY] = signature


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
        inputs = [x, _initializer(graph, names.new(f"{node.name}_pads"), np.array(begins + ends, np.int64))]
        if node.op_type == "MaxPool":
            lowest = _initializer(
                graph, names.new(f"{node.name}_lowest"), np.array(np.finfo(np.float32).min, np.float32)
            )
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


def _initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    value = ir.Value(
        name=name,
        shape=ir.Shape(array.shape),
        type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
        const_value=ir.tensor(array, name=name),
    )
    graph.register_initializer(value)
    return value


def merge(
    flats: Sequence[FlatModel], instances_: Sequence[Instance], nodes: Mapping[str, ir.Node] | None = None
) -> FlatModel | StaticReason:
    """The first flat model with ``shape_signature``s, if the instances' lowerings agree.

    Window ops written SAME where the model's ``nodes`` (by name) pad nothing are VALID (exact: the
    rules take SAME only where its pads are zero then). Repairs RESHAPE shapes and SLICE sizes that
    hold a dynamic size (module docstring), then compares.

    Args:
        flats: the lowering of each instance, the sample's first.
        instances_: the instances, in the same order (their input sizes name a difference).
        nodes: the model's nodes by name (the first instance's).

    Returns:
        The first model, signatures set; or a :class:`StaticReason` naming the first operator
        whose lowering depends on a dynamic size.
    """
    first = flats[0]
    if len(flats) == 1:
        return first
    for flat in flats:
        _valid_padding(flat, nodes or {})
        if len(flat.ops) != len(first.ops) or len(flat.tensors) != len(first.tensors):
            return _structure_reason(flats, instances_)
    _repair(flats)
    reason = _difference(flats, instances_)
    if reason is not None:
        return reason
    for index, tensor in enumerate(first.tensors):
        if tensor.data is not None:
            continue
        dims = [flat.tensors[index].shape for flat in flats]
        signature = tuple(-1 if len({d[i] for d in dims}) > 1 else dims[0][i] for i in range(len(dims[0])))
        if -1 in signature:
            tensor.shape_signature = signature
    return first


def infer_shapes(model: ir.Model) -> None:
    """Runs ONNX shape inference, first dropping the node outputs' symbolic shapes.

    ONNX shape inference keeps a symbolic dimension it finds on a value rather than replace it
    with the static one it infers, so stale symbolic shapes are cleared first; static ones stay.
    """
    for node in model.graph:
        for out in node.outputs:
            if out.shape is not None and not all(isinstance(d, int) for d in out.shape):
                out.shape = None
    try:
        common.ShapeInferencePass()(model)
    except Exception as exc:  # noqa: BLE001 - ONNX shape inference raises several unrelated types
        # The lowering names any tensor that is left without a static shape.
        logger.debug("shape inference failed (%s); keeping the frontend's shapes", exc)


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
            array = constants[name]
            constant = ir.Value(
                name=None,
                shape=ir.Shape(array.shape),
                type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                const_value=ir.tensor(array, name=name),
            )
            out.replace_all_uses_with(constant, replace_graph_outputs=True)
            out.name = None
            constant.name = name
            graph.register_initializer(constant)
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


# -- comparing the lowerings ----------------------------------------------------------------------


def _repair(flats: Sequence[FlatModel]) -> None:
    """Rewrites, in every instance alike, RESHAPE shapes and SLICE sizes that hold a dynamic size."""
    first = flats[0]
    reshape, slice_, transpose_conv = builtin("RESHAPE"), builtin("SLICE"), builtin("TRANSPOSE_CONV")
    for position in reversed(range(len(first.ops))):
        ops = [flat.ops[position] for flat in flats]
        if any(op.code != ops[0].code or len(op.inputs) != len(ops[0].inputs) for op in ops):
            continue
        if ops[0].code == reshape and len(ops[0].inputs) > 1:
            _repair_reshape(flats, position)
        elif ops[0].code == slice_:
            _repair_slice(flats, position)
        elif ops[0].code == transpose_conv:
            _repair_shape_input(flats, position, shape_slot=0, data_slot=2, may_infer=False)


def _constant_rows(flats: Sequence[FlatModel], op_index: int, input_index: int) -> list[np.ndarray] | None:
    """The constant input of the op in every instance, when it is a 1-D constant that differs."""
    tensors = [flat.tensors[flat.ops[op_index].inputs[input_index]] for flat in flats]
    if any(t.data is None or t.data.ndim != 1 or t.data.shape != tensors[0].data.shape for t in tensors):
        return None
    rows = [t.data.astype(np.int64) for t in tensors]
    return None if all(np.array_equal(r, rows[0]) for r in rows) else rows


def _repair_reshape(flats: Sequence[FlatModel], position: int) -> None:
    rows = _constant_rows(flats, position, 1)
    if rows is None:
        return
    varying = [i for i in range(len(rows[0])) if len({int(r[i]) for r in rows}) > 1]
    if len(varying) == 1 and -1 not in rows[0]:
        shape = rows[0].copy()
        shape[varying[0]] = -1
        for flat in flats:
            op = flat.ops[position]
            op.inputs[1] = flat.constant(f"{flat.tensors[op.inputs[1]].name}_dynamic", shape.astype(np.int32)).index
            op.option_fields["new_shape"] = [int(d) for d in shape]
        return
    _repair_shape_input(flats, position, shape_slot=1, data_slot=0, may_infer=True)


def _repair_shape_input(flats: Sequence[FlatModel], position: int, shape_slot: int, data_slot: int, may_infer: bool):
    """Computes a constant shape input that varies (RESHAPE's new shape, TRANSPOSE_CONV's output
    shape) at run time: each varying size must be an affine function of one dimension of the data
    input, the same in every instance (``_dimension_source``); with ``may_infer``, one that is none
    may be RESHAPE's inferred -1."""
    rows = _constant_rows(flats, position, shape_slot)
    if rows is None:
        return
    varying = [i for i in range(len(rows[0])) if len({int(r[i]) for r in rows}) > 1]
    inputs = [flat.tensors[flat.ops[position].inputs[data_slot]].shape for flat in flats]
    sources: dict[int, tuple[int, int, int, int]] = {}
    inferred = None
    for i in varying:
        source = _dimension_source([int(r[i]) for r in rows], inputs, i)
        if source is not None:
            sources[i] = source
        elif may_infer and inferred is None and -1 not in rows[0]:
            inferred = i
        else:
            return
    for flat, row in zip(flats, rows, strict=True):
        _runtime_shape(flat, position, row, sources, inferred, shape_slot, data_slot)


def _dimension_source(sizes: list[int], inputs: list[tuple[int, ...]], near: int) -> tuple[int, int, int, int] | None:
    """``(axis, k, d, c)`` with ``size == input[axis] * k // d + c`` in every instance, or None.

    Equal dimensions first, then multiples, fractions and affine ``k x + c`` (a transposed
    convolution's ``(x - 1) s + k``); among several, the axis nearest ``near``.
    """
    rank = len(inputs[0])
    for kind in ("equal", "multiple", "fraction", "affine"):
        found = []
        for axis in range(rank):
            dims = [shape[axis] for shape in inputs]
            pairs = list(zip(sizes, dims, strict=True))
            if kind == "equal" and dims == sizes:
                found.append((axis, 1, 1, 0))
            elif kind == "multiple" and all(d > 0 and s % d == 0 for s, d in pairs):
                ratios = {s // d for s, d in pairs}
                if len(ratios) == 1:
                    found.append((axis, ratios.pop(), 1, 0))
            elif kind == "fraction" and all(s > 0 and d % s == 0 for s, d in pairs):
                ratios = {d // s for s, d in pairs}
                if len(ratios) == 1:
                    found.append((axis, 1, ratios.pop(), 0))
            elif kind == "affine" and len(set(dims)) > 1:
                (s0, d0), (s1, d1) = pairs[0], next(p for p in pairs if p[1] != pairs[0][1])
                if (s1 - s0) % (d1 - d0) == 0:
                    k = (s1 - s0) // (d1 - d0)
                    c = s0 - k * d0
                    if k > 0 and all(s == d * k + c for s, d in pairs):
                        found.append((axis, k, 1, c))
        if found:
            return min(found, key=lambda source: abs(source[0] - near))
    return None


def _runtime_shape(
    flat: FlatModel, position: int, row: np.ndarray, sources: dict, inferred, shape_slot: int = 1, data_slot: int = 0
) -> None:
    """Inserts SHAPE, GATHER (and MUL/FLOOR_DIV/ADD for scaled sizes) before the op at ``position``.

    ``sources`` maps output dimension -> (input axis, k, d, c): ``SHAPE(x)[axis] * k // d + c``,
    ``x`` being the op's input ``data_slot``; the result replaces its input ``shape_slot``.
    """
    op = flat.ops[position]
    x = flat.tensors[op.inputs[data_slot]]
    rank = len(x.shape)
    # The gathered table is [SHAPE(x)..., the static sizes...]: each output dim picks one entry.
    statics = [int(row[i]) if i != inferred else -1 for i in range(len(row)) if i not in sources]
    picks, k = [], 0
    for i in range(len(row)):
        if i in sources:
            picks.append(sources[i][0])
        else:
            picks.append(rank + k)
            k += 1
    name = f"{x.name}_shape"
    shape = flat.tensor(name, (rank,), np.int32)
    table = flat.tensor(f"{name}_table", (rank + len(statics),), np.int32)
    out = flat.tensor(f"{name}_new", (len(row),), np.int32)
    new_ops = [
        Op(builtin("SHAPE"), [x.index], [shape.index], "ShapeOptions", {"out_type": 2}, source=op.source),
        Op(
            builtin("CONCATENATION"),
            [shape.index, flat.constant(f"{name}_static", np.array(statics, np.int32)).index],
            [table.index],
            "ConcatenationOptions",
            {"axis": 0},
            source=op.source,
        ),
        Op(
            builtin("GATHER"),
            [table.index, flat.constant(f"{name}_picks", np.array(picks, np.int32)).index],
            [out.index],
            "GatherOptions",
            {"axis": 0, "batch_dims": 0},
            source=op.source,
        ),
    ]

    def column(j: int, neutral: int) -> np.ndarray:
        return np.array([sources[i][j] if i in sources else neutral for i in range(len(row))], np.int32)

    for arith, factors, neutral in (("MUL", column(1, 1), 1), ("FLOOR_DIV", column(2, 1), 1), ("ADD", column(3, 0), 0)):
        if np.all(factors == neutral):
            continue
        scaled = flat.tensor(f"{name}_{arith.lower()}", (len(row),), np.int32)
        options = (
            (None, {}) if arith == "FLOOR_DIV" else (f"{arith.capitalize()}Options", {"fused_activation_function": 0})
        )
        new_ops.append(
            Op(
                builtin(arith),
                [out.index, flat.constant(f"{name}_{arith.lower()}_by", factors).index],
                [scaled.index],
                options[0],
                options[1],
                source=op.source,
            )
        )
        out = scaled
    op.inputs[shape_slot] = out.index
    if op.code == builtin("RESHAPE"):
        op.option_fields.pop("new_shape", None)
        if not op.option_fields:
            op.options = None
    flat.ops[position:position] = new_ops


def _repair_slice(flats: Sequence[FlatModel], position: int) -> None:
    rows = _constant_rows(flats, position, 2)
    begins = [flat.tensors[flat.ops[position].inputs[1]].data for flat in flats]
    if rows is None or any(b is None for b in begins):
        return
    size = rows[0].copy()
    for i in range(len(size)):
        if len({int(r[i]) for r in rows}) == 1:
            continue
        # A size that varies must run to the end of its dimension: SLICE's -1.
        ends = [
            int(b[i]) + int(r[i]) == flat.tensors[flat.ops[position].inputs[0]].shape[i]
            for flat, b, r in zip(flats, begins, rows, strict=True)
        ]
        if not all(ends) or len({int(b[i]) for b in begins}) > 1:
            return
        size[i] = -1
    for flat in flats:
        op = flat.ops[position]
        op.inputs[2] = flat.constant(f"{flat.tensors[op.inputs[2]].name}_dynamic", size.astype(np.int32)).index


_WINDOW_OPS = frozenset(builtin(n) for n in ("CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D"))
_SAME, _VALID = 0, 1


def _valid_padding(flat: FlatModel, nodes: Mapping[str, ir.Node]) -> None:
    """SAME -> VALID on window ops whose ONNX node pads nothing (``auto_pad`` NOTSET/VALID, zero pads)."""
    for op in flat.ops:
        node = nodes.get(op.source)
        if op.code not in _WINDOW_OPS or op.option_fields.get("padding") != _SAME or node is None:
            continue
        auto = node.attributes.get("auto_pad")
        pads = node.attributes.get("pads")
        if (auto is None or auto.as_string() in ("NOTSET", "VALID")) and (pads is None or not any(pads.as_ints())):
            op.option_fields["padding"] = _VALID


def _difference(flats: Sequence[FlatModel], instances_: Sequence[Instance]) -> StaticReason | None:
    first = flats[0]
    if any(f.inputs != first.inputs or f.outputs != first.outputs for f in flats):
        return StaticReason("the model's inputs and outputs lower differently at other sizes")
    for position, op in enumerate(first.ops):
        for flat, instance in zip(flats[1:], instances_[1:], strict=True):
            other = flat.ops[position]
            same = (
                other.code == op.code
                and other.inputs == op.inputs
                and other.outputs == op.outputs
                and other.options == op.options
                and _same_fields(other.option_fields, op.option_fields)
                and all(_same_tensor(flat.tensors[i], first.tensors[i]) for i in op.inputs if i >= 0)
                and all(_same_tensor(flat.tensors[i], first.tensors[i]) for i in op.outputs)
            )
            if not same:
                return _op_reason(op, instances_[0], instance)
    return None


def _same_fields(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    return all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)


def _same_tensor(a: Tensor, b: Tensor) -> bool:
    if a.dtype != b.dtype or len(a.shape) != len(b.shape) or (a.quant is None) != (b.quant is None):
        return False
    if a.quant is not None and not (
        np.array_equal(a.quant.scale, b.quant.scale) and np.array_equal(a.quant.zero_point, b.quant.zero_point)
    ):
        return False
    if (a.data is None) != (b.data is None):
        return False
    return a.data is None or (a.data.shape == b.data.shape and np.array_equal(a.data, b.data))


def _structure_reason(flats: Sequence[FlatModel], instances_: Sequence[Instance]) -> StaticReason:
    first = flats[0]
    for flat, instance in zip(flats[1:], instances_[1:], strict=True):
        for position, op in enumerate(first.ops):
            other = flat.ops[position] if position < len(flat.ops) else None
            if other is None or other.code != op.code or other.source != op.source:
                return _op_reason(op, instances_[0], instance)
    return StaticReason("the lowering writes a different number of operators at other sizes")


def _op_reason(op: Op, sample: Instance, other: Instance) -> StaticReason:
    changed = [name for name in sample.inputs if sample.inputs[name] != other.inputs.get(name)]
    sizes = ", ".join(f"{name} {sample.inputs[name]} -> {other.inputs[name]}" for name in changed)
    return StaticReason(
        f"node {op.source!r} is lowered for one input size only (its {_CODE_NAMES.get(op.code, op.code)} "
        f"differs at {sizes})"
    )
