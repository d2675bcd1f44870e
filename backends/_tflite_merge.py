"""Merging the lowerings of the instances (``_tflite_shapes``) into one dynamic-shape flat model.

The instances are the model at the sample's input sizes and at others; each is lowered on its
own. If the flat models are the same operators on the same tensors with the same constants and
options, differing only in tensor shapes, the first one (the sample's shapes) runs at any size
as the others do: :func:`merge` returns it with ``-1`` in ``shape_signature`` where the shapes
differ. Before comparing, it makes size-specific choices size-independent where that is exact:

* a window op written TF SAME where its ONNX node pads nothing is VALID (SAME's pads are zero at
  that size, or the rule would not have taken it);
* a RESHAPE constant with one varying size gets ``-1`` there; with more, and a TRANSPOSE_CONV
  output shape, each varying size that is ``x * k // d + c`` of one dimension ``x`` of the input,
  with the same constants in every instance, is computed at run time (SHAPE, GATHER, MUL,
  FLOOR_DIV, ADD);
* a SLICE size that runs to the end of a varying dimension is ``-1``.

Any other difference is a :class:`~qcc.backends._tflite_shapes.StaticReason` naming the node
whose lowering depends on the size, and the artifact keeps static shapes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir
from tflite.BuiltinOperator import BuiltinOperator

from qcc.backends._tflite_shapes import Instance, StaticReason, varying_signature
from qcc.backends._tflite_writer import FlatModel, Op, Tensor, builtin

_CODE_NAMES = {code: name for name, code in vars(BuiltinOperator).items() if not name.startswith("_")}


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
        signature = varying_signature(dims)
        if -1 in signature:
            tensor.shape_signature = signature
    return first


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


def _varying(rows: Sequence[np.ndarray]) -> list[int]:
    """The positions at which the instances' rows differ."""
    return [i for i in range(len(rows[0])) if len({int(r[i]) for r in rows}) > 1]


def _repair_reshape(flats: Sequence[FlatModel], position: int) -> None:
    rows = _constant_rows(flats, position, 1)
    if rows is None:
        return
    varying = _varying(rows)
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
    varying = _varying(rows)
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
    for i in _varying(rows):
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
