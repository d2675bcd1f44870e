"""TFLite lowering rules for ops that carry a sequence state: LinearAttention, CausalConvWithState,
TensorScatter (collected by ``_tflite_ops_attention``). Float decompositions into LiteRT builtins.

* CausalConvWithState: ``padded = [past_state or 0, x]`` on the time axis (CONCATENATION), then
  the depthwise causal convolution as ``k`` taps, ``y = bias + sum_j w[:, 0, j] * padded[:, :, j : j + L]``
  (STRIDED_SLICE with the end counted from the end, so a run-time L stays dynamic; MUL, ADD: the
  weight may be a run-time input), optionally ``y * sigmoid(y)`` (silu/swish);
  ``present_state`` is the last ``k - 1`` steps of ``padded`` (with ``k = 1`` a zero-size tensor,
  which LiteRT 2.3 runs on both resolvers).
* LinearAttention: ONNX's recurrence unrolled over the (static) sequence length, with the state
  ``S [B, Hkv, dk, dv]``: ``S *= exp(decay_t)`` (gated), ``v_t = beta_t (v_t - k_t^T S)`` (delta),
  ``S += k_t v_t^T``, ``o_t = scale * q_t S`` where query head ``h`` reads state ``h // g`` (Q viewed as
  ``[B, Hkv, g, dk]``, one BATCH_MATMUL per step). Refused past ``MAX_STEPS`` steps.
* TensorScatter: cache position ``m`` of batch ``b`` takes update step ``t = m - w[b]`` (modulo the
  cache length when circular) when ``0 <= t < T``, else keeps the past: a GATHER of the update with
  ``batch_dims = 1`` at the clamped ``t`` and a SELECT_V2, with ``t`` computed at run time when
  ``write_indices`` is an input.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_float import wanted
from qcc.backends._tflite_ops_rule import BOOL, I32, Rule, attr_str
from qcc.backends._tflite_ops_window import unsupported
from qcc.backends._tflite_writer import Tensor
from qcc.irutils import attr_float, attr_int, const_array

# Unrolled LinearAttention steps beyond which the artifact would be too large to be worth writing.
MAX_STEPS = 512


def present(node: ir.Node, index: int) -> bool:
    """True when optional input ``index`` is given."""
    return len(node.inputs) > index and node.inputs[index] is not None


def float_rule(lw: Lowering, node: ir.Node) -> Rule:
    """A :class:`Rule` for a float-only op (refused when the plan made the node int8)."""
    if lw.is_int8(node):
        raise unsupported(node, f"int8 {node.op_type} (LiteRT has no int8 kernel for it; it runs float)")
    return Rule(lw, node)


def _slice(rule: Rule, x: Tensor, begin, size) -> Tensor:
    if tuple(size) == tuple(x.shape):
        return x
    return rule.op("SLICE", [x, rule.const(np.array(begin, np.int32)), rule.const(np.array(size, np.int32))],
                   list(size), x.dtype, "SliceOptions")


def causal_conv_with_state(lw: Lowering, node: ir.Node) -> None:
    """CausalConvWithState -> CONCATENATION, k x (SLICE, MUL, ADD), LOGISTIC/MUL for silu (see module docstring)."""
    rule = float_rule(lw, node)
    activation = attr_str(node, "activation", "none")
    if activation not in ("none", "silu", "swish"):
        raise unsupported(node, f"activation {activation!r} (ONNX defines none, silu, swish)")
    x, w = rule.data(0), rule.data(1)
    if len(x.shape) != 3 or len(w.shape) != 3 or w.shape[1] != 1 or w.shape[0] != x.shape[1]:
        raise unsupported(node, f"input {x.shape} with weight {w.shape} (expected [B, C, L] and [C, 1, k])")
    batch, channels, length = x.shape
    taps = w.shape[2]
    state = [batch, channels, taps - 1]
    past = rule.data(3) if present(node, 3) else rule.const(np.zeros(state, np.float32))
    padded = rule.op("CONCATENATION", [past, x], [batch, channels, length + taps - 1],
                     options="ConcatenationOptions", axis=2)
    y = None
    for j in range(taps):
        window = _steps(rule, padded, j, taps - 1 - j)
        if w.data is not None:
            tap = rule.const(w.data[:, 0, j].astype(np.float32).reshape(1, channels, 1))
        else:
            tap = rule.reshape(_slice(rule, w, [0, 0, j], [channels, 1, 1]), [1, channels, 1])
        term = rule.op("MUL", [window, tap], x.shape, options="MulOptions")
        y = term if y is None else rule.op("ADD", [y, term], x.shape, options="AddOptions")
    if present(node, 2):
        y = rule.op("ADD", [y, rule.reshape(rule.data(2), [1, channels, 1])], x.shape, options="AddOptions")
    if activation != "none":
        y = rule.op("MUL", [y, rule.op("LOGISTIC", [y], x.shape)], x.shape, options="MulOptions")
    rule.finish(y, 0)
    if wanted(node, 1):
        tail = _slice(rule, padded, [0, 0, length], state) if taps == 1 else _steps(rule, padded, 1 - taps, 0)
        rule.finish(tail, 1)


def _steps(rule: Rule, x: Tensor, begin: int, drop: int) -> Tensor:
    """``x[:, :, begin : T - drop]`` of ``x [B, C, T]`` (a negative ``begin`` counts from the end): a
    STRIDED_SLICE whose bounds do not hold T, so the same op serves any run-time length."""
    total = x.shape[2]
    if begin == 0 and drop == 0:
        return x
    size = (-begin if begin < 0 else total - begin) - drop
    bounds = [rule.const(np.array([0, 0, begin], np.int32)), rule.const(np.array([0, 0, -drop], np.int32)),
              rule.const(np.ones(3, np.int32))]
    # Batch and channels whole (begin/end masks); the time axis runs to the end when nothing is dropped.
    return rule.op("STRIDED_SLICE", [x, *bounds], [*x.shape[:2], size], x.dtype, "StridedSliceOptions",
                   begin_mask=0b011, end_mask=0b011 if drop else 0b111)


def linear_attention(lw: Lowering, node: ir.Node) -> None:
    """LinearAttention -> the recurrence unrolled step by step (see module docstring)."""
    rule = float_rule(lw, node)
    update = attr_str(node, "update_rule", "gated_delta")
    if update not in ("linear", "gated", "delta", "gated_delta"):
        raise unsupported(node, f"update_rule {update!r}")
    gated, delta = update in ("gated", "gated_delta"), update in ("delta", "gated_delta")
    if gated != present(node, 4) or delta != present(node, 5):
        raise unsupported(node, f"update_rule {update!r} with decay/beta inputs that do not match it")
    q_heads, kv_heads = attr_int(node, "q_num_heads", 0), attr_int(node, "kv_num_heads", 0)
    q, k, v = rule.data(0), rule.data(1), rule.data(2)
    if any(len(t.shape) != 3 for t in (q, k, v)) or kv_heads <= 0 or q_heads % kv_heads:
        raise unsupported(node, "inputs that are not [B, T, H*D] or heads that do not group")
    batch, steps, _ = q.shape
    if steps > MAX_STEPS:
        raise unsupported(node, f"{steps} steps (unrolled up to {MAX_STEPS}); compile with a shorter sequence")
    dk, dv, group = q.shape[2] // q_heads, v.shape[2] // kv_heads, q_heads // kv_heads
    if q.shape[2] != q_heads * dk or k.shape[2] != kv_heads * dk or v.shape[2] != kv_heads * dv:
        widths = (q.shape[2], k.shape[2], v.shape[2])
        raise unsupported(node, f"query/key/value widths {widths} that the heads do not split")
    scale = attr_float(node, "scale", 0.0) or 1.0 / np.sqrt(dk)
    q = rule.op("MUL", [q, rule.const(np.float32(scale))], q.shape, options="MulOptions")
    state_shape = [batch, kv_heads, dk, dv]
    state = rule.data(3) if present(node, 3) else rule.const(np.zeros(state_shape, np.float32))
    decay = rule.data(4) if gated else None
    decay = rule.op("EXP", [decay], decay.shape) if gated else None
    beta = rule.data(5) if delta else None
    if (gated and decay.shape[2] not in (kv_heads, kv_heads * dk)) or (delta and beta.shape[2] not in (kv_heads, 1)):
        raise unsupported(node, "a decay or beta whose last dimension is not one ONNX defines")
    outputs = []
    for t in range(steps):
        q_t = rule.reshape(_slice(rule, q, [0, t, 0], [batch, 1, q.shape[2]]), [batch, kv_heads, group, dk])
        k_flat = _slice(rule, k, [0, t, 0], [batch, 1, k.shape[2]])
        v_t = rule.reshape(_slice(rule, v, [0, t, 0], [batch, 1, v.shape[2]]), [batch, kv_heads, 1, dv])
        if gated:
            width = decay.shape[2] // kv_heads
            g_t = rule.reshape(_slice(rule, decay, [0, t, 0], [batch, 1, decay.shape[2]]),
                               [batch, kv_heads, width, 1])
            state = rule.op("MUL", [state, g_t], state_shape, options="MulOptions")
        if delta:
            k_row = rule.reshape(k_flat, [batch, kv_heads, 1, dk])
            retrieved = rule.op("BATCH_MATMUL", [k_row, state], [batch, kv_heads, 1, dv],
                                options="BatchMatMulOptions", adj_x=False, adj_y=False)
            residual = rule.op("SUB", [v_t, retrieved], v_t.shape, options="SubOptions")
            b_t = rule.reshape(_slice(rule, beta, [0, t, 0], [batch, 1, beta.shape[2]]),
                               [batch, beta.shape[2], 1, 1])
            v_t = rule.op("MUL", [residual, b_t], v_t.shape, options="MulOptions")
        outer = rule.op("MUL", [rule.reshape(k_flat, [batch, kv_heads, dk, 1]), v_t], state_shape,
                        options="MulOptions")
        state = rule.op("ADD", [state, outer], state_shape, options="AddOptions")
        o_t = rule.op("BATCH_MATMUL", [q_t, state], [batch, kv_heads, group, dv],
                      options="BatchMatMulOptions", adj_x=False, adj_y=False)
        outputs.append(rule.reshape(o_t, [batch, 1, q_heads * dv]))
    y = outputs[0] if steps == 1 else rule.op("CONCATENATION", outputs, [batch, steps, q_heads * dv],
                                              options="ConcatenationOptions", axis=1)
    rule.finish(y, 0)
    if wanted(node, 1):
        rule.finish(state, 1)


def tensor_scatter(lw: Lowering, node: ir.Node) -> None:
    """TensorScatter -> GATHER (batch_dims 1) of the update and SELECT_V2 with the past cache (see module docstring)."""
    rule = float_rule(lw, node)
    mode = attr_str(node, "mode", "linear")
    if mode not in ("linear", "circular"):
        raise unsupported(node, f"mode {mode!r}")
    past, update = rule.data(0), rule.data(1)
    rank = len(past.shape)
    axis = attr_int(node, "axis", -2) % rank
    if axis == 0:
        raise unsupported(node, "axis 0 (the batch axis that write_indices indexes)")
    batch, cache, steps = past.shape[0], past.shape[axis], update.shape[axis]
    positions = np.arange(cache)
    mask_shape = [batch] + [cache if a == axis else 1 for a in range(1, rank)]
    indices = const_array(node.inputs[2]) if present(node, 2) else np.zeros(batch, np.int64)
    if indices is not None:
        t = positions[None, :] - indices.reshape(-1, 1)
        if mode == "circular":
            t = t % cache
        valid = (t >= 0) & (t < steps)
        gather_at = rule.const(np.clip(t, 0, steps - 1).astype(np.int32))
        chosen = rule.const(valid.reshape(mask_shape))
    else:
        writes = rule.reshape(rule.cast(lw.read(node.inputs[2], False), I32), [batch, 1])
        t = rule.op("SUB", [rule.const(positions.astype(np.int32)[None, :]), writes], [batch, cache], I32,
                    options="SubOptions")
        if mode == "circular":
            t = rule.op("FLOOR_MOD", [t, rule.const(np.int32(cache))], [batch, cache], I32)
        low = rule.op("GREATER_EQUAL", [t, rule.const(np.int32(0))], [batch, cache], BOOL)
        high = rule.op("LESS", [t, rule.const(np.int32(steps))], [batch, cache], BOOL)
        chosen = rule.reshape(rule.op("LOGICAL_AND", [low, high], [batch, cache], BOOL), mask_shape)
        gather_at = rule.op("MINIMUM", [rule.op("MAXIMUM", [t, rule.const(np.int32(0))], [batch, cache], I32),
                                        rule.const(np.int32(steps - 1))], [batch, cache], I32)
    moved = rule.op("GATHER", [update, gather_at], past.shape, past.dtype, "GatherOptions", axis=axis, batch_dims=1)
    rule.finish(rule.op("SELECT_V2", [chosen, moved, past], past.shape, past.dtype, "SelectV2Options"), 0)


LOWERINGS = {
    "CausalConvWithState": causal_conv_with_state,
    "LinearAttention": linear_attention,
    "TensorScatter": tensor_scatter,
}
