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

The input projection ``X W^T`` plus the biases that do not meet ``r`` is one FULLY_CONNECTED
over the [S*B, I] sequence; each step then SLICEs its rows, adds the recurrent FULLY_CONNECTED
(``h R^T``, no bias) and applies the gates with LOGISTIC/TANH/RELU/MUL/ADD/SUB. GRU and RNN
``clip`` bounds each activation's input with MINIMUM/MAXIMUM. A zero (or absent) initial state
drops the first step's recurrent product (and LSTM's forget term). The reverse direction runs the
steps from the last to the first; ``Y`` keeps time order. ``Y`` is the CONCATENATION of the steps'
``h`` (a tree of at most 5 inputs per op, the most XNNPACK takes), ``Y_h``/``Y_c`` the last step's
state; only the outputs that are read are written. With ``sequence_lens`` (shorter sequences in
the batch) each step's new state is ``SELECT_V2(t < len, new, old)`` and its ``Y`` row
``SELECT_V2(t < len, new, 0)``: a sequence's state stops at its end, which in the reverse
direction means it starts at its own last step, as ONNX says. ``layout=1`` is a TRANSPOSE of ``X`` (and the
initial states) in and of the outputs out. ``W``, ``R``, ``B`` and ``P`` may be run-time tensors:
each direction's block is then a SLICE + RESHAPE of it (the FULLY_CONNECTEDs take run-time weights).

Why not UNIDIRECTIONAL_SEQUENCE_LSTM (or _RNN): its states are *variable* tensors that persist
across invocations (an initial state cannot be fed per call as ONNX's ``initial_h``/``initial_c``),
it has no final-cell-state output, there is no GRU builtin at all, and the XNNPACK delegate has no
recurrent node, so it would run on the builtin kernel and split the delegated graph. The unrolled
chain is stateless, exact to float32 and stays in one XNNPACK partition; it needs a static sequence
length, which TFLite tensors have.

The recurrent ops stay float (the plan keeps ops without an int8 kernel in ``TFLITE_SPEC`` float;
TFLite's integer LSTM needs int16 cell states and per-gate intermediate scales qcc does not
calibrate), so each is a float island: DEQUANTIZE before it and QUANTIZE after it come from the
:class:`Lowering`.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_window import unsupported
from qcc.backends._tflite_writer import Tensor
from qcc.irutils import attr_int, const_array

_MAX_CONCAT_INPUTS = 5
_X, _W, _R, _B, _SEQUENCE_LENS, _INITIAL_H, _INITIAL_C, _P = range(8)
# ONNX activation name (lower case) -> the TFLite builtin computing it (parameter-free ones only).
_ACTIVATIONS = {"sigmoid": "LOGISTIC", "tanh": "TANH", "relu": "RELU"}


def lstm(lw: Lowering, node: ir.Node) -> None:
    """LSTM (forward, reverse or bidirectional; float) -> unrolled FULLY_CONNECTED/LOGISTIC/TANH/MUL/ADD.

    Raises:
        BackendError: the node runs int8, has non-default activations, ``clip`` or ``input_forget``.
    """
    cell = _Recurrent(lw, node, gates=4, defaults=("sigmoid", "tanh", "tanh"), clip_ok=False, fixed=True)
    if attr_int(node, "input_forget", 0):
        raise unsupported(node, "input_forget=1 (coupled input and forget gates)")
    hidden, finals_c = cell.hidden, []

    def run(d: int) -> tuple[list[Tensor], Tensor]:
        f, g, h_act = cell.activations[d]
        gates_x = cell.projection(d, cell.bias(d, (1, 1, 1, 1), (1, 1, 1, 1)))
        r = cell.matrix(_R, d, 0, 4 * hidden)
        peep = _peepholes(cell, d)
        h, c = cell.initial(_INITIAL_H, d), cell.initial(_INITIAL_C, d)
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
            mask = cell.mask(t)
            per_step[t] = cell.hold(mask, h_new, None)
            h, c = cell.hold(mask, h_new, h), cell.hold(mask, c_new, c)
        finals_c.append(c)
        return per_step, h

    outputs = [run(d) for d in range(cell.dirs)]
    cell.write_outputs([o[0] for o in outputs], [o[1] for o in outputs], finals_c)


def gru(lw: Lowering, node: ir.Node) -> None:
    """GRU (any direction, either ``linear_before_reset``; float) -> unrolled FULLY_CONNECTED and gates.

    Raises:
        BackendError: the node runs int8 or has activations other than Sigmoid/Tanh/Relu.
    """
    cell = _Recurrent(lw, node, gates=3, defaults=("sigmoid", "tanh"), clip_ok=True)
    hidden, before_reset = cell.hidden, bool(attr_int(node, "linear_before_reset", 0))

    def run(d: int) -> tuple[list[Tensor], Tensor]:
        f, g = cell.activations[d]
        # Rb_h meets r only when linear_before_reset=1; otherwise it joins the input projection.
        gates_x = cell.projection(d, cell.bias(d, (1, 1, 1), (1, 1, int(not before_reset))))
        if before_reset:
            r_all = cell.matrix(_R, d, 0, 3 * hidden)
            bias_r = cell.bias(d, (0, 0, 0), (0, 0, 1))
            first_rec_h = cell.bias(d, (0,), (1,), first=2)  # h_{-1} R_h^T + Rb_h with a zero h_{-1}
        else:
            r_zr, r_h = cell.matrix(_R, d, 0, 2 * hidden), cell.matrix(_R, d, 2 * hidden, 3 * hidden)
        h = cell.initial(_INITIAL_H, d)
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
            mask = cell.mask(t)
            per_step[t] = cell.hold(mask, h_new, None)
            h = cell.hold(mask, h_new, h)
        return per_step, h

    outputs = [run(d) for d in range(cell.dirs)]
    cell.write_outputs([o[0] for o in outputs], [o[1] for o in outputs])


def rnn(lw: Lowering, node: ir.Node) -> None:
    """RNN (any direction; float) -> unrolled FULLY_CONNECTED, ADD and the activation.

    Raises:
        BackendError: the node runs int8 or has activations other than Sigmoid/Tanh/Relu.
    """
    cell = _Recurrent(lw, node, gates=1, defaults=("tanh",), clip_ok=True)

    def run(d: int) -> tuple[list[Tensor], Tensor]:
        (f,) = cell.activations[d]
        gates_x = cell.projection(d, cell.bias(d, (1,), (1,)))
        r = cell.matrix(_R, d, 0, cell.hidden)
        h = cell.initial(_INITIAL_H, d)
        per_step: list[Tensor | None] = [None] * cell.steps
        for t in cell.order(d):
            pre = cell.rows(gates_x, t, 0, cell.hidden)
            if h is not None:
                pre = cell.emit("ADD", [pre, cell.fc(h, r)], pre.shape, "AddOptions")
            h_new = cell.activate(f, pre)
            mask = cell.mask(t)
            per_step[t] = cell.hold(mask, h_new, None)
            h = cell.hold(mask, h_new, h)
        return per_step, h

    outputs = [run(d) for d in range(cell.dirs)]
    cell.write_outputs([o[0] for o in outputs], [o[1] for o in outputs])


class _Recurrent:
    """What LSTM, GRU and RNN share: checks, weights, initial states, time order and outputs."""

    def __init__(
        self, lw: Lowering, node: ir.Node, gates: int, defaults: tuple[str, ...], clip_ok: bool, fixed: bool = False
    ) -> None:
        self.lw, self.node, self.gates, self.count = lw, node, gates, 0
        if lw.is_int8(node):
            why = f"int8 {node.op_type} (TFLite has no int8 {node.op_type} qcc can feed; keep it float)"
            raise unsupported(node, why)
        for name in ("activation_alpha", "activation_beta") + (() if clip_ok else ("clip",)):
            if name in node.attributes:
                raise unsupported(node, f"attribute {name!r}")
        w = node.inputs[_W]
        if w is None or w.shape is None or len(w.shape) != 3:
            raise unsupported(node, "W needs a static [num_directions, gates*hidden, input] shape")
        self.dirs, self.hidden = int(w.shape[0]), int(w.shape[1]) // gates
        self.layout = attr_int(node, "layout", 0)
        direction = node.attributes.get("direction")
        self.direction = "forward" if direction is None else direction.as_string()
        self.activations = _activations(node, defaults, self.dirs, fixed)
        clip = node.attributes.get("clip")
        self.clip = None if clip is None else float(clip.as_float())
        x = lw.input(node, _X)
        if self.layout:
            x = self.transpose(x, (1, 0, 2))
        self.x, self.steps, self.batch = x, x.shape[0], x.shape[1]
        lengths = self._optional(_SEQUENCE_LENS)
        array = const_array(lengths)
        self.lengths = None  # every sequence is the full length: nothing to mask
        if lengths is not None and (array is None or np.any(array != self.steps)):
            self.lengths = lw.read(lengths, False)
            if self.lengths.dtype != np.int32:
                raise unsupported(node, f"sequence_lens of type {self.lengths.dtype} (ONNX says int32)")
        self._masks: dict[int, Tensor] = {}

    # -- emitting ---------------------------------------------------------------------------------

    def emit(self, op: str, inputs, shape, options: str | None = None, **fields) -> Tensor:
        """Appends ``op`` writing a new float32 tensor of ``shape`` and returns that tensor."""
        self.count += 1
        out = self.lw.model.tensor(f"{self.node.name}_{op.lower()}{self.count}", tuple(shape), np.float32)
        self.lw.op(op, inputs, [out], options, source=self.node.name, **fields)
        return out

    def int32(self, name: str, values) -> Tensor:
        """An int32 constant (shape vectors, axes)."""
        return self.lw.constant(f"{self.node.name}_{name}", np.array(values, np.int32))

    def fc(self, x: Tensor, weights: Tensor, bias: Tensor | None = None) -> Tensor:
        """``x W^T (+ bias)``: FULLY_CONNECTED over the last axis, [rows, in] -> [rows, out]."""
        if bias is not None and bias.data is None:
            # A run-time bias is an ADD: FULLY_CONNECTED's bias input is meant to be a constant.
            return self.emit("ADD", [self.fc(x, weights), bias], (x.shape[0], weights.shape[0]), "AddOptions")
        return self.emit(
            "FULLY_CONNECTED",
            [x, weights, -1 if bias is None else bias],
            (int(np.prod(x.shape[:-1])), weights.shape[0]),
            "FullyConnectedOptions",
            keep_num_dims=False,
        )

    def transpose(self, x: Tensor, perm: tuple[int, ...], out: Tensor | None = None) -> Tensor:
        """TRANSPOSE of ``x`` by ``perm`` (into ``out`` when given)."""
        shape = tuple(x.shape[p] for p in perm)
        if out is not None:
            self.lw.op("TRANSPOSE", [x, self.int32(f"perm{''.join(map(str, perm))}", perm)], [out],
                       source=self.node.name)
            return out
        return self.emit("TRANSPOSE", [x, self.int32(f"perm{''.join(map(str, perm))}", perm)], shape)

    def reshape(self, x: Tensor, shape, out: Tensor | None = None) -> Tensor:
        """RESHAPE of ``x`` to ``shape`` (into ``out`` when given)."""
        shape = tuple(int(s) for s in shape)
        if out is None:
            self.count += 1
            out = self.lw.model.tensor(f"{self.node.name}_reshape{self.count}", shape, np.float32)
        return self.lw.reshape(x, out, self.node.name)

    def slice(self, x: Tensor, begin, size) -> Tensor:
        """SLICE of ``x`` from ``begin`` with ``size``."""
        self.count += 1
        begin_t = self.int32(f"begin{self.count}", begin)
        return self.emit("SLICE", [x, begin_t, self.int32(f"size{self.count}", size)], size, "SliceOptions")

    def activate(self, name: str, x: Tensor) -> Tensor:
        """An activation of ``x``, its input first bounded to [-clip, clip] when the node has ``clip``."""
        if self.clip is not None:
            high = self.lw.constant(f"{self.node.name}_clip_high", np.array(self.clip, np.float32))
            low = self.lw.constant(f"{self.node.name}_clip_low", np.array(-self.clip, np.float32))
            x = self.emit("MINIMUM", [x, high], x.shape, "MaximumMinimumOptions")
            x = self.emit("MAXIMUM", [x, low], x.shape, "MaximumMinimumOptions")
        return self.emit(name, [x], x.shape)

    def mask(self, t: int) -> Tensor | None:
        """[B, 1] bool, step ``t`` lies inside each sequence (``t < sequence_lens``); None without lengths."""
        if self.lengths is None:
            return None
        if t not in self._masks:
            name = f"{self.node.name}_t{t}_inside"
            inside = self.lw.model.tensor(name, (self.batch,), np.bool_)
            self.lw.op("LESS", [self.int32(f"t{t}", t), self.lengths], [inside], source=self.node.name)
            column = self.lw.model.tensor(f"{name}_column", (self.batch, 1), np.bool_)
            self._masks[t] = self.lw.reshape(inside, column, self.node.name)
        return self._masks[t]

    def hold(self, mask: Tensor | None, new: Tensor, old: Tensor | None) -> Tensor:
        """``new`` where ``mask`` holds, else ``old`` (zero when None): a state past a sequence's end."""
        if mask is None:
            return new
        if old is None:
            old = self.lw.constant(f"{self.node.name}_zero_state", np.zeros(new.shape, np.float32))
        return self.emit("SELECT_V2", [mask, new, old], new.shape, "SelectV2Options")

    def peep(self, z: Tensor, peep: list[Tensor] | None, k: int, c: Tensor | None) -> Tensor:
        """``z + P_k * c`` (LSTM peephole ``k``: 0 input, 1 output, 2 forget), or ``z`` without one."""
        if peep is None or c is None:
            return z
        return self.emit("ADD", [z, self.emit("MUL", [c, peep[k]], z.shape, "MulOptions")], z.shape, "AddOptions")

    # -- weights ----------------------------------------------------------------------------------

    def matrix(self, index: int, d: int, start: int, stop: int) -> Tensor:
        """Rows ``start:stop`` of ``W``/``R`` for direction ``d`` as a [rows, columns] float32 tensor."""
        value = self.node.inputs[index]
        array = const_array(value)
        if array is not None:
            return self.lw.constant(f"{value.name}_d{d}_{start}_{stop}", array[d, start:stop].astype(np.float32))
        full = self.lw.input(self.node, index)
        piece = self.slice(full, [d, start, 0], [1, stop - start, full.shape[2]])
        return self.reshape(piece, (stop - start, full.shape[2]))

    def bias(self, d: int, w_mask, r_mask, first: int = 0) -> Tensor | None:
        """``Wb * w_mask + Rb * r_mask`` over the gate blocks ``first:first+len(mask)`` of direction ``d``.

        Each mask entry (0 or 1) scales one block of ``hidden`` values. Returns None when the sum
        is zero (no ``B``, or every mask entry 0, or a constant zero block).
        """
        value = self._optional(_B)
        if value is None or not any(w_mask) + any(r_mask):
            return None
        hidden, size = self.hidden, len(w_mask) * self.hidden
        start_w, start_r = first * hidden, (self.gates + first) * hidden
        array = const_array(value)
        if array is not None:
            w = array[d, start_w : start_w + size] * np.repeat(np.asarray(w_mask, np.float32), hidden)
            r = array[d, start_r : start_r + size] * np.repeat(np.asarray(r_mask, np.float32), hidden)
            total = (w + r).astype(np.float32)
            if not np.any(total):
                return None
            self.count += 1
            return self.lw.constant(f"{value.name}_d{d}_bias{self.count}", total)
        full = self.lw.input(self.node, _B)
        terms = [
            self._masked(full, d, start, mask)
            for start, mask in ((start_w, w_mask), (start_r, r_mask))
            if any(mask)
        ]
        return terms[0] if len(terms) == 1 else self.emit("ADD", terms, (size,), "AddOptions")

    def _masked(self, full: Tensor, d: int, start: int, mask) -> Tensor:
        size = len(mask) * self.hidden
        piece = self.reshape(self.slice(full, [d, start], [1, size]), (size,))
        if all(mask):
            return piece
        self.count += 1
        weights = self.lw.constant(
            f"{self.node.name}_mask{self.count}", np.repeat(np.asarray(mask, np.float32), self.hidden)
        )
        return self.emit("MUL", [piece, weights], (size,), "MulOptions")

    def projection(self, d: int, bias: Tensor | None) -> Tensor:
        """``X W^T + bias`` of every time step: [S*B, G*H]."""
        return self.fc(self.x, self.matrix(_W, d, 0, self.gates * self.hidden), bias)

    def rows(self, x: Tensor, t: int, start: int, stop: int, time: bool = True) -> Tensor:
        """Columns ``start:stop`` of step ``t``'s rows of an [S*B, n] tensor (``time=False``: of [B, n])."""
        first = t * self.batch if time else 0
        return self.slice(x, [first, start], [self.batch, stop - start])

    def initial(self, index: int, d: int) -> Tensor | None:
        """Direction ``d`` of initial_h/initial_c as a [B, H] tensor, or None when zero."""
        value = self._optional(index)
        if value is None:
            return None
        array = const_array(value)
        if array is not None:
            array = np.swapaxes(array, 0, 1) if self.layout else array
            return self.lw.constant(f"{value.name}_d{d}", array[d].astype(np.float32)) if np.any(array[d]) else None
        state = self.lw.input(self.node, index)
        if self.layout:
            state = self.transpose(state, (1, 0, 2))
        if self.dirs > 1:
            state = self.slice(state, [d, 0, 0], [1, *state.shape[1:]])
        return self.reshape(state, state.shape[1:])

    def order(self, d: int) -> range:
        """The time steps of direction ``d`` in the order they run."""
        reverse = self.direction == "reverse" or d == 1
        return range(self.steps - 1, -1, -1) if reverse else range(self.steps)

    # -- outputs ----------------------------------------------------------------------------------

    def write_outputs(self, outputs_h: list[list[Tensor]], finals_h: list[Tensor], finals_c=None) -> None:
        """Y [S, dirs, B, H] (``layout=1``: [B, S, dirs, H]) and Y_h/Y_c [dirs, B, H] ([B, dirs, H])."""
        node = self.node
        if _used(node, 0):
            steps, (batch, hidden) = len(outputs_h[0]), outputs_h[0][0].shape
            stacked = [self._concatenate(pieces, 0) for pieces in outputs_h]
            joined = stacked[0]
            if len(stacked) > 1:
                # [S*B, H] is [S, B*H] byte for byte: joining the directions on axis 1 gives [S, dirs, B, H].
                rows = [self.reshape(s, (steps, batch * hidden)) for s in stacked]
                joined = self._concatenate(rows, 1)
            self._write(0, joined, (steps, self.dirs, batch, hidden), (2, 0, 1, 3))
        for index, finals in ((1, finals_h), (2, finals_c)):
            if finals is not None and _used(node, index):
                batch, hidden = finals[0].shape
                joined = finals[0] if len(finals) == 1 else self._concatenate(finals, 0)
                self._write(index, joined, (self.dirs, batch, hidden), (1, 0, 2))

    def _write(self, index: int, x: Tensor, shape: tuple[int, ...], perm: tuple[int, ...]) -> None:
        out = self.lw.output(self.node, index)
        if not self.layout:
            self.reshape(x, out.shape, out=out)
            return
        self.transpose(self.reshape(x, shape), perm, out=out)

    def _concatenate(self, pieces: list[Tensor], axis: int) -> Tensor:
        """CONCATENATION of 2-D ``pieces`` along ``axis``, as a tree of at most 5 inputs per op.

        XNNPACK takes CONCATENATION of 2 to 5 inputs only (LiteRT 2.3.0); a wider one runs on the
        builtin kernel and splits the delegated graph.
        """
        while len(pieces) > 1:
            groups = [pieces[k : k + _MAX_CONCAT_INPUTS] for k in range(0, len(pieces), _MAX_CONCAT_INPUTS)]
            pieces = [group[0] if len(group) == 1 else self._join(group, axis) for group in groups]
        return pieces[0]

    def _join(self, group: list[Tensor], axis: int) -> Tensor:
        shape = list(group[0].shape)
        shape[axis] = sum(t.shape[axis] for t in group)
        return self.emit("CONCATENATION", group, shape, "ConcatenationOptions", axis=axis)

    def _optional(self, index: int) -> ir.Value | None:
        return self.node.inputs[index] if len(self.node.inputs) > index else None


def _peepholes(cell: _Recurrent, d: int) -> list[Tensor] | None:
    """LSTM peepholes P [dirs, 3H] (order i, o, f) of direction ``d`` as three [H] tensors, or None when zero."""
    value = cell._optional(_P)  # noqa: SLF001 - a helper of the same module
    if value is None:
        return None
    hidden = cell.hidden
    array = const_array(value)
    if array is not None:
        if not np.any(array[d]):
            return None
        return [cell.lw.constant(f"{value.name}_d{d}_{k}", array[d, k * hidden : (k + 1) * hidden].astype(np.float32))
                for k in range(3)]
    full = cell.lw.input(cell.node, _P)
    return [cell.reshape(cell.slice(full, [d, k * hidden], [1, hidden]), (hidden,)) for k in range(3)]


def _activations(node: ir.Node, defaults: tuple[str, ...], dirs: int, fixed: bool) -> list[tuple[str, ...]]:
    """The activation builtins per direction (``activations`` lists ``len(defaults)`` per direction).

    ``fixed``: only the defaults are accepted (LSTM, whose other activations are not tested yet).
    """
    attr = node.attributes.get("activations")
    names = list(defaults) * dirs if attr is None else [a.lower() for a in attr.as_strings()]
    if attr is not None and len(names) == len(defaults) and dirs == 2:
        names = names * 2
    allowed = set(defaults) if fixed else set(_ACTIVATIONS)
    if any(n not in allowed for n in names) or len(names) != len(defaults) * dirs:
        accepted = "the default ones" if fixed else "Sigmoid, Tanh and Relu"
        raise unsupported(node, f"activations {list(attr.as_strings())} (qcc lowers {accepted}, per direction)")
    n = len(defaults)
    return [tuple(_ACTIVATIONS[a] for a in names[k * n : (k + 1) * n]) for k in range(dirs)]


def _used(node: ir.Node, index: int) -> bool:
    if len(node.outputs) <= index:
        return False
    value = node.outputs[index]
    return bool(value.name) and (bool(value.uses()) or value.is_graph_output())
