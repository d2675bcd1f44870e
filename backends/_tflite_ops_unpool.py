"""TFLite lowering rule for MaxUnpool: the pooled values scattered back into zeros.

``MaxUnpool(X, I[, output_shape])`` writes ``Y.flat[I.flat[p]] = X.flat[p]`` into a zero tensor of
the output shape (the default one, or ``output_shape``): the indices are MaxPool's, flat over the
whole NCHW tensor. So ``Y = RESHAPE(SCATTER_ND(I as [P, 1] int32, X as [P], [size(Y)]), shape(Y))``.
The output shape is the node's static one (given by ``output_shape``, or by the calibration run
when it is a run-time input). SCATTER_ND sums repeated indices where ONNX Runtime keeps one of
them; MaxPool never writes two windows' maxima to one index unless the windows overlap and share
their maximum.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_rule import F32, I32, Rule, static_rank
from qcc.backends._tflite_ops_window import unsupported
from qcc.irutils import const_array


def max_unpool(lw: Lowering, node: ir.Node) -> None:
    """MaxUnpool -> SCATTER_ND of the values at their flat indices into zeros (module docstring)."""
    rule = Rule(lw, node)
    x = rule.data(0)
    out_shape = static_rank(node, node.outputs[0])
    size = int(np.prod(out_shape))
    count = int(np.prod(x.shape))
    if static_rank(node, node.inputs[1]) != list(x.shape):
        raise unsupported(node, "indices shaped unlike the values")
    indices = const_array(node.inputs[1])
    if indices is not None:
        if indices.size and (indices.min() < 0 or indices.max() >= size):
            raise unsupported(node, f"indices outside the {size} output elements")
        flat_indices = rule.const(indices.reshape(count, 1).astype(np.int32))
    else:
        flat_indices = rule.reshape(rule.cast(lw.read(node.inputs[1], False), I32), [count, 1])
    values = rule.reshape(x, [count])
    shape = rule.const(np.array([size], np.int32))
    scattered = rule.op("SCATTER_ND", [flat_indices, values, shape], [size], F32)
    rule.finish(rule.reshape(scattered, out_shape))


LOWERINGS = {"MaxUnpool": max_unpool}
