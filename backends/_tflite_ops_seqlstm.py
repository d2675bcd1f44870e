"""ONNX LSTM over a dynamic sequence axis -> LiteRT's builtin UNIDIRECTIONAL_SEQUENCE_LSTM (float).

The unrolled lowering (``_tflite_ops_rnn``) writes one chain of ops per time step, so it bakes the
sequence length. When the time axis of ``X`` is ``-1`` in its signature, each direction is instead
one UNIDIRECTIONAL_SEQUENCE_LSTM (``time_major``), which loops over whatever length it is given.

Weights: ONNX stacks the gate blocks of ``W`` [dirs, 4H, I], ``R`` [dirs, 4H, H] and
``B`` = [Wb, Rb] [dirs, 8H] in the order i, o, f, c, and the peepholes ``P`` [dirs, 3H] in the
order i, o, f. The builtin takes one tensor per gate, in the order i, f, c, o: inputs 1-4 are the
``[H, I]`` input weights, 5-8 the ``[H, H]`` recurrent weights, 9-11 the peepholes (cell to i, f, o;
omitted when zero), 12-15 the biases ``Wb_k + Rb_k``. Its cell is ONNX's with the default
activations (``f`` = sigmoid for the gates, TANH as ``fused_activation_function`` for ``g`` and
``h``): ``c_t = f_t * c_{t-1} + i_t * g(z_c)``, ``h_t = o_t * h(c_t)``, the input and forget
peepholes reading ``c_{t-1}`` and the output one ``c_t``.

States: inputs 18 and 19 (``h``, ``c``, [B, H]) must be *variable* tensors (``is_variable``), which
the kernel reads as the initial state and overwrites with the final one; LiteRT keeps them across
``invoke()`` calls (zeroed only by ``allocate_tensors()``). ONNX starts every run from
``initial_h``/``initial_c`` (zeros when absent), so an ADD (``state + 0``) before the LSTM writes
the initial state into each variable tensor on every invocation; two consecutive invocations then
give the same outputs (measured, LiteRT 2.3.0, both resolvers). After the op the cell variable
holds ``c_T``, which gives ``Y_c``; it is read as ``c + 0 * h_T`` so that the read depends on the
LSTM's output: a variable tensor has no producer, and a delegate partitioning the graph could
otherwise schedule its reader before the LSTM.

Outputs: ``Y`` [S, B, H] per direction (RESHAPE to [S, 1, B, H]; bidirectional: CONCATENATION on
axis 1), ``Y_h`` the op's output at its last step (STRIDED_SLICE from ``-1``, run-time bounds),
``Y_c`` as above. ``direction="reverse"`` (and the backward half of a bidirectional LSTM) runs the
op on REVERSE_V2 of ``X`` along time and reverses its output back; its final state is the op's
last step, ``Y[0]``. ``layout=1`` is a TRANSPOSE of ``X`` and the initial states in and of the
outputs out.

Not lowered (refused, naming the node): ``sequence_lens`` (the builtin has no per-sequence
lengths), ``clip`` (TFLite's ``cell_clip`` bounds ``c_t`` itself while ONNX bounds the input of
every activation), non-default activations, ``input_forget``, run-time weights, a dynamic batch
together with the dynamic sequence axis, and int8.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from tflite.ActivationFunctionType import ActivationFunctionType

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_window import unsupported
from qcc.backends._tflite_rnn_cell import INITIAL_C, INITIAL_H, SEQUENCE_LENS, B, P, R, Recurrent, W, X, used
from qcc.backends._tflite_writer import Tensor
from qcc.irutils import attr_int, const_array

# ONNX gate block of each TFLite gate, in the builtin's order i, f, c, o (ONNX stacks i, o, f, c).
_ONNX_BLOCK = {"i": 0, "o": 1, "f": 2, "c": 3}
_TFLITE_GATES = "ifco"
# ONNX peephole block (P is i, o, f) of the builtin's cell_to_input, cell_to_forget, cell_to_output.
_PEEPHOLE_BLOCK = {"i": 0, "f": 2, "o": 1}


def has_dynamic_sequence(lw: Lowering, node: ir.Node) -> bool:
    """True when the time axis of the LSTM's ``X`` is dynamic (``-1`` in its signature)."""
    x = lw.input(node, X)
    axis = 1 if attr_int(node, "layout", 0) else 0
    return len(x.signature) == 3 and x.signature[axis] == -1


def sequence_lstm(lw: Lowering, node: ir.Node) -> None:
    """LSTM with a dynamic sequence axis -> UNIDIRECTIONAL_SEQUENCE_LSTM per direction (see module docstring).

    Raises:
        BackendError: the node runs int8, or uses what the builtin cannot express exactly.
    """
    cell = Recurrent(lw, node, gates=4, defaults=("sigmoid", "tanh", "tanh"), clip_ok=False, fixed=True)
    if attr_int(node, "input_forget", 0):
        raise unsupported(node, "input_forget=1 (coupled input and forget gates)")
    if cell.optional(SEQUENCE_LENS) is not None:
        raise unsupported(
            node,
            "sequence_lens with a dynamic sequence axis (LiteRT's UNIDIRECTIONAL_SEQUENCE_LSTM has no per-sequence "
            "lengths). Fix: drop sequence_lens when every sequence has the full length, or pin the length with "
            "--input-shape",
        )
    for index in (W, R, B, P):
        value = cell.optional(index)
        if value is not None and const_array(value) is None:
            raise unsupported(
                node,
                f"run-time input {index} ({value.name!r}) with a dynamic sequence axis (qcc writes "
                "UNIDIRECTIONAL_SEQUENCE_LSTM with constant weights only). Fix: make the weights initializers",
            )
    x = cell.x  # time major [S, B, I]
    if x.signature[1] == -1:
        raise unsupported(
            node, "a dynamic batch together with a dynamic sequence axis. Fix: pin the batch with --input-shape"
        )
    batch, hidden = cell.batch, cell.hidden
    raw, states = [], []
    for d in range(cell.dirs):
        reverse = cell.direction == "reverse" or d == 1
        source = _reverse(cell, x) if reverse else x
        y, c_state = _direction(cell, d, source)
        raw.append(y)
        states.append(c_state)
    finals_h = [_last_step(cell, y) for y in raw]
    if used(node, 0):
        steps = []
        for d, y in enumerate(raw):
            reverse = cell.direction == "reverse" or d == 1
            y = _reverse(cell, y) if reverse else y
            shaped = _tensor(cell, "y_dir", (x.shape[0], 1, batch, hidden), (-1, 1, batch, hidden))
            steps.append(lw.reshape(y, shaped, node.name))
        joined = steps[0]
        if len(steps) > 1:
            joined = _tensor(cell, "y", (x.shape[0], 2, batch, hidden), (-1, 2, batch, hidden))
            lw.op("CONCATENATION", steps, [joined], "ConcatenationOptions", source=node.name, axis=1)
        _write(cell, 0, joined, (2, 0, 1, 3))
    if used(node, 1):
        _write(cell, 1, _stack(cell, finals_h), (1, 0, 2))
    if used(node, 2):
        zero = lw.constant(f"{node.name}_zero", np.zeros((), np.float32))
        finals_c = []
        for c_state, h_last in zip(states, finals_h, strict=True):
            # c + 0 * h_T: the value of the cell variable, read after the LSTM has written it.
            after = cell.emit("MUL", [h_last, zero], h_last.shape, "MulOptions")
            finals_c.append(cell.emit("ADD", [c_state, after], h_last.shape, "AddOptions"))
        _write(cell, 2, _stack(cell, finals_c), (1, 0, 2))


def _direction(cell: Recurrent, d: int, x: Tensor) -> tuple[Tensor, Tensor]:
    """One UNIDIRECTIONAL_SEQUENCE_LSTM over time-major ``x``; returns its [S, B, H] output and cell variable."""
    lw, node, hidden, batch = cell.lw, cell.node, cell.hidden, cell.batch
    w, r = const_array(node.inputs[W])[d], const_array(node.inputs[R])[d]
    bias_value = cell.optional(B)
    bias = np.zeros(8 * hidden) if bias_value is None else const_array(bias_value)[d]
    bias = bias[: 4 * hidden] + bias[4 * hidden :]

    def block(array: np.ndarray, gate: str, what: str) -> Tensor:
        k = _ONNX_BLOCK[gate]
        piece = array[k * hidden : (k + 1) * hidden].astype(np.float32)
        return lw.constant(f"{node.name}_d{d}_{what}_{gate}", piece)

    weights_x = [block(w, g, "w") for g in _TFLITE_GATES]
    weights_h = [block(r, g, "r") for g in _TFLITE_GATES]
    biases = [block(bias, g, "b") for g in _TFLITE_GATES]
    peepholes: list[Tensor | int] = [-1, -1, -1]
    p_value = cell.optional(P)
    if p_value is not None and np.any(const_array(p_value)[d]):
        p = const_array(p_value)[d]
        peepholes = [
            lw.constant(f"{node.name}_d{d}_p_{g}", p[k * hidden : (k + 1) * hidden].astype(np.float32))
            for g, k in ((g, _PEEPHOLE_BLOCK[g]) for g in "ifo")
        ]
    variables = []
    for index, name in ((INITIAL_H, "h"), (INITIAL_C, "c")):
        variable = lw.model.tensor(f"{node.name}_d{d}_{name}_state", (batch, hidden), np.float32)
        variable.is_variable = True
        _write_state(cell, index, d, variable)
        variables.append(variable)
    y = _tensor(cell, f"d{d}_y", (x.shape[0], batch, hidden), (-1, batch, hidden))
    inputs = [x, *weights_x, *weights_h, *peepholes, *biases, -1, -1, *variables, -1, -1, -1, -1]
    lw.op(
        "UNIDIRECTIONAL_SEQUENCE_LSTM",
        inputs,
        [y],
        "UnidirectionalSequenceLSTMOptions",
        source=node.name,
        fused_activation_function=ActivationFunctionType.TANH,
        cell_clip=0.0,
        proj_clip=0.0,
        time_major=True,
    )
    return y, variables[1]


def _write_state(cell: Recurrent, index: int, d: int, variable: Tensor) -> None:
    """Writes direction ``d``'s initial state (input ``index``; zeros when absent) into ``variable``.

    This runs on every invocation, since LiteRT keeps a variable tensor's value across invoke()
    calls. Two LiteRT behaviours decide the op (measured, 2.3.0): an op whose inputs are all
    constant may be computed once at allocation (STRIDED_SLICE is), after which the LSTM's final
    state would leak into the next invocation, so a constant state is ADDed to zero; and the arena
    planner may run an ADD or RESHAPE in place, giving the variable its intermediate input's
    memory instead of its own (the builtin LSTM kernel then crashed), so a run-time state is
    written by STRIDED_SLICE, which never runs in place.
    """
    lw, node, batch, hidden = cell.lw, cell.node, cell.batch, cell.hidden
    value = cell.optional(index)
    array = None if value is None else const_array(value)
    if value is None or array is not None:
        if array is None:
            state = np.zeros((batch, hidden), np.float32)
        else:
            state = (np.swapaxes(array, 0, 1) if cell.layout else array)[d].astype(np.float32)
        name = f"{node.name}_zero_state" if not np.any(state) else f"{value.name}_d{d}"
        zero = lw.constant(f"{node.name}_zero", np.zeros((), np.float32))
        lw.op("ADD", [lw.constant(name, state), zero], [variable], "AddOptions", source=node.name)
        return
    states = lw.input(node, index)
    if cell.layout:
        states = cell.transpose(states, (1, 0, 2))
    begin = cell.int32(f"state_begin{d}", [d, 0, 0])
    end = cell.int32(f"state_end{d}", [d + 1, batch, hidden])
    lw.op(
        "STRIDED_SLICE",
        [states, begin, end, cell.int32("state_strides", [1, 1, 1])],
        [variable],
        "StridedSliceOptions",
        source=node.name,
        shrink_axis_mask=1,
    )


def _tensor(cell: Recurrent, name: str, shape, signature) -> Tensor:
    """A float32 intermediate with ``-1`` at the sequence axis of its signature."""
    tensor = cell.lw.model.tensor(f"{cell.node.name}_{name}", tuple(shape), np.float32)
    tensor.shape_signature = tuple(signature)
    return tensor


def _reverse(cell: Recurrent, x: Tensor) -> Tensor:
    """REVERSE_V2 of a time-major tensor along time."""
    out = _tensor(cell, "reversed", x.shape, (-1, *x.shape[1:]))
    cell.lw.op("REVERSE_V2", [x, cell.int32("time_axis", [0])], [out], source=cell.node.name)
    return out


def _last_step(cell: Recurrent, y: Tensor) -> Tensor:
    """``y[-1]`` of an [S, B, H] tensor of any length: STRIDED_SLICE from -1, the time axis shrunk."""
    batch, hidden = y.shape[1:]
    begin = cell.int32("last_begin", [-1, 0, 0])
    end = cell.int32("last_end", [0, batch, hidden])
    strides = cell.int32("last_strides", [1, 1, 1])
    return cell.emit(
        "STRIDED_SLICE",
        [y, begin, end, strides],
        (batch, hidden),
        "StridedSliceOptions",
        end_mask=1,
        shrink_axis_mask=1,
    )


def _stack(cell: Recurrent, finals: list[Tensor]) -> Tensor:
    """[B, H] per direction -> [dirs, B, H]."""
    batch, hidden = finals[0].shape
    rows = [cell.reshape(f, (1, batch, hidden)) for f in finals]
    if len(rows) == 1:
        return rows[0]
    return cell.emit("CONCATENATION", rows, (len(rows), batch, hidden), "ConcatenationOptions", axis=0)


def _write(cell: Recurrent, index: int, x: Tensor, perm: tuple[int, ...]) -> None:
    """Writes output ``index`` from its time-major value (``layout=1``: TRANSPOSE by ``perm``)."""
    out = cell.lw.output(cell.node, index)
    if cell.layout:
        cell.transpose(x, perm, out=out)
    else:
        cell.lw.reshape(x, out, cell.node.name)
