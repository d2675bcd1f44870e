"""TFLite lowering rules: ops that pass their values on unchanged, converted or shifted.

Collected by the family module ``_tflite_ops_math``. None computes float arithmetic:

* inference ``Dropout`` copies its input (a RESHAPE to the same shape); its mask output, if
  read, is all true, written as ``not (x < x)`` (``x < x`` is false everywhere, NaN included).
  Training mode with a non-zero ratio draws random masks and is refused;
* ``CastLike`` is a CAST to the type of its second input (the ``Cast`` rule of ``_tflite_ops_data``);
* ``BitShift`` is RIGHT_SHIFT or STABLEHLO_SHIFT_LEFT, for constant shifts within the type's width
  (``0 <= k < bits``). LiteRT's left shift takes signed types only, so uint8 is shifted left in
  int32 and CAST back, which keeps the low 8 bits: ``(x << k) mod 2^8``, ONNX's wrapping shift.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from tflite.TensorType import TensorType

from qcc.backends._tflite_lower import Lowering
from qcc.backends._tflite_ops_data import cast, cast_from_int32
from qcc.backends._tflite_ops_float import wanted
from qcc.backends._tflite_ops_mathchain import MathChain
from qcc.backends._tflite_ops_rule import raw_int8
from qcc.backends._tflite_ops_window import unsupported
from qcc.errors import BackendError
from qcc.irutils import const_array


def dropout(lw: Lowering, node: ir.Node) -> None:
    """Inference Dropout -> a copy of its input; its mask output, if read, is all true.

    Training mode with a non-zero ratio draws random masks, which an inference artifact cannot
    reproduce: refused unless ``training_mode`` is a constant false (or the ratio a constant 0).
    """
    training = const_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else False
    ratio = const_array(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
    if training is None or (bool(np.asarray(training)) and (ratio is None or float(ratio) != 0.0)):
        raise BackendError(
            f"node {node.name!r} (Dropout) may run in training mode, which drops random elements; "
            "a TFLite artifact runs inference only.",
            "export the model in eval mode (training_mode false), "
            "or make the Dropout's training_mode input a constant false.",
        )
    c = MathChain(lw, node)
    c.copy_to_output()
    if wanted(node, 1):
        x = c.arg(0)
        # x < x is false everywhere (NaN included); its negation is the all-true keep mask.
        c.result("LOGICAL_NOT", c.compare("LESS", x, x), index=1)


_SHIFTED = (np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.int16), np.dtype(np.int32))


def bit_shift(lw: Lowering, node: ir.Node) -> None:
    """BitShift -> RIGHT_SHIFT or STABLEHLO_SHIFT_LEFT, for constant shifts within the type's width.

    LiteRT's left shift takes signed types only: uint8 is shifted in int32 and CAST back, which
    drops the high bits as a uint8 shift does.
    """
    direction = node.attributes.get("direction")
    left = direction is not None and direction.as_string() == "LEFT"
    x = raw_int8(lw.read(node.inputs[0], False))
    shift = const_array(node.inputs[1])
    bits = 8 * x.dtype.itemsize
    if x.dtype not in _SHIFTED:
        raise unsupported(node, f"{x.dtype} data (qcc shifts {', '.join(map(str, _SHIFTED))} on TFLite)")
    if shift is None or np.any(shift < 0) or np.any(shift >= bits):
        raise unsupported(node, f"shift amounts that are not constants in [0, {bits})")
    y = raw_int8(lw.output(node))
    if not left:
        amount = raw_int8(lw.constant(f"{node.name}_shift", np.asarray(shift).astype(x.dtype)))
        lw.op("RIGHT_SHIFT", [x, amount], [y], "RightShiftOptions", source=node.name)
        return
    # STABLEHLO_SHIFT_LEFT does not broadcast: the shift amounts take x's (static) shape.
    if np.shape(shift) != tuple(x.shape):
        if -1 in x.signature:
            raise unsupported(node, "a left shift whose amounts broadcast over a dynamic dimension")
        shift = np.broadcast_to(shift, x.shape)
    wide = np.dtype(np.int32) if x.dtype == np.dtype(np.uint8) else x.dtype
    amount = raw_int8(lw.constant(f"{node.name}_shift", np.asarray(shift).astype(wide)))
    if wide == x.dtype:
        lw.op("STABLEHLO_SHIFT_LEFT", [x, amount], [y], source=node.name)
        return
    inside = lw.model.tensor(f"{node.name}_int32", x.shape, wide)
    shifted = lw.model.tensor(f"{node.name}_shifted", y.shape, wide)
    u8, i32 = TensorType.UINT8, TensorType.INT32
    lw.op("CAST", [x], [inside], "CastOptions", source=node.name, in_data_type=u8, out_data_type=i32)
    lw.op("STABLEHLO_SHIFT_LEFT", [inside, amount], [shifted], source=node.name)
    cast_from_int32(lw, shifted, y, node.name)


LOWERINGS = {
    "CastLike": cast,
    "Dropout": dropout,
    "BitShift": bit_shift,
}
