"""ONNX LSTM, GRU and RNN -> unrolled chains of float32 TFLite builtins that XNNPACK takes.

Shapes follow ONNX: ``X`` [S, B, I] (``layout=1``: [B, S, I]), per direction ``d`` the gate
blocks of ``W`` [dirs, G*H, I], ``R`` [dirs, G*H, H] and ``B`` = [Wb, Rb] [dirs, 2*G*H]. With the
activations ``f, g, h`` (defaults Sigmoid, Tanh, Tanh) the cells are::

    LSTM (G=4, gates i, o, f, c)    z_t = X_t W^T + (Wb + Rb) + h_{t-1} R^T, split into z_i, z_o, z_f, z_c
                                    i = f(z_i + P_i c_{t-1}), f_t = f(z_f + P_f c_{t-1}), c~ = g(z_c)
                                    c_t = f_t * c_{t-1} + i * c~;  o = f(z_o + P_o c_t);  h_t = o * h(c_t)
    GRU (G=3, gates z, r, h)        z = f(X_t W_z^T + h_{t-1} R_z^T + Wb_z + Rb_z), r likewise
                                    h~ = g(X_t W_h^T + (r * h_{t-1}) R_h^T + Wb_h + Rb_h)      linear_before_reset=0
                                    h~ = g(X_t W_h^T + r * (h_{t-1} R_h^T + Rb_h) + Wb_h)      linear_before_reset=1
                                    h_t = (1 - z) * h~ + z * h_{t-1} = h~ + z * (h_{t-1} - h~)
    RNN (G=1)                       h_t = f(X_t W^T + h_{t-1} R^T + Wb + Rb)

This module writes those gate equations, step by step, with LOGISTIC/TANH/RELU/MUL/ADD/SUB; the
unrolling they share (the input projection of every step, the recurrent FULLY_CONNECTED, the
time order of each direction, ``sequence_lens`` masks, ``layout`` and the outputs) is
:class:`~qcc.backends._tflite_rnn_cell.Recurrent`, whose module states it.

Why unrolled, not UNIDIRECTIONAL_SEQUENCE_LSTM (or _RNN): the builtin's states are *variable*
tensors that persist across invocations (an initial state has to be written into them by an op on
every run), it returns only ``Y`` (``Y_c`` is read from the cell variable afterwards), there is no
GRU builtin at all, and the XNNPACK delegate has no recurrent node, so it runs on the builtin
kernel and splits the delegated graph. The unrolled chain is stateless, exact to float32 and stays
in one XNNPACK partition; it needs a static sequence length. An LSTM whose sequence axis is
dynamic (``-1`` in the signature of ``X``) is therefore lowered to UNIDIRECTIONAL_SEQUENCE_LSTM
instead (:mod:`~qcc.backends._tflite_ops_seqlstm`); when that lowering refuses the node
(``sequence_lens``, run-time weights), the emitter falls back to a static artifact of this one.

The recurrent ops stay float (the plan keeps ops without an int8 kernel in ``TFLITE_SPEC`` float;
TFLite's integer LSTM needs int16 cell states and per-gate intermediate scales qcc does not
calibrate), so each is a float island: DEQUANTIZE before it and QUANTIZE after it come from the
:class:`Lowering`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_seqlstm import has_dynamic_sequence, sequence_lstm
from qcc.backends._tflite_ops_window import unsupported
from qcc.backends._tflite_rnn_cell import INITIAL_C, INITIAL_H, P, R, Recurrent
from qcc.backends._tflite_writer import Tensor
from qcc.irutils import attr_int, const_array


def lstm(lw: Lowering, node: ir.Node) -> None:
    """LSTM (forward, reverse or bidirectional; float) -> unrolled FULLY_CONNECTED/LOGISTIC/TANH/MUL/ADD.

    Raises:
        BackendError: the node runs int8, has non-default activations, ``clip`` or ``input_forget``.
    """
    if has_dynamic_sequence(lw, node):
        # Unrolling bakes the length: LiteRT's builtin loops over any length (_tflite_ops_seqlstm).
        sequence_lstm(lw, node)
        return
    cell = Recurrent(lw, node, gates=4, defaults=("sigmoid", "tanh", "tanh"), clip_ok=False, fixed=True)
    if attr_int(node, "input_forget", 0):
        raise unsupported(node, "input_forget=1 (coupled input and forget gates)")
    hidden, finals_c = cell.hidden, []

    def run(d: int) -> tuple[list[Tensor], Tensor]:
        f, g, h_act = cell.activations[d]
        gates_x = cell.projection(d, cell.bias(d, (1, 1, 1, 1), (1, 1, 1, 1)))
        r = cell.matrix(R, d, 0, 4 * hidden)
        peep = _peepholes(cell, d)
        h, c = cell.initial(INITIAL_H, d), cell.initial(INITIAL_C, d)
        per_step: list[Tensor | None] = [None] * cell.steps
        split_axis = cell.int32("split_axis", 1)
        state = (cell.batch, hidden)
        for t in cell.order(d):
            z = cell.rows(gates_x, t, 0, 4 * hidden)
            if h is not None:
                z = cell.emit("ADD", [z, cell.fc(h, r)], z.shape, "AddOptions")
            gates = [lw.model.tensor(f"{node.name}_t{t}_z{k}", state, np.float32) for k in "iofc"]
            lw.op("SPLIT", [split_axis, z], gates, "SplitOptions", source=node.name, num_splits=4)
            z_i, z_o, z_f, z_c = gates
            i = cell.activate(f, cell.peep(z_i, peep, 0, c))
            c_new = cell.emit("MUL", [i, cell.activate(g, z_c)], state, "MulOptions")
            if c is not None:
                forget = cell.activate(f, cell.peep(z_f, peep, 2, c))
                kept = cell.emit("MUL", [forget, c], state, "MulOptions")
                c_new = cell.emit("ADD", [kept, c_new], state, "AddOptions")
            o = cell.activate(f, cell.peep(z_o, peep, 1, c_new))
            h_new = cell.emit("MUL", [o, cell.activate(h_act, c_new)], state, "MulOptions")
            h, mask = _record_step(cell, per_step, t, h_new, h)
            c = cell.hold(mask, c_new, c)
        finals_c.append(c)
        return per_step, h

    cell.write_outputs(*_run_directions(cell, run), finals_c)


def gru(lw: Lowering, node: ir.Node) -> None:
    """GRU (any direction, either ``linear_before_reset``; float) -> unrolled FULLY_CONNECTED and gates.

    Raises:
        BackendError: the node runs int8 or has activations other than Sigmoid/Tanh/Relu.
    """
    cell = Recurrent(lw, node, gates=3, defaults=("sigmoid", "tanh"), clip_ok=True)
    hidden, before_reset = cell.hidden, bool(attr_int(node, "linear_before_reset", 0))

    def run(d: int) -> tuple[list[Tensor], Tensor]:
        f, g = cell.activations[d]
        # Rb_h meets r only when linear_before_reset=1; otherwise it joins the input projection.
        gates_x = cell.projection(d, cell.bias(d, (1, 1, 1), (1, 1, int(not before_reset))))
        if before_reset:
            r_all = cell.matrix(R, d, 0, 3 * hidden)
            bias_r = cell.bias(d, (0, 0, 0), (0, 0, 1))
            first_rec_h = cell.bias(d, (0,), (1,), first=2)  # h_{-1} R_h^T + Rb_h with a zero h_{-1}
        else:
            r_zr, r_h = cell.matrix(R, d, 0, 2 * hidden), cell.matrix(R, d, 2 * hidden, 3 * hidden)
        h = cell.initial(INITIAL_H, d)
        per_step: list[Tensor | None] = [None] * cell.steps
        split_axis = cell.int32("split_axis", 1)
        state = (cell.batch, hidden)
        for t in cell.order(d):
            pre_zr, pre_h = cell.rows(gates_x, t, 0, 2 * hidden), cell.rows(gates_x, t, 2 * hidden, 3 * hidden)
            if before_reset:
                if h is None:
                    rec_h = first_rec_h
                else:
                    rec = cell.fc(h, r_all, bias_r)
                    pre_zr = cell.emit("ADD", [pre_zr, cell.rows(rec, 0, 0, 2 * hidden, time=False)], pre_zr.shape,
                                       "AddOptions")
                    rec_h = cell.rows(rec, 0, 2 * hidden, 3 * hidden, time=False)
            elif h is not None:
                pre_zr = cell.emit("ADD", [pre_zr, cell.fc(h, r_zr)], pre_zr.shape, "AddOptions")
            zr = cell.activate(f, pre_zr)
            z, r = (lw.model.tensor(f"{node.name}_t{t}_{k}", state, np.float32) for k in "zr")
            lw.op("SPLIT", [split_axis, zr], [z, r], "SplitOptions", source=node.name, num_splits=2)
            if before_reset and rec_h is not None:
                pre_h = cell.emit("ADD", [pre_h, cell.emit("MUL", [r, rec_h], state, "MulOptions")], state,
                                  "AddOptions")
            elif not before_reset and h is not None:
                reset = cell.emit("MUL", [r, h], state, "MulOptions")
                pre_h = cell.emit("ADD", [pre_h, cell.fc(reset, r_h)], state, "AddOptions")
            candidate = cell.activate(g, pre_h)
            if h is None:
                h_new = cell.emit("SUB", [candidate, cell.emit("MUL", [z, candidate], state, "MulOptions")], state,
                                  "SubOptions")
            else:
                step = cell.emit("MUL", [z, cell.emit("SUB", [h, candidate], state, "SubOptions")], state,
                                 "MulOptions")
                h_new = cell.emit("ADD", [candidate, step], state, "AddOptions")
            h, _ = _record_step(cell, per_step, t, h_new, h)
        return per_step, h

    cell.write_outputs(*_run_directions(cell, run))


def rnn(lw: Lowering, node: ir.Node) -> None:
    """RNN (any direction; float) -> unrolled FULLY_CONNECTED, ADD and the activation.

    Raises:
        BackendError: the node runs int8 or has activations other than Sigmoid/Tanh/Relu.
    """
    cell = Recurrent(lw, node, gates=1, defaults=("tanh",), clip_ok=True)

    def run(d: int) -> tuple[list[Tensor], Tensor]:
        (f,) = cell.activations[d]
        gates_x = cell.projection(d, cell.bias(d, (1,), (1,)))
        r = cell.matrix(R, d, 0, cell.hidden)
        h = cell.initial(INITIAL_H, d)
        per_step: list[Tensor | None] = [None] * cell.steps
        for t in cell.order(d):
            pre = cell.rows(gates_x, t, 0, cell.hidden)
            if h is not None:
                pre = cell.emit("ADD", [pre, cell.fc(h, r)], pre.shape, "AddOptions")
            h_new = cell.activate(f, pre)
            h, _ = _record_step(cell, per_step, t, h_new, h)
        return per_step, h

    cell.write_outputs(*_run_directions(cell, run))


def _record_step(
    cell: Recurrent, per_step: list[Tensor | None], t: int, h_new: Tensor, h: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """Stores step ``t``'s output in ``per_step`` and returns the hidden state carried to the next step.

    Past a sequence's end (``sequence_lens``) the step's output is zero and the state is held.

    Returns:
        The carried hidden state and step ``t``'s mask (None without ``sequence_lens``), for the
        other states to hold with.
    """
    mask = cell.mask(t)
    per_step[t] = cell.hold(mask, h_new, None)
    return cell.hold(mask, h_new, h), mask


def _run_directions(
    cell: Recurrent, run: Callable[[int], tuple[list[Tensor], Tensor]]
) -> tuple[list[list[Tensor]], list[Tensor]]:
    """Runs ``run`` (one direction's unrolled steps) for each direction, forward first.

    Returns:
        Every direction's per-step outputs and every direction's final hidden state, as
        ``Recurrent.write_outputs`` takes them.
    """
    outputs = [run(d) for d in range(cell.dirs)]
    return [o[0] for o in outputs], [o[1] for o in outputs]


def _peepholes(cell: Recurrent, d: int) -> list[Tensor] | None:
    """LSTM peepholes P [dirs, 3H] (order i, o, f) of direction ``d`` as three [H] tensors, or None when zero."""
    value = cell.optional(P)
    if value is None:
        return None
    hidden = cell.hidden
    array = const_array(value)
    if array is not None:
        if not np.any(array[d]):
            return None
        return [cell.lw.constant(f"{value.name}_d{d}_{k}", array[d, k * hidden : (k + 1) * hidden].astype(np.float32))
                for k in range(3)]
    full = cell.lw.input(cell.node, P)
    return [cell.reshape(cell.slice(full, [d, k * hidden], [1, hidden]), (hidden,)) for k in range(3)]
