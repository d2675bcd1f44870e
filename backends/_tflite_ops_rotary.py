"""TFLite lowering rule for RotaryEmbedding (opset 23), a float decomposition (collected by
``_tflite_ops_attention``).

With ``cos``/``sin`` gathered by ``position_ids`` (GATHER, or folded when both
are constants) to ``[B, S, R/2]``, every output element is ``x[d] * C[d] + x[p(d)] * S[d]``,
where ``p(d)`` is the partner of ``d`` in its rotation pair (``d +- R/2``, or ``d ^ 1`` when
interleaved), ``C = cos`` and ``S = -sin`` on the pair's first element, ``+sin`` on its second,
and ``C = 1, S = 0`` past ``rotary_embedding_dim``. So the rule is three GATHERs on the last
axis (x at the partners, the caches at each dimension's pair), MULs by per-dimension sign and
pass-through constants, two MULs and an ADD; constant caches and positions fold into ``C``, ``S``.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_rule import Rule
from qcc.backends._tflite_ops_state import float_rule, present
from qcc.backends._tflite_ops_window import unsupported
from qcc.backends._tflite_writer import Tensor
from qcc.irutils import attr_int, const_array


def rotary_embedding(lw: Lowering, node: ir.Node) -> None:
    """RotaryEmbedding -> GATHER, MUL, ADD (see module docstring)."""
    rule = float_rule(lw, node)
    x = rule.data(0)
    rank = len(x.shape)
    if rank == 3:
        heads = attr_int(node, "num_heads", 0)
        b, s, hidden = x.shape
        if heads <= 0 or hidden % heads:
            raise unsupported(node, "3-D input without a num_heads that divides its hidden size")
        x = rule.reshape(x, [b, s, heads, hidden // heads])
    elif rank != 4:
        raise unsupported(node, f"rank-{rank} input (ONNX takes 3-D or 4-D)")
    depth = x.shape[-1]
    rotary = attr_int(node, "rotary_embedding_dim", 0) or depth
    if rotary > depth or rotary % 2:
        raise unsupported(node, f"rotary_embedding_dim {rotary} with head size {depth} (ONNX needs an even one <= it)")
    half = rotary // 2
    interleaved = bool(attr_int(node, "interleaved", 0))
    d = np.arange(depth)
    pair = d // 2 if interleaved else d % half
    first = (d % 2 == 0) if interleaved else (d < half)
    partner = np.where(first, d + 1, d - 1) if interleaved else np.where(first, d + half, d - half)
    inside = d < rotary
    pair = np.where(inside, pair, 0).astype(np.int32)
    sign = np.where(inside, np.where(first, -1.0, 1.0), 0.0).astype(np.float32)
    partner = np.where(inside, partner, d).astype(np.int32)
    cos, sin = _gathered_caches(rule, node, half)
    b, s = cos.shape[:2]
    if cos.data is not None and sin.data is not None:
        c = rule.const(np.where(inside, cos.data[..., pair], np.float32(1)))
        sn = rule.const(sin.data[..., pair] * sign)
    else:
        # Per-dimension constants only (no size in them), so a run-time sequence length stays dynamic.
        wide = [b, s, depth]
        c = rule.op("GATHER", [cos, rule.const(pair)], wide, options="GatherOptions", axis=2, batch_dims=0)
        if not inside.all():
            c = rule.op("MUL", [c, rule.const(inside.astype(np.float32))], wide, options="MulOptions")
            c = rule.op("ADD", [c, rule.const((~inside).astype(np.float32))], wide, options="AddOptions")
        sn = rule.op("GATHER", [sin, rule.const(pair)], wide, options="GatherOptions", axis=2, batch_dims=0)
        sn = rule.op("MUL", [sn, rule.const(sign)], wide, options="MulOptions")
    # [B, S, D] against x [B, H, S, D] (4-D) or [B, S, H, D] (3-D, reshaped).
    view = [b, 1, s, depth] if rank == 4 else [b, s, 1, depth]
    c, sn = rule.reshape(c, view), rule.reshape(sn, view)
    swapped = rule.op("GATHER", [x, rule.const(partner)], x.shape, options="GatherOptions", axis=3, batch_dims=0)
    straight = rule.op("MUL", [x, c], x.shape, options="MulOptions")
    turned = rule.op("MUL", [swapped, sn], x.shape, options="MulOptions")
    y = rule.op("ADD", [straight, turned], x.shape, options="AddOptions")
    rule.finish(rule.reshape(y, rule.output(0).shape), 0)


def _gathered_caches(rule: Rule, node: ir.Node, half: int) -> tuple[Tensor, Tensor]:
    """``cos`` and ``sin`` as ``[B, S, R/2]`` float32: gathered by ``position_ids`` when given."""
    caches = []
    for index in (1, 2):
        cache = const_array(node.inputs[index])
        ids = const_array(node.inputs[3]) if present(node, 3) else None
        if cache is not None and (ids is not None or not present(node, 3)):
            array = cache.astype(np.float32)
            caches.append(rule.const(array[ids] if ids is not None else array))
            continue
        table = rule.data(index)
        if not present(node, 3):
            caches.append(table)
            continue
        positions = rule.int32(3)
        shape = [*positions.shape, *table.shape[1:]]
        caches.append(rule.op("GATHER", [table, positions], shape, options="GatherOptions", axis=0, batch_dims=0))
    for cache in caches:
        if len(cache.shape) != 3 or cache.shape[-1] != half:
            raise unsupported(node, f"a cos/sin cache of shape {cache.shape} (expected [B, S, {half}] after gathering)")
    return caches[0], caches[1]


LOWERINGS = {"RotaryEmbedding": rotary_embedding}
