"""TFLite lowering rules for the transformer-era ops: Attention (here), RotaryEmbedding
(``_tflite_ops_rotary``) and the state/cache ops LinearAttention, CausalConvWithState,
TensorScatter (``_tflite_ops_state``); ``LOWERINGS`` collects them all.

All are float decompositions (no int8 kernel; the plan keeps them float) into LiteRT builtins,
computed in float32 (float16 data is CAST in and out, as ``Rule`` does).

Attention (opsets 23-25), following ONNX's reference implementation:

* 3-D ``Q [B, S, Hq*D]`` is RESHAPEd to ``[B, S, Hq, D]`` and TRANSPOSEd to ``[B, Hq, S, D]``
  (K, V likewise with ``kv_num_heads``); ``past_key``/``past_value`` are CONCATENATED before K/V
  on the sequence axis and are the ``present_*`` outputs.
* ``scores = (scale * Q) K^T`` with ``scale = 1/sqrt(D)`` by default; grouped-query attention
  (``Hq = g * Hkv``, query head ``h`` reads KV head ``h // g``) needs no repeat: Q viewed as
  ``[B, Hkv, g*S, D]`` is one BATCH_MATMUL (``adj_y``) against K ``[B, Hkv, L, D]``.
* ``softcap > 0``: ``scores = c * tanh(scores / c)``.
* The additive bias ``[.., S, L]`` sums the mask (bool: True -> 0, False -> -inf; float as is,
  padded with -inf up to L), the causal mask (key ``j`` allowed iff ``j <= i + offset``; the offset
  is the past length, or ``nonpad_kv_seqlen[b] - S``), the sliding window
  (``-right <= i + offset - j <= left``) and the padding mask (``j < nonpad_kv_seqlen[b]``).
  Constant parts are folded into one constant; run-time parts (a mask or ``nonpad_kv_seqlen``
  fed at run time) are built with SELECT_V2 / LESS_EQUAL / PADV2.
* ``probs = SOFTMAX(scores + bias)``; a row whose bias is -inf everywhere (no key allowed) is 0
  (SELECT_V2), as ONNX defines it; ``Y = probs V`` (BATCH_MATMUL), back to 3-D if Q was. The
  row test is ``REDUCE_MAX(bias) <= -FLT_MAX``: LiteRT's builtin ADD clamps -inf to -FLT_MAX and
  its REDUCE_MAX starts from -FLT_MAX, so a masked row may top at -FLT_MAX instead of -inf.
* ``qk_matmul_output``: mode 0/1 the (softcapped) scores, 2 with the bias, 3 the probabilities.
  Mode 2 is written through MAXIMUM(., -FLT_MAX): the two resolvers then agree (builtin ADD
  clamps, XNNPACK's does not), and ONNX Runtime writes -FLT_MAX at causal and bool-masked keys
  too; only a float mask holding -inf itself comes out as -FLT_MAX where ONNX Runtime keeps -inf.
* ``softmax_precision`` changes nothing: everything is computed in float32 already.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_float import wanted
from qcc.backends._tflite_ops_rotary import LOWERINGS as ROTARY_LOWERINGS
from qcc.backends._tflite_ops_rule import BOOL, F32, I32, Rule
from qcc.backends._tflite_ops_state import LOWERINGS as STATE_LOWERINGS
from qcc.backends._tflite_ops_state import float_rule, present
from qcc.backends._tflite_ops_window import unsupported
from qcc.backends._tflite_shapes import SIGNATURE_KEY
from qcc.backends._tflite_writer import Tensor
from qcc.irutils import attr_float, attr_int, const_array

INT8_OPS: frozenset[str] = frozenset()
SHARED_SCALE_OPS: frozenset[str] = frozenset()

_NEG_INF = np.float32(-np.inf)
# ONNX's Attention inputs: attn_mask, past_key, past_value, nonpad_kv_seqlen.
_MASK, _PAST_KEY, _PAST_VALUE, _NONPAD = 3, 4, 5, 6


def heads_first(rule: Rule, x: Tensor, heads: int) -> Tensor:
    """``[B, S, H*D]`` -> ``[B, H, S, D]`` (RESHAPE, TRANSPOSE)."""
    b, s, hidden = x.shape
    if heads <= 0 or hidden % heads:
        raise unsupported(rule.node, f"a hidden size {hidden} that {heads} heads do not divide")
    return rule.transpose(rule.reshape(x, [b, s, heads, hidden // heads]), [0, 2, 1, 3])


def attention(lw: Lowering, node: ir.Node) -> None:
    """Attention -> BATCH_MATMUL, SOFTMAX, BATCH_MATMUL with the masks as one additive bias (see module docstring)."""
    rule = float_rule(lw, node)
    q, k, v = rule.data(0), rule.data(1), rule.data(2)
    rank = len(q.shape)
    if rank == 3:
        q = heads_first(rule, q, attr_int(node, "q_num_heads", 0))
        k = heads_first(rule, k, attr_int(node, "kv_num_heads", 0))
        v = heads_first(rule, v, attr_int(node, "kv_num_heads", 0))
    elif rank != 4:
        raise unsupported(node, f"rank-{rank} Q (ONNX takes 3-D or 4-D)")
    batch, q_heads, s, depth = q.shape
    kv_heads = k.shape[1]
    past = present(node, _PAST_KEY)
    if past != present(node, _PAST_VALUE):
        raise unsupported(node, "past_key without past_value or the reverse (ONNX takes both or neither)")
    past_length = lw.read(node.inputs[_PAST_KEY], False).shape[2] if past else 0
    keys = []
    for i, (x, past_index) in enumerate(((k, _PAST_KEY), (v, _PAST_VALUE)), start=1):
        out = rule.result(i) if wanted(node, i) else None
        if past:
            shape = [batch, kv_heads, past_length + x.shape[2], x.shape[3]]
            x = rule.op("CONCATENATION", [rule.data(past_index), x], shape, out=out,
                        options="ConcatenationOptions", axis=2)
        keys.append(x)
    k, v = keys
    length = k.shape[2]
    if q_heads % kv_heads:
        raise unsupported(node, f"{q_heads} query heads over {kv_heads} KV heads (not a multiple)")
    group = q_heads // kv_heads
    scale = attr_float(node, "scale", 0.0) or 1.0 / np.sqrt(depth)
    scaled = rule.op("MUL", [q, rule.const(np.float32(scale))], q.shape, options="MulOptions")
    grouped = rule.reshape(scaled, [batch, kv_heads, group * s, depth])
    scores = rule.op("BATCH_MATMUL", [grouped, k], [batch, kv_heads, group * s, length],
                     options="BatchMatMulOptions", adj_x=False, adj_y=True)
    shape = [batch, q_heads, s, length]
    scores = rule.reshape(scores, shape)
    softcap = attr_float(node, "softcap", 0.0)
    if softcap > 0:
        divided = rule.op("MUL", [scores, rule.const(np.float32(1.0 / softcap))], shape, options="MulOptions")
        tanh = rule.op("TANH", [divided], shape)
        scores = rule.op("MUL", [tanh, rule.const(np.float32(softcap))], shape, options="MulOptions")
    mode = attr_int(node, "qk_matmul_output_mode", 0)
    if mode not in (0, 1, 2, 3):
        raise unsupported(node, f"qk_matmul_output_mode {mode}")
    qk_out = wanted(node, 3)
    if qk_out and mode in (0, 1):
        rule.finish(_copy(rule, scores), 3)
    bias = _bias(rule, node, s, length, past_length, (scaled, k) if _dynamic(node) else None)
    if bias is not None:
        scores = rule.op("ADD", [scores, bias.tensor], shape, options="AddOptions")
    if qk_out and mode == 2:
        # LiteRT's builtin ADD clamps to the finite range and XNNPACK's does not: writing the masked
        # scores at -FLT_MAX (as ONNX Runtime does for causal and bool masks) makes both agree.
        lowest = rule.const(np.finfo(np.float32).min)
        rule.finish(rule.op("MAXIMUM", [scores, lowest], shape), 3)
    probs = rule.op("SOFTMAX", [scores], shape, options="SoftmaxOptions", beta=1.0)
    if bias is not None and bias.masked_rows is not None:
        probs = rule.op("SELECT_V2", [bias.masked_rows, rule.const(np.float32(0)), probs], shape,
                        options="SelectV2Options")
    if qk_out and mode == 3:
        rule.finish(_copy(rule, probs), 3)
    dv = v.shape[3]
    y = rule.op("BATCH_MATMUL", [rule.reshape(probs, [batch, kv_heads, group * s, length]), v],
                [batch, kv_heads, group * s, dv], options="BatchMatMulOptions", adj_x=False, adj_y=False)
    y = rule.reshape(y, [batch, q_heads, s, dv])
    if rank == 3:
        y = rule.reshape(rule.transpose(y, [0, 2, 1, 3]), [batch, s, q_heads * dv])
    rule.finish(y, 0)
    for index, key in enumerate(keys, start=1):
        if wanted(node, index):
            rule.finish(key, index)


def _copy(rule: Rule, x: Tensor) -> Tensor:
    """A RESHAPE copy of ``x`` to finish an output from: finishing ``x`` itself could redirect the op
    that writes ``x`` to the output, while later ops of the rule still read ``x``."""
    return rule.reshape(x, list(x.shape), out=rule.tensor(x.shape, x.dtype))


class _Bias:
    """The additive bias (a tensor broadcastable to the scores) and the rows it masks entirely (bool, or None)."""

    def __init__(self, tensor: Tensor, masked_rows: Tensor | None) -> None:
        self.tensor, self.masked_rows = tensor, masked_rows


def _dynamic(node: ir.Node) -> bool:
    """True when the node reads or writes a value whose size differs between the lowered instances."""
    return any(v is not None and SIGNATURE_KEY in v.meta for v in (*node.inputs, *node.outputs))


def _bias(rule: Rule, node: ir.Node, s: int, length: int, past_length: int, sized) -> _Bias | None:
    """The sum of the mask, causal, window and padding biases (see module docstring), or None without any.

    ``sized`` is ``(q, k)`` when the node's sizes are dynamic: the causal and window biases are then
    computed at run time from their shapes instead of being a constant of one size.
    """
    constant = np.zeros((s, length), np.float32)
    varying: list[Tensor] = []
    # Only a mask or nonpad_kv_seqlen can mask every key of a row (causal and window keep key i + offset).
    whole_rows = False
    if present(node, _MASK):
        mask = const_array(node.inputs[_MASK])
        if mask is not None:
            if mask.dtype == np.bool_:
                mask = np.where(mask, np.float32(0), _NEG_INF)
            mask = mask.astype(np.float32)
            pad = length - mask.shape[-1]
            if pad > 0:
                mask = np.pad(mask, [(0, 0)] * (mask.ndim - 1) + [(0, pad)], constant_values=_NEG_INF)
            constant = constant + mask
        else:
            varying.append(_run_time_mask(rule, node, length))
            whole_rows = True
    causal = bool(attr_int(node, "is_causal", 0))
    left, right = attr_int(node, "left_window_size", -1), attr_int(node, "right_window_size", -1)
    nonpad = None
    if present(node, _NONPAD):
        if past_length:
            raise unsupported(node, "nonpad_kv_seqlen together with past_key (ONNX forbids it)")
        nonpad = const_array(node.inputs[_NONPAD])
        if nonpad is None:
            varying.append(_run_time_nonpad(rule, node, s, length, causal, left, right))
            whole_rows = True
    if sized is not None and not present(node, _NONPAD) and (causal or left >= 0 or right >= 0):
        varying.append(_run_time_causal(rule, node, *sized, causal, left, right))
        # With a constant mask, the two together may leave a row no key.
        whole_rows = whole_rows or bool(np.isneginf(constant).any())
    elif nonpad is not None or not present(node, _NONPAD):
        offset = np.zeros((1,), np.int64) + past_length if nonpad is None else nonpad.reshape(-1) - s
        allowed = _allowed(offset, s, length, causal, left, right)
        if nonpad is not None:
            allowed &= np.arange(length)[None, None, None, :] < nonpad.reshape(-1, 1, 1, 1)
        if not allowed.all():
            constant = constant + np.where(allowed, np.float32(0), _NEG_INF)
    if not varying and not np.any(constant):
        return None
    tensor = None
    if np.any(constant) or not varying:
        tensor = rule.const(constant.astype(np.float32))
    for part in varying:
        if tensor is None:
            tensor = part
            continue
        shape = np.broadcast_shapes(tuple(tensor.shape), tuple(part.shape))
        tensor = rule.op("ADD", [tensor, part], shape, options="AddOptions")
    rows = np.isneginf(constant.max(axis=-1, keepdims=True))
    if not whole_rows:
        return _Bias(tensor, rule.const(rows) if rows.any() else None)
    top = rule.op("REDUCE_MAX", [tensor, rule.const(np.array([-1], np.int32))], [*tensor.shape[:-1], 1],
                  options="ReducerOptions", keep_dims=True)
    # LiteRT's builtin REDUCE_MAX starts from the lowest finite float, so a row of -inf tops at -FLT_MAX.
    rows = rule.op("LESS_EQUAL", [top, rule.const(np.finfo(np.float32).min)], top.shape, BOOL)
    return _Bias(tensor, rows)


def _allowed(offset: np.ndarray, s: int, length: int, causal: bool, left: int, right: int) -> np.ndarray:
    """Which keys each query may read, ``[batch or 1, 1, S, L]``, for per-batch offsets (constants)."""
    diff = np.arange(s)[:, None] - np.arange(length)[None, :] + offset.reshape(-1, 1, 1, 1)
    allowed = np.ones(diff.shape, bool)
    if causal:
        allowed &= diff >= 0
    if left >= 0:
        allowed &= diff <= left
    if right >= 0:
        allowed &= -diff <= right
    return allowed


def _run_time_causal(rule: Rule, node: ir.Node, q: Tensor, k: Tensor, causal: bool, left: int, right: int) -> Tensor:
    """The causal/window bias ``[S, L]`` from the run-time sizes: ``d = i + P - j`` with ``i < S``, ``j < L``
    (RANGE over SHAPE), ``P`` the past length (SHAPE of ``past_key``)."""
    def size(x: Tensor, axis: int) -> Tensor:
        shape = rule.lw.shape_tensor(x, node.name)
        return rule.op("GATHER", [shape, rule.const(np.int32(axis))], [], I32, "GatherOptions", axis=0, batch_dims=0)

    zero, one = rule.const(np.int32(0)), rule.const(np.int32(1))
    length = k.shape[2]
    queries = rule.op("RANGE", [zero, size(q, 2), one], [q.shape[2]], I32, "RangeOptions")
    keys = rule.op("RANGE", [zero, size(k, 2), one], [length], I32, "RangeOptions")
    queries = rule.reshape(queries, [q.shape[2], 1])
    if present(node, _PAST_KEY):
        queries = rule.op("ADD", [queries, size(rule.lw.read(node.inputs[_PAST_KEY], False), 2)], queries.shape, I32,
                          "AddOptions")
    shape = [q.shape[2], length]
    diff = rule.op("SUB", [queries, keys], shape, I32, "SubOptions")
    allowed, tests = None, []
    if causal:
        tests.append(("GREATER_EQUAL", 0))
    if left >= 0:
        tests.append(("LESS_EQUAL", left))
    if right >= 0:
        tests.append(("GREATER_EQUAL", -right))
    for name, bound in tests:
        test = rule.op(name, [diff, rule.const(np.int32(bound))], shape, BOOL)
        allowed = test if allowed is None else rule.op("LOGICAL_AND", [allowed, test], shape, BOOL)
    return rule.op("SELECT_V2", [allowed, rule.const(np.float32(0)), rule.const(_NEG_INF)], shape,
                   options="SelectV2Options")


def _run_time_mask(rule: Rule, node: ir.Node, length: int) -> Tensor:
    """A mask fed at run time as an additive float bias padded with -inf to ``length`` keys."""
    mask = rule.lw.read(node.inputs[_MASK], False)
    if mask.dtype == BOOL:
        mask = rule.op("SELECT_V2", [mask, rule.const(np.float32(0)), rule.const(_NEG_INF)], mask.shape,
                       options="SelectV2Options")
    else:
        mask = rule.cast(mask, F32)
    pad = length - mask.shape[-1]
    if pad > 0:
        paddings = np.zeros((len(mask.shape), 2), np.int32)
        paddings[-1, 1] = pad
        mask = rule.op("PADV2", [mask, rule.const(paddings), rule.const(_NEG_INF)], [*mask.shape[:-1], length],
                       options="PadV2Options")
    return mask


def _run_time_nonpad(rule: Rule, node: ir.Node, s: int, length: int, causal: bool, left: int, right: int) -> Tensor:
    """The causal/window/padding bias ``[B, 1, S, L]`` from ``nonpad_kv_seqlen`` fed at run time."""
    seqlen = rule.cast(rule.lw.read(node.inputs[_NONPAD], False), I32)
    batch = seqlen.shape[0]
    seqlen = rule.reshape(seqlen, [batch, 1, 1, 1])
    keys = rule.const(np.arange(length, dtype=np.int32).reshape(1, 1, 1, length))
    allowed = rule.op("LESS", [keys, seqlen], [batch, 1, 1, length], BOOL)
    shape = [batch, 1, s, length]
    # i + (seqlen - S) - j
    diff = rule.op("ADD", [rule.const((np.arange(s)[:, None] - np.arange(length)[None, :] - s).astype(np.int32)),
                           seqlen], shape, I32, options="AddOptions")
    tests = []
    if causal:
        tests.append(rule.op("GREATER_EQUAL", [diff, rule.const(np.int32(0))], shape, BOOL))
    if left >= 0:
        tests.append(rule.op("LESS_EQUAL", [diff, rule.const(np.int32(left))], shape, BOOL))
    if right >= 0:
        tests.append(rule.op("GREATER_EQUAL", [diff, rule.const(np.int32(-right))], shape, BOOL))
    for test in tests:
        allowed = rule.op("LOGICAL_AND", [allowed, test], np.broadcast_shapes(tuple(allowed.shape), tuple(shape)),
                          BOOL)
    return rule.op("SELECT_V2", [allowed, rule.const(np.float32(0)), rule.const(_NEG_INF)], allowed.shape,
                   options="SelectV2Options")


LOWERINGS = {"Attention": attention, **ROTARY_LOWERINGS, **STATE_LOWERINGS}
