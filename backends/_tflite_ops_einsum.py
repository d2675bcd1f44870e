"""TFLite lowering rule for Einsum with one or two operands.

* A letter repeated in one operand takes the diagonal (``SUM_j SELECT_V2(i == j, x, 0)``).
* Letters of one operand only and not in the output are summed away (SUM).
* Then ``A -> [batch, free_a, contracted]``, ``B -> [batch, contracted, free_b]`` by TRANSPOSE
  and RESHAPE, one BATCH_MATMUL, RESHAPE and TRANSPOSE to the output.

``...`` is spelled out as unused capital letters first; an equation without ``->`` has the
implicit output (the ellipsis letters, then the letters used once, sorted).
"""

from __future__ import annotations

import re
import string

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_rule import F32, MAX_SELECT_RANK, Rule, attr_str
from qcc.backends._tflite_ops_window import unsupported
from qcc.backends._tflite_writer import Tensor


def einsum(lw: Lowering, node: ir.Node) -> None:
    """Einsum (one or two operands) -> SELECT_V2, SUM, TRANSPOSE, RESHAPE, BATCH_MATMUL (module docstring)."""
    equation = attr_str(node, "equation", "").replace(" ", "")
    rule = Rule(lw, node)
    operands = [rule.data(i) for i in range(len(node.inputs))]
    # A one-element operand under a letterless term is a scalar (0-d inputs can arrive as [1]).
    letters = equation.partition("->")[0].split(",")
    operands = [
        rule.reshape(t, []) if i < len(letters) and letters[i] == "" and int(np.prod(t.shape)) == 1 else t
        for i, t in enumerate(operands)
    ]
    terms, output = _parse_einsum(node, equation, [t.shape for t in operands])
    if len(operands) > 2:
        raise unsupported(node, f"Einsum {equation!r} with {len(operands)} operands (qcc lowers one or two)")
    if any(t.dtype != F32 for t in operands):
        raise unsupported(node, f"Einsum {equation!r} on {operands[0].dtype} (qcc lowers float32)")
    sizes: dict[str, int] = {}
    for term, t in zip(terms, operands, strict=True):
        for letter, dim in zip(term, t.shape, strict=True):
            if sizes.setdefault(letter, dim) != dim:
                raise unsupported(node, f"Einsum {equation!r}: {letter!r} is {sizes[letter]} and {dim} (broadcast)")
    diagonals = [_diagonal(rule, term, t) for term, t in zip(terms, operands, strict=True)]
    terms, operands = [d[0] for d in diagonals], [d[1] for d in diagonals]
    # Letters in one operand only and not in the output are summed away first.
    reduced = []
    for n, (term, t) in enumerate(zip(terms, operands, strict=True)):
        others = set(output).union(*(terms[m] for m in range(len(terms)) if m != n))
        gone = [a for a, letter in enumerate(term) if letter not in others]
        if gone:
            shape = [d for a, d in enumerate(t.shape) if a not in gone]
            t = rule.op("SUM", [t, rule.const(gone, np.int32)], shape, options="ReducerOptions", keep_dims=False)
            term = "".join(letter for a, letter in enumerate(term) if a not in gone)
        reduced.append((term, t))
    if len(reduced) == 1:
        term, t = reduced[0]
        result, order = t, term
    else:
        (ta, a), (tb, b) = reduced
        batch = [c for c in ta if c in tb and c in output]
        contracted = [c for c in ta if c in tb and c not in output]
        free_a = [c for c in ta if c not in tb]
        free_b = [c for c in tb if c not in ta]
        size = lambda letters: int(np.prod([sizes[c] for c in letters]))  # noqa: E731
        bsz, m, k, n = size(batch), size(free_a), size(contracted), size(free_b)
        a = rule.transpose(a, [ta.index(c) for c in batch + free_a + contracted])
        b = rule.transpose(b, [tb.index(c) for c in batch + contracted + free_b])
        a = rule.reshape(a, [bsz, m, k])
        b = rule.reshape(b, [bsz, k, n])
        product = rule.op("BATCH_MATMUL", [a, b], [bsz, m, n], options="BatchMatMulOptions", adj_x=False, adj_y=False)
        order = "".join(batch + free_a + free_b)
        result = rule.reshape(product, [sizes[c] for c in order])
    if sorted(order) != sorted(output):
        raise unsupported(node, f"Einsum {equation!r} (an output letter missing from the operands)")
    rule.finish(rule.transpose(result, [order.index(c) for c in output]))


def _diagonal(rule: Rule, term: str, t: Tensor) -> tuple[str, Tensor]:
    """A term with a repeated letter (``ii``) -> its diagonal: SELECT_V2(eye, t, 0) summed over the repeat."""
    while len(set(term)) != len(term):
        letter = next(c for c in term if term.count(c) > 1)
        first, second = term.index(letter), term.index(letter, term.index(letter) + 1)
        if len(t.shape) > MAX_SELECT_RANK:
            raise unsupported(rule.node, f"an Einsum diagonal of a rank-{len(t.shape)} operand (SELECT_V2 takes 5-D)")
        n = t.shape[first]
        mask_shape = [1] * len(t.shape)
        mask_shape[first] = mask_shape[second] = n
        mask = np.eye(n, dtype=bool).reshape(mask_shape)
        kept = rule.op("SELECT_V2", [rule.const(mask), t, rule.const(0.0, np.float32)], t.shape)
        shape = [d for a, d in enumerate(t.shape) if a != second]
        t = rule.op("SUM", [kept, rule.const([second], np.int32)], shape, options="ReducerOptions", keep_dims=False)
        term = term[:second] + term[second + 1 :]
    return term, t


def _parse_einsum(node: ir.Node, equation: str, shapes) -> tuple[list[str], str]:
    """The operand terms and the output term with ``...`` spelled out as unused capital letters."""
    if not re.fullmatch(r"[a-zA-Z.,]*(->[a-zA-Z.]*)?", equation):
        raise unsupported(node, f"Einsum equation {equation!r}")
    left, arrow, right = equation.partition("->")
    terms = left.split(",")
    if len(terms) != len(shapes):
        raise unsupported(node, f"Einsum {equation!r} for {len(shapes)} operands")
    spare = [c for c in string.ascii_uppercase + string.ascii_lowercase if c not in equation]
    ellipsis_rank = max(
        (len(s) - len(t.replace("...", "")) for t, s in zip(terms, shapes, strict=True) if "..." in t), default=0
    )
    fill = "".join(spare[:ellipsis_rank])
    expanded = []
    for term, s in zip(terms, shapes, strict=True):
        if "..." in term:
            own = len(s) - len(term.replace("...", ""))
            term = term.replace("...", fill[ellipsis_rank - own :])
        if len(term) != len(s):
            raise unsupported(node, f"Einsum {equation!r}: term {term!r} for a rank-{len(s)} operand")
        expanded.append(term)
    if arrow:
        output = right.replace("...", fill)
    else:
        letters = "".join(expanded)
        output = fill + "".join(sorted(c for c in set(letters) if letters.count(c) == 1 and c not in fill))
    return expanded, output
