"""The unrolled recurrent cell that LSTM, GRU and RNN share (their gate equations: ``_tflite_ops_rnn``).

Per direction, the input projection ``X W^T`` plus the biases that do not meet ``r`` is one
FULLY_CONNECTED over the [S*B, I] sequence (:meth:`Recurrent.projection`); each step then SLICEs
its rows (:meth:`Recurrent.rows`), and the gate equations add the recurrent FULLY_CONNECTED
(``h R^T``, no bias: :meth:`Recurrent.fc`). GRU and RNN ``clip`` bounds each activation's input
with MINIMUM/MAXIMUM. A zero (or absent) initial state is None, so the first step drops its
recurrent product (and LSTM's forget term). The reverse direction runs the steps from the last
to the first; ``Y`` keeps time order. ``Y`` is the CONCATENATION of the steps' ``h`` (a tree of
at most 5 inputs per op, the most XNNPACK takes), ``Y_h``/``Y_c`` the last step's state; only
the outputs that are read are written. With ``sequence_lens`` (shorter sequences in the batch)
each step's new state is ``SELECT_V2(t < len, new, old)`` and its ``Y`` row
``SELECT_V2(t < len, new, 0)``: a sequence's state stops at its end, which in the reverse
direction means it starts at its own last step, as ONNX says. ``layout=1`` is a TRANSPOSE of
``X`` (and the initial states) in and of the outputs out. ``W``, ``R``, ``B`` and ``P`` may be
run-time tensors: each direction's block is then a SLICE + RESHAPE of it (the FULLY_CONNECTEDs
take run-time weights).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_window import unsupported
from qcc.backends._tflite_writer import Tensor
from qcc.irutils import attr_int, const_array

_MAX_CONCAT_INPUTS = 5
# The ONNX input positions of LSTM/GRU/RNN (GRU and RNN stop at INITIAL_H).
X, W, R, B, SEQUENCE_LENS, INITIAL_H, INITIAL_C, P = range(8)
# ONNX activation name (lower case) -> the TFLite builtin computing it (parameter-free ones only).
_ACTIVATIONS = {"sigmoid": "LOGISTIC", "tanh": "TANH", "relu": "RELU"}


class Recurrent:
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
        w = node.inputs[W]
        if w is None or w.shape is None or len(w.shape) != 3:
            raise unsupported(node, "W needs a static [num_directions, gates*hidden, input] shape")
        self.dirs, self.hidden = int(w.shape[0]), int(w.shape[1]) // gates
        self.layout = attr_int(node, "layout", 0)
        direction = node.attributes.get("direction")
        self.direction = "forward" if direction is None else direction.as_string()
        self.activations = _activations(node, defaults, self.dirs, fixed)
        clip = node.attributes.get("clip")
        self.clip = None if clip is None else float(clip.as_float())
        x = lw.input(node, X)
        if self.layout:
            x = self.transpose(x, (1, 0, 2))
        self.x, self.steps, self.batch = x, x.shape[0], x.shape[1]
        lengths = self.optional(SEQUENCE_LENS)
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
        value = self.optional(B)
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
        full = self.lw.input(self.node, B)
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
        return self.fc(self.x, self.matrix(W, d, 0, self.gates * self.hidden), bias)

    def rows(self, x: Tensor, t: int, start: int, stop: int, time: bool = True) -> Tensor:
        """Columns ``start:stop`` of step ``t``'s rows of an [S*B, n] tensor (``time=False``: of [B, n])."""
        first = t * self.batch if time else 0
        return self.slice(x, [first, start], [self.batch, stop - start])

    def initial(self, index: int, d: int) -> Tensor | None:
        """Direction ``d`` of initial_h/initial_c as a [B, H] tensor, or None when zero."""
        value = self.optional(index)
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
        if used(node, 0):
            steps, (batch, hidden) = len(outputs_h[0]), outputs_h[0][0].shape
            stacked = [self._concatenate(pieces, 0) for pieces in outputs_h]
            joined = stacked[0]
            if len(stacked) > 1:
                # [S*B, H] is [S, B*H] byte for byte: joining the directions on axis 1 gives [S, dirs, B, H].
                rows = [self.reshape(s, (steps, batch * hidden)) for s in stacked]
                joined = self._concatenate(rows, 1)
            self._write(0, joined, (steps, self.dirs, batch, hidden), (2, 0, 1, 3))
        for index, finals in ((1, finals_h), (2, finals_c)):
            if finals is not None and used(node, index):
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

    def optional(self, index: int) -> ir.Value | None:
        return self.node.inputs[index] if len(self.node.inputs) > index else None


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


def used(node: ir.Node, index: int) -> bool:
    """True when output ``index`` of the node exists and is read (by a node or as a graph output)."""
    if len(node.outputs) <= index:
        return False
    value = node.outputs[index]
    return bool(value.name) and (bool(value.uses()) or value.is_graph_output())
