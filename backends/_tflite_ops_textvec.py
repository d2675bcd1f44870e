"""TFLite lowering rule for TfIdfVectorizer over a constant pool of integer n-grams.

The pool is the ``pool_int64s`` attribute: ``ngram_counts[n - 1]`` is where its n-grams start.
ONNX counts, in each row of ``X`` (``[L]`` or ``[B, L]``), every start ``i`` and skip distance
``d = s + 1`` (``s <= max_skip_count``; unigrams once) for which ``X[i], X[i + d], ..,
X[i + (n - 1) d]`` is a pool n-gram with ``min_gram_length <= n <= max_gram_length``. With the
``P_n`` n-grams as a constant ``G [P_n, n]`` and ``W_j = X[:, j d : j d + L - (n - 1) d]``
(a SLICE, ``[B, 1, count]``), a window matches gram ``g`` when ``AND_j EQUAL(W_j, G[g, j])``
(``[B, P_n, count]``); SUM over the windows gives the counts ``[B, P_n]``, added over the skips
and concatenated over ``n``. A FULLY_CONNECTED with the constant 0/1 matrix
``M[ngram_indexes[p], p] = 1`` puts them at their output positions (exact: small integers), after
``TF`` kept the counts, ``IDF`` took ``weights * MINIMUM(count, 1)`` and ``TFIDF``
``weights * count`` (weights default to 1; ``weights[p]`` is pool n-gram ``p``'s, as the
operator's text says and ONNX Runtime does, where ONNX's reference implementation indexes them
by output position).

String pools are refused: TFLite string tensors have no comparison builtin qcc writes.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_rule import BOOL, F32, Rule, attr_str
from qcc.backends._tflite_ops_window import unsupported
from qcc.backends._tflite_writer import Tensor
from qcc.irutils import attr_int

# Comparisons [B, P_n, count] beyond this many elements are refused (the pool is compared with every window).
_MAX_COMPARISONS = 1 << 24


def _ints(node: ir.Node, name: str) -> list[int]:
    attr = node.attributes.get(name)
    return [] if attr is None else [int(v) for v in attr.as_ints()]


def _grams(node: ir.Node) -> dict[int, np.ndarray]:
    """The pool's n-grams by length ``n``: ``[P_n, n]`` int64, in pool order."""
    pool = np.array(_ints(node, "pool_int64s"), np.int64)
    starts = _ints(node, "ngram_counts")
    grams = {}
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(pool)
        if end > start:
            grams[i + 1] = pool[start:end].reshape(-1, i + 1)
    return grams


def _count(rule: Rule, rows: Tensor, grams: np.ndarray, distance: int) -> Tensor | None:
    """Matches of the ``[P_n, n]`` grams at skip ``distance`` in ``rows [B, L]``: float32 ``[B, P_n]``."""
    batch, length = rows.shape
    size, order = grams.shape
    windows = length - (order - 1) * distance
    if windows <= 0:
        return None
    if batch * size * windows > _MAX_COMPARISONS:
        raise unsupported(rule.node, f"{batch * size * windows} n-gram comparisons (qcc allows {_MAX_COMPARISONS})")
    matched = None
    for j in range(order):
        begin = rule.const(np.array([0, j * distance], np.int32))
        extent = rule.const(np.array([batch, windows], np.int32))
        window = rule.op("SLICE", [rows, begin, extent], [batch, windows], rows.dtype, "SliceOptions")
        window = rule.reshape(window, [batch, 1, windows])
        column = rule.const(grams[:, j].astype(rows.dtype).reshape(1, size, 1))
        equal = rule.op("EQUAL", [window, column], [batch, size, windows], BOOL, "EqualOptions")
        if matched is not None:
            equal = rule.op("LOGICAL_AND", [matched, equal], equal.shape, BOOL)
        matched = equal
    counts = rule.cast(matched, F32)
    axis = rule.const(np.array([2], np.int32))
    return rule.op("SUM", [counts, axis], [batch, size], F32, "ReducerOptions", keep_dims=False)


def tf_idf_vectorizer(lw: Lowering, node: ir.Node) -> None:
    """TfIdfVectorizer -> SLICE, EQUAL, LOGICAL_AND, SUM, FULLY_CONNECTED (module docstring)."""
    rule = Rule(lw, node)
    if node.attributes.get("pool_strings") is not None:
        raise unsupported(node, "a pool of strings (TFLite string tensors have no comparison builtin qcc writes)")
    mode = attr_str(node, "mode", "TF")
    if mode not in ("TF", "IDF", "TFIDF"):
        raise unsupported(node, f"mode {mode!r}")
    x = lw.read(node.inputs[0], False)
    if len(x.shape) not in (1, 2) or x.dtype.kind not in "iu":
        raise unsupported(node, f"input {x.dtype} shaped {list(x.shape)} (TfIdfVectorizer takes integer [C] or [B, C])")
    rows = rule.reshape(x, [1, x.shape[0]]) if len(x.shape) == 1 else x
    lowest, highest = attr_int(node, "min_gram_length", 1), attr_int(node, "max_gram_length", 1)
    skips = attr_int(node, "max_skip_count", 0)
    grams = _grams(node)
    indexes = _ints(node, "ngram_indexes")
    out_size = int(node.outputs[0].shape[-1])
    parts, grams_used, offset = [], [], 0
    for order, table in grams.items():
        if lowest <= order <= highest:
            counts = [_count(rule, rows, table, d) for d in (range(1, skips + 2) if order > 1 else [1])]
            counts = [c for c in counts if c is not None]
            for extra in counts[1:]:
                counts[0] = rule.op("ADD", [counts[0], extra], counts[0].shape, F32, "AddOptions")
            if counts:
                parts.append(counts[0])
                grams_used.extend(range(offset, offset + len(table)))
        offset += len(table)
    batch = rows.shape[0]
    if not parts:
        rule.finish(rule.const(np.zeros(node.outputs[0].shape, np.float32)))
        return
    counts = parts[0]
    if len(parts) > 1:
        width = sum(p.shape[1] for p in parts)
        counts = rule.op(
            "CONCATENATION", parts, [batch, width], F32, "ConcatenationOptions", axis=1, fused_activation_function=0
        )
    if mode == "IDF":
        counts = rule.op("MINIMUM", [counts, rule.const(np.float32(1))], counts.shape, F32, "MaximumMinimumOptions")
    weights = node.attributes.get("weights")
    if mode != "TF" and weights is not None:
        # The i-th weight is the i-th pool n-gram's (ONNX's operator text; ONNX Runtime does so).
        weight = np.array(weights.as_floats(), np.float32)[grams_used]
        counts = rule.op("MUL", [counts, rule.const(weight)], counts.shape, F32, "MulOptions")
    mapping = np.zeros((out_size, counts.shape[1]), np.float32)
    mapping[np.array(indexes)[grams_used], np.arange(counts.shape[1])] = 1.0
    found = rule.op(
        "FULLY_CONNECTED",
        [counts, rule.const(mapping), -1],
        [batch, out_size],
        F32,
        "FullyConnectedOptions",
        fused_activation_function=0,
        keep_num_dims=False,
    )
    rule.finish(rule.reshape(found, list(node.outputs[0].shape)))


LOWERINGS = {"TfIdfVectorizer": tf_idf_vectorizer}
