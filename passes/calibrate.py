"""Calibrate: observe the range of every activation that will be quantized.

The float model (as rewritten by the earlier passes) runs in ONNX Runtime with each tensor to be
calibrated added as a graph output. Samples are streamed one at a time and only running
statistics are kept (per tensor: min and max), so memory does not grow with the number of
samples. Shared-scale outputs and absorbed activations' inputs need no observation: their
parameters come from another tensor.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_ir as ir

from qcc.annotations import Role, Stage, TensorRange, get_quant, quantized_values, set_range
from qcc.errors import CalibrationDataError, NonFiniteActivationsError, QccError
from qcc.passes._base import QccPass
from qcc.runtime import session

logger = logging.getLogger(__name__)


class RunningMinMax:
    """Mergeable running min/max of a set of tensors."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.min = np.full(len(names), np.inf)
        self.max = np.full(len(names), -np.inf)

    def update(self, arrays: list[np.ndarray]) -> None:
        """Folds one sample's tensors (in ``names`` order) into the statistics.

        A NaN anywhere in a tensor makes its min and max NaN, so it is reported, not hidden.
        """
        for i, array in enumerate(arrays):
            if array.size:
                self.min[i] = np.fmin(self.min[i], array.min()) if not np.isnan(self.min[i]) else np.nan
                self.max[i] = np.fmax(self.max[i], array.max()) if not np.isnan(self.max[i]) else np.nan
                if np.isnan(array.min()) or np.isnan(array.max()):
                    self.min[i] = self.max[i] = np.nan

    def merge(self, other: RunningMinMax) -> None:
        """Folds another statistic over the same tensors into this one."""
        self.min = np.minimum(self.min, other.min)
        self.max = np.maximum(self.max, other.max)


class CalibratePass(QccPass):
    """Records a :class:`TensorRange` on every activation that needs one."""

    name = "calibrate"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        targets = [
            v
            for v in quantized_values(model.graph)
            if get_quant(v).role == Role.ACTIVATION and v.const_value is None and get_quant(v).shared_with is None
        ]
        if not targets:
            return ir.passes.PassResult(model, False)
        if self.ctx.calibration is None:
            raise QccError("calibration data is required to quantize activations.", "pass --calib data.npz.")
        names = [v.name for v in targets]
        stats = self._observe(model, names)
        finite = np.isfinite(stats.min) & np.isfinite(stats.max)
        bad = [name for name, ok in zip(names, finite, strict=True) if not ok]
        if bad:
            raise NonFiniteActivationsError(bad)
        for value, lo, hi in zip(targets, stats.min, stats.max, strict=True):
            set_range(value, TensorRange(float(lo), float(hi)))
            get_quant(value).stage = Stage.CALIBRATED
        return ir.passes.PassResult(model, True)

    def _observe(self, model: ir.Model, names: list[str]) -> RunningMinMax:
        proto = ir.serde.serialize_model(model)
        existing = {o.name for o in proto.graph.output}
        for name in names:
            if name not in existing:
                proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        sess = session(proto, level="basic", what="the float model")
        output_names = [o.name for o in sess.get_outputs()]
        position = {name: i for i, name in enumerate(output_names)}
        wanted = [position[name] for name in names]
        stats = RunningMinMax(names)
        calibration = self.ctx.calibration
        total = calibration.known_length()
        count = 0
        for index, feed in enumerate(calibration):
            try:
                outputs = sess.run(output_names, feed)
            except Exception as exc:  # noqa: BLE001 - ORT raises several exception types
                first = str(exc).strip().splitlines()[0]
                raise CalibrationDataError(
                    f"the float model failed on calibration sample {index}: {first}",
                    "check that the sample's shapes are ones the model accepts.",
                ) from None
            stats.update([np.asarray(outputs[i]) for i in wanted])
            count += 1
            self.ctx.progress("calibrate", count, total)
        logger.info("calibrated %d tensors on %d samples", len(names), count)
        return stats
