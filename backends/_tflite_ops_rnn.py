"""ONNX LSTM -> an unrolled chain of float32 TFLite builtins that XNNPACK takes.

For each direction, with ONNX's gate order i, o, f, c (``W`` [dirs, 4H, I], ``R`` [dirs, 4H, H],
``B`` = [Wb, Rb] [dirs, 8H]) and the default activations (Sigmoid, Tanh, Tanh)::

    z_t = X_t W^T + (Wb + Rb) + h_{t-1} R^T          [B, 4H], split into z_i, z_o, z_f, z_c
    c_t = sigmoid(z_f) * c_{t-1} + sigmoid(z_i) * tanh(z_c)
    h_t = sigmoid(z_o) * tanh(c_t)

The input projection ``X W^T + Wb + Rb`` of all time steps is one FULLY_CONNECTED over the
[S*B, I] sequence; each step is SLICE (its rows), FULLY_CONNECTED (``h R^T``, no bias), ADD,
SPLIT into the four gates, LOGISTIC x3, TANH, MUL, MUL, ADD, TANH, MUL. A zero (or absent)
initial state drops the first step's recurrent product and forget term. The reverse direction
runs the steps from the last to the first; ``Y`` keeps time order. ``Y`` is the CONCATENATION
of the steps' ``h`` (a tree of at most 5 inputs per op, the most XNNPACK takes), ``Y_h``/``Y_c``
the last step's state; only the outputs that are read are written.

Why not UNIDIRECTIONAL_SEQUENCE_LSTM: its states are *variable* tensors that persist across
invocations (an initial state cannot be fed per call as ONNX's ``initial_h``/``initial_c``),
it has no final-cell-state output, and the XNNPACK delegate has no LSTM node, so it would run on
the builtin kernel and split the delegated graph. The unrolled chain is stateless, exact to float32 and
stays in one XNNPACK partition; it needs a static sequence length, which TFLite tensors have.

The LSTM stays float (the plan keeps ops without an int8 kernel in ``TFLITE_SPEC`` float; TFLite's
integer LSTM needs int16 cell states and per-gate intermediate scales qcc does not calibrate), so
it is a float island: DEQUANTIZE before it and QUANTIZE after it come from the :class:`Lowering`.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_window import unsupported
from qcc.backends._tflite_writer import Tensor
from qcc.irutils import attr_int, const_array

_DEFAULT_ACTIVATIONS = ("sigmoid", "tanh", "tanh")
_MAX_CONCAT_INPUTS = 5
_X, _W, _R, _B, _SEQUENCE_LENS, _INITIAL_H, _INITIAL_C, _P = range(8)


def lstm(lw: Lowering, node: ir.Node) -> None:
    """LSTM (forward, reverse or bidirectional; float) -> unrolled FULLY_CONNECTED/LOGISTIC/TANH/MUL/ADD.

    Raises:
        BackendError: the node runs int8, has non-constant weights, non-default activations,
            ``clip``, ``input_forget``, peepholes, or a ``sequence_lens`` shorter than the sequence.
    """
    _check_supported(lw, node)
    weights, recurrent = const_array(node.inputs[_W]), const_array(node.inputs[_R])
    dirs, four_h, _ = weights.shape
    hidden = four_h // 4
    bias = _optional_const(node, _B)
    bias = np.zeros((dirs, 2 * four_h), np.float32) if bias is None else bias
    x = lw.input(node, _X)
    steps, batch = x.shape[0], x.shape[1]
    _check_sequence_lens(node, steps)
    direction = _direction(node)
    cell = _Cell(lw, node, batch, hidden)
    outputs_h, finals_h, finals_c = [], [], []
    for d in range(dirs):
        reverse = direction == "reverse" or d == 1
        gates_x = _emit(
            lw,
            node,
            "FULLY_CONNECTED",
            [
                x,
                lw.constant(f"{node.name}_W{d}", weights[d].astype(np.float32)),
                lw.constant(f"{node.name}_B{d}", (bias[d, :four_h] + bias[d, four_h:]).astype(np.float32)),
            ],
            (steps * batch, four_h),
            "FullyConnectedOptions",
            keep_num_dims=False,
        )
        r = lw.constant(f"{node.name}_R{d}", recurrent[d].astype(np.float32))
        h, c = _initial_state(lw, node, _INITIAL_H, d, dirs), _initial_state(lw, node, _INITIAL_C, d, dirs)
        per_step: list[Tensor | None] = [None] * steps
        for t in reversed(range(steps)) if reverse else range(steps):
            h, c = cell.step(gates_x, t, h, r, c)
            per_step[t] = h
        outputs_h.append(per_step)
        finals_h.append(h)
        finals_c.append(c)
    _write_y(lw, node, outputs_h)
    _write_state(lw, node, 1, finals_h)
    _write_state(lw, node, 2, finals_c)


class _Cell:
    """Emits one LSTM time step (see module docstring) for one node."""

    def __init__(self, lw: Lowering, node: ir.Node, batch: int, hidden: int) -> None:
        self.lw, self.node, self.batch, self.hidden = lw, node, batch, hidden
        self.split_axis = lw.constant(f"{node.name}_split_axis", np.array(1, np.int32))
        self.size = _int32(lw, node, "step_size", [batch, 4 * hidden])

    def step(self, gates_x: Tensor, t: int, h: Tensor | None, r: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor]:
        """Returns (h_t, c_t) from step ``t``'s rows of ``gates_x`` and the previous state (None: zero)."""
        lw, node, state = self.lw, self.node, (self.batch, self.hidden)
        begin = _int32(lw, node, f"t{t}_begin", [t * self.batch, 0])
        z = _emit(lw, node, "SLICE", [gates_x, begin, self.size], (self.batch, 4 * self.hidden), "SliceOptions")
        if h is not None:
            recurrent = _emit(
                lw, node, "FULLY_CONNECTED", [h, r, -1], z.shape, "FullyConnectedOptions", keep_num_dims=False
            )
            z = _emit(lw, node, "ADD", [z, recurrent], z.shape, "AddOptions")
        gates = [lw.model.tensor(f"{node.name}_t{t}_z{g}", state, np.float32) for g in "iofc"]
        lw.op("SPLIT", [self.split_axis, z], gates, "SplitOptions", source=node.name, num_splits=4)
        z_i, z_o, z_f, z_c = gates
        i = _emit(lw, node, "LOGISTIC", [z_i], state)
        g = _emit(lw, node, "TANH", [z_c], state)
        c_new = _emit(lw, node, "MUL", [i, g], state, "MulOptions")
        if c is not None:
            f = _emit(lw, node, "LOGISTIC", [z_f], state)
            kept = _emit(lw, node, "MUL", [f, c], state, "MulOptions")
            c_new = _emit(lw, node, "ADD", [kept, c_new], state, "AddOptions")
        o = _emit(lw, node, "LOGISTIC", [z_o], state)
        h_new = _emit(lw, node, "MUL", [o, _emit(lw, node, "TANH", [c_new], state)], state, "MulOptions")
        return h_new, c_new


def _write_y(lw: Lowering, node: ir.Node, outputs_h: list[list[Tensor]]) -> None:
    """Y [S, dirs, B, H] from every step's h [B, H]."""
    if not _used(node, 0):
        return
    y = lw.output(node, 0)
    steps, (batch, hidden) = len(outputs_h[0]), outputs_h[0][0].shape
    stacked = [_concatenate(lw, node, pieces, 0) for pieces in outputs_h]
    joined = stacked[0]
    if len(stacked) > 1:
        # [S*B, H] is [S, B*H] byte for byte: joining the directions on axis 1 gives [S, dirs, B, H].
        rows = [_reshape(lw, node, s, (steps, batch * hidden)) for s in stacked]
        joined = _concatenate(lw, node, rows, 1)
    _reshape(lw, node, joined, y.shape, out=y)


def _write_state(lw: Lowering, node: ir.Node, index: int, finals: list[Tensor]) -> None:
    """Y_h / Y_c [dirs, B, H] from each direction's last state [B, H]."""
    if not _used(node, index):
        return
    out = lw.output(node, index)
    batch, hidden = finals[0].shape
    if len(finals) == 1:
        _reshape(lw, node, finals[0], out.shape, out=out)
        return
    joined = _concatenate(lw, node, finals, 0)
    _reshape(lw, node, joined, out.shape, out=out)


def _concatenate(lw: Lowering, node: ir.Node, pieces: list[Tensor], axis: int) -> Tensor:
    """CONCATENATION of 2-D ``pieces`` along ``axis``, as a tree of at most 5 inputs per op.

    XNNPACK takes CONCATENATION of 2 to 5 inputs only (LiteRT 2.3.0); a wider one runs on the
    builtin kernel and splits the delegated graph.
    """
    while len(pieces) > 1:
        groups = [pieces[k : k + _MAX_CONCAT_INPUTS] for k in range(0, len(pieces), _MAX_CONCAT_INPUTS)]
        pieces = [group[0] if len(group) == 1 else _join(lw, node, group, axis) for group in groups]
    return pieces[0]


def _join(lw: Lowering, node: ir.Node, group: list[Tensor], axis: int) -> Tensor:
    shape = list(group[0].shape)
    shape[axis] = sum(t.shape[axis] for t in group)
    return _emit(lw, node, "CONCATENATION", group, shape, "ConcatenationOptions", axis=axis)


def _initial_state(lw: Lowering, node: ir.Node, index: int, d: int, dirs: int) -> Tensor | None:
    """Direction ``d`` of initial_h/initial_c [dirs, B, H] as a [B, H] tensor, or None when zero."""
    value = node.inputs[index] if len(node.inputs) > index else None
    if value is None:
        return None
    array = const_array(value)
    if array is not None:
        return lw.constant(f"{value.name}_d{d}", array[d].astype(np.float32)) if np.any(array[d]) else None
    state = lw.input(node, index)
    if dirs > 1:
        begin = _int32(lw, node, f"state{index}_d{d}_begin", [d, 0, 0])
        size = _int32(lw, node, f"state{index}_size", [1, *state.shape[1:]])
        state = _emit(lw, node, "SLICE", [state, begin, size], (1, *state.shape[1:]), "SliceOptions")
    return _reshape(lw, node, state, state.shape[1:])


def _check_supported(lw: Lowering, node: ir.Node) -> None:
    if lw.is_int8(node):
        raise unsupported(node, "int8 LSTM (TFLite has no int8 LSTM qcc can feed; keep it float)")
    if const_array(node.inputs[_W]) is None or const_array(node.inputs[_R]) is None:
        raise unsupported(node, "W and R must be constants")
    activations = node.attributes.get("activations")
    if activations is not None:
        names = tuple(a.lower() for a in activations.as_strings())
        if any(names[k : k + 3] != _DEFAULT_ACTIVATIONS for k in range(0, len(names), 3)):
            raise unsupported(node, f"activations {list(activations.as_strings())} (only Sigmoid, Tanh, Tanh)")
    for name in ("activation_alpha", "activation_beta", "clip"):
        if name in node.attributes:
            raise unsupported(node, f"attribute {name!r}")
    if attr_int(node, "input_forget", 0):
        raise unsupported(node, "input_forget=1 (coupled input and forget gates)")
    if attr_int(node, "layout", 0) != 0:
        # ONNX Runtime refuses layout=1 too, so qcc could neither calibrate nor verify it.
        raise unsupported(node, "layout=1 (batch-major); transpose to [seq, batch, input] around it")
    peepholes = node.inputs[_P] if len(node.inputs) > _P else None
    if peepholes is not None:
        array = const_array(peepholes)
        if array is None or np.any(array):
            raise unsupported(node, "peephole weights P")


def _check_sequence_lens(node: ir.Node, steps: int) -> None:
    value = node.inputs[_SEQUENCE_LENS] if len(node.inputs) > _SEQUENCE_LENS else None
    if value is None:
        return
    lengths = const_array(value)
    if lengths is None or np.any(lengths != steps):
        raise unsupported(node, f"sequence_lens other than a constant {steps} (the static sequence length)")


def _direction(node: ir.Node) -> str:
    attr = node.attributes.get("direction")
    return "forward" if attr is None else attr.as_string()


def _optional_const(node: ir.Node, index: int) -> np.ndarray | None:
    value = node.inputs[index] if len(node.inputs) > index else None
    if value is None:
        return None
    array = const_array(value)
    if array is None:
        raise unsupported(node, f"input {index} ({value.name!r}) must be a constant")
    return array


def _used(node: ir.Node, index: int) -> bool:
    if len(node.outputs) <= index:
        return False
    value = node.outputs[index]
    return bool(value.name) and (bool(value.uses()) or value.is_graph_output())


def _int32(lw: Lowering, node: ir.Node, name: str, values) -> Tensor:
    return lw.constant(f"{node.name}_{name}", np.array(values, np.int32))


def _emit(lw: Lowering, node: ir.Node, op: str, inputs, shape, options: str | None = None, name: str = "", **fields):
    """Appends ``op`` writing a new float32 tensor of ``shape`` and returns that tensor."""
    out = lw.model.tensor(f"{node.name}_{name or op.lower()}", shape, np.float32)
    lw.op(op, inputs, [out], options, source=node.name, **fields)
    return out


def _reshape(lw: Lowering, node: ir.Node, x: Tensor, shape, out: Tensor | None = None) -> Tensor:
    """RESHAPE ``x`` to ``shape`` (into ``out`` when given) and returns the result."""
    shape = tuple(int(s) for s in shape)
    if out is None:
        out = lw.model.tensor(f"{node.name}_reshape", shape, np.float32)
    return lw.reshape(x, out, node.name)
