"""Calibrate: observe the range of every activation that will be quantized.

The float model (as rewritten by the earlier passes) runs in ONNX Runtime with each tensor to be
calibrated added as a graph output. Samples are streamed one at a time and only running
statistics are kept (per tensor: min and max), so memory does not grow with the number of
samples: per tensor a streamed, mergeable histogram (``_histogram``). The clip range is then
chosen per tensor by the calibration method (``_clip_range``); ``auto`` starts from minmax and
keeps each histogram on its tensor for the clip search (``_clip_search``), whose choices come back
as ``ctx.tensor_methods`` when the model is planned again.
Shared-scale outputs and absorbed activations' inputs need no observation: their parameters come
from another tensor.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import onnx_ir as ir

from qcc.annotations import (
    Replan,
    Role,
    Stage,
    TensorRange,
    get_quant,
    quantized_values,
    request_replan,
    set_channel_mean,
    set_histogram,
    set_input_moments,
    set_range,
)
from qcc.errors import CalibrationDataError, QccError
from qcc.options import CalibrationMethod, WeightRounding
from qcc.passes._base import QccPass
from qcc.passes._clip_range import clip_range, consumer_bounds
from qcc.passes._histogram import TensorHistogram
from qcc.passes._input_moments import InputMoments, Layer, layers
from qcc.passes.bias_correction import channel_axes
from qcc.runtime import session

logger = logging.getLogger(__name__)

# Methods that need only each sample's range, not histograms.
_RANGE_ONLY = frozenset({CalibrationMethod.MINMAX, CalibrationMethod.MEANMAX})


class CalibrationStats:
    """Mergeable statistics of a set of tensors: one streamed histogram each (see ``_histogram``)."""

    def __init__(
        self,
        names: list[str],
        bins: bool = True,
        channel_axes: dict[str, int] | None = None,
        layers: dict[str, Layer] | None = None,
    ) -> None:
        self.names = names
        self.bins = bins
        self.histograms = [TensorHistogram(bins) for _ in names]
        self.nonfinite = np.zeros(len(names), dtype=bool)
        self.rows = np.zeros(len(names), dtype=np.int64)  # largest leading dimension seen
        # Per-channel sums and element counts of some tensors (bias correction needs their means).
        self.channel_axes = dict(channel_axes or {})
        self.channels_tracked = channel_axes is not None
        self.channel_sums: dict[str, np.ndarray] = {}
        self.channel_counts: dict[str, int] = {}
        self.channel_shapes: dict[str, tuple[int, ...]] = {}  # the last sample's shape
        # Per layer (node name): the second moment of its weight's inputs (weight rounding), one
        # object for the nodes that multiply the same inputs.
        shared = {layer: InputMoments(layer) for layer in set((layers or {}).values())}
        self.moments = {name: shared[layer] for name, layer in (layers or {}).items()}

    def _distinct_moments(self) -> list[InputMoments]:
        return list({id(m): m for m in self.moments.values()}.values())

    def layer_inputs(self) -> list[str]:
        """The layers' data inputs: what calibration observes for them."""
        return list(dict.fromkeys(m.layer.data for m in self.moments.values()))

    def update_moments(self, arrays: dict[str, np.ndarray]) -> None:
        """Folds one sample of the layers' data inputs (by tensor name) into their moments."""
        finite = {name: bool(np.all(np.isfinite(array))) for name, array in arrays.items()}
        for moments in self._distinct_moments():
            if finite[moments.layer.data]:
                moments.update(arrays[moments.layer.data])

    def covers(self, wanted: dict[str, Layer]) -> bool:
        """True if these statistics hold the moments of every wanted layer."""
        return all(name in self.moments and self.moments[name].layer == layer for name, layer in wanted.items())

    def update(self, arrays: list[np.ndarray]) -> None:
        """Folds one sample's tensors (in ``names`` order) into the statistics."""
        for i, array in enumerate(arrays):
            if array.ndim:
                self.rows[i] = max(self.rows[i], array.shape[0])
            if not np.all(np.isfinite(array)):
                self.nonfinite[i] = True
            elif not self.nonfinite[i]:
                self.histograms[i].update(array)
                axis = self.channel_axes.get(self.names[i])
                if axis is not None and array.ndim > axis:
                    self._add_channels(self.names[i], np.moveaxis(array, axis, 0))
                    self.channel_shapes[self.names[i]] = tuple(array.shape)

    def _add_channels(self, name: str, channels_first: np.ndarray) -> None:
        sums = channels_first.reshape(channels_first.shape[0], -1).sum(axis=1, dtype=np.float64)
        if name in self.channel_sums and self.channel_sums[name].shape == sums.shape:
            self.channel_sums[name] += sums
        else:
            self.channel_sums[name] = sums
            self.channel_counts[name] = 0
        self.channel_counts[name] += channels_first.size // max(channels_first.shape[0], 1)

    def channel_mean(self, name: str) -> np.ndarray | None:
        """The mean of each channel of the tensor over every sample, if it was tracked."""
        if name not in self.channel_sums or not self.channel_counts[name]:
            return None
        return self.channel_sums[name] / self.channel_counts[name]

    def merge(self, other: CalibrationStats) -> None:
        """Folds statistics of the same tensors, observed on other samples, into these."""
        for name, sums in other.channel_sums.items():
            if name in self.channel_sums:
                self.channel_sums[name] = self.channel_sums[name] + sums
                self.channel_counts[name] += other.channel_counts[name]
            else:
                self.channel_sums[name], self.channel_counts[name] = sums.copy(), other.channel_counts[name]
            self.channel_shapes.setdefault(name, other.channel_shapes.get(name, ()))
        theirs = {m.layer: m for m in other._distinct_moments()}
        for moments in self._distinct_moments():
            if moments.layer in theirs:
                moments.merge(theirs[moments.layer])
        for mine, theirs in zip(self.histograms, other.histograms, strict=True):
            mine.merge(theirs)
        self.nonfinite |= other.nonfinite
        self.rows = np.maximum(self.rows, other.rows)

    def subset(self, names: list[str]) -> CalibrationStats | None:
        """The statistics of some of these tensors (None if one was not observed)."""
        index = {name: i for i, name in enumerate(self.names)}
        if not all(name in index for name in names):
            return None
        picked = [index[name] for name in names]
        out = CalibrationStats(list(names), bins=self.bins, channel_axes={} if self.channels_tracked else None)
        out.histograms = [self.histograms[i] for i in picked]
        out.nonfinite, out.rows = self.nonfinite[picked], self.rows[picked]
        kept = set(names)
        out.channel_axes = {k: v for k, v in self.channel_axes.items() if k in kept}
        out.channel_sums = {k: v for k, v in self.channel_sums.items() if k in kept}
        out.channel_counts = {k: v for k, v in self.channel_counts.items() if k in kept}
        out.channel_shapes = {k: v for k, v in self.channel_shapes.items() if k in kept}
        out.moments = self.moments  # by node: a plan with more nodes float reads fewer of them
        return out

    @property
    def min(self) -> np.ndarray:
        """Observed minimum of each tensor."""
        return np.array([h.min for h in self.histograms])

    @property
    def max(self) -> np.ndarray:
        """Observed maximum of each tensor."""
        return np.array([h.max for h in self.histograms])

    def held_bytes(self) -> int:
        """Bytes of statistics held, independent of the number of samples observed."""
        held = sum(h.pos.nbytes + h.neg.nbytes for h in self.histograms) + self.nonfinite.nbytes
        return held + sum(m.held_bytes() for m in self._distinct_moments())


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
        wanted = layers(model.graph) if self.ctx.options.weight_rounding != WeightRounding.NEAREST else {}
        stats = self._observe(model, names, wanted)
        bad = [name for name, flag in zip(names, stats.nonfinite, strict=True) if flag]
        if bad:
            request_replan(model.graph, Replan(_nodes_touching(model.graph, bad), nonfinite=tuple(bad)))
            return ir.passes.PassResult(model, False)
        rows = {name: int(r) for name, r in zip(names, stats.rows, strict=True)}
        method = self.ctx.calibration_method
        chosen = self.ctx.tensor_methods or {}
        start = CalibrationMethod.MINMAX if method == CalibrationMethod.AUTO else method
        ranges = {}
        for value, hist in zip(targets, stats.histograms, strict=True):
            quant = get_quant(value)
            levels = 255 if quant.symmetric else 256
            tensor_method = chosen.get(value.name, start.value)
            if value.is_graph_output():
                tensor_method = CalibrationMethod.MINMAX.value  # a clipped result is wrong outright
            ranges[value.name] = clip_range(hist, tensor_method, levels, quant.symmetric, consumer_bounds(value))
        keep_float = self.ctx.target.float_after_calibration(model.graph, rows, ranges)
        keep_float = {k: v for k, v in keep_float.items() if k not in self.ctx.keep_float}
        if keep_float:
            request_replan(model.graph, Replan(keep_float))
            return ir.passes.PassResult(model, False)
        for value, hist in zip(targets, stats.histograms, strict=True):
            quant = get_quant(value)
            set_range(value, TensorRange(*ranges[value.name]))
            set_histogram(value, hist)  # for the clip search and method checks (passes/_clip_search.py)
            mean = stats.channel_mean(value.name)
            if mean is not None:  # for bias correction, with the input's (last) shape
                set_channel_mean(value, mean.astype(np.float32), stats.channel_shapes.get(value.name))
            quant.stage = Stage.CALIBRATED
        for node in model.graph:
            if node.name in wanted and node.name in stats.moments:
                set_input_moments(node, stats.moments[node.name])
        return ir.passes.PassResult(model, True)

    def _observe(
        self, model: ir.Model, names: list[str], wanted: dict[str, Layer] | None = None
    ) -> CalibrationStats:
        wanted = wanted or {}
        method = self.ctx.calibration_method
        # auto starts from minmax; it needs histograms only if a clip search may run.
        searchless_auto = method == CalibrationMethod.AUTO and self.ctx.options.tolerance is None
        bins = method not in _RANGE_ONLY and not searchless_auto
        cache = self.ctx.statistics
        for seen in [s for s in (cache or {}).values() if isinstance(s, CalibrationStats)]:
            found = seen.subset(names) if seen.bins or not bins else None
            if found is not None and self.ctx.options.bias_correction and not seen.channels_tracked:
                found = None  # observed without the channel means bias correction needs
            if found is not None and not found.covers(wanted):
                found = None  # observed without the input moments weight rounding needs
            if found is not None:  # a plan with more nodes float quantizes a subset of the tensors
                logger.info("reusing the calibration statistics of %d tensors", len(names))
                return found
        axes = channel_axes(model.graph) if self.ctx.options.bias_correction else None
        stats = self._run(model, names, bins, axes, wanted)
        if cache is not None:
            cache[tuple(names)] = stats
        return stats

    def _run(
        self, model: ir.Model, names: list[str], bins: bool, axes: dict[str, int] | None, layers: dict[str, Layer]
    ) -> CalibrationStats:
        observed = set(names)
        stats = CalibrationStats(
            names,
            bins=bins,
            channel_axes=None if axes is None else {k: v for k, v in axes.items() if k in observed},
            layers=layers,
        )
        layer_inputs = stats.layer_inputs()
        extra = [name for name in layer_inputs if name not in observed]
        sess = session(model, level="basic", what="the float model", extra_outputs=(*names, *extra))
        output_names = [o.name for o in sess.get_outputs()]
        position = {name: i for i, name in enumerate(output_names)}
        wanted = [position[name] for name in names]
        calibration = self.ctx.calibration
        total = calibration.known_length()
        count = 0
        for index, feed in enumerate(calibration):
            outputs = run_float(sess, output_names, feed, index)
            stats.update([np.asarray(outputs[i]) for i in wanted])
            if layer_inputs:
                stats.update_moments({name: np.asarray(outputs[position[name]]) for name in layer_inputs})
            count += 1
            self.ctx.progress("calibrate", count, total)
        logger.info("calibrated %d tensors on %d samples", len(names), count)
        return stats



def observe_float(model: ir.Model, ctx, names: list[str], max_samples: int, stage: str) -> Iterator[dict]:
    """Runs the float model on at most ``max_samples`` calibration samples spaced over the set
    (``CalibrationData.spaced``) and yields each sample's ``names`` tensors by name, reporting
    progress as ``stage``. For the float rewrites that need data (smooth-activations,
    equalize-residual).

    Raises:
        CalibrationDataError: the model failed on a sample.
    """
    sess = session(model, level="basic", what="the float model", extra_outputs=names)
    length = ctx.calibration.known_length() or max_samples
    total = -(-length // -(-length // max_samples))  # how many spaced() yields
    for done, (index, feed) in enumerate(ctx.calibration.spaced(max_samples)):
        yield dict(zip(names, run_float(sess, names, feed, index), strict=True))
        ctx.progress(stage, done + 1, total)


def run_float(sess, names: list[str], feed: dict[str, np.ndarray], index: int) -> list[np.ndarray]:
    """Runs the float model's session on calibration sample ``index``.

    Raises:
        CalibrationDataError: the model failed on the sample (shapes it does not accept).
    """
    try:
        return [np.asarray(o) for o in sess.run(names, feed)]
    except Exception as exc:  # noqa: BLE001 - ORT raises several exception types
        raise failed_on_sample(index, exc) from None


def failed_on_sample(index: int, exc: Exception) -> CalibrationDataError:
    """The error for ONNX Runtime's failure ``exc`` on calibration sample ``index``."""
    first = str(exc).strip().splitlines()[0]
    return CalibrationDataError(
        f"the float model failed on calibration sample {index}: {first}",
        "check that the sample's shapes are ones the model accepts.",
    )


def _nodes_touching(graph: ir.Graph, values: list[str]) -> dict[str, str]:
    """The nodes that write or read the named tensors, with the reason to keep them float."""
    names = set(values)
    found = {}
    for node in graph:
        touched = [v.name for v in (*node.inputs, *node.outputs) if v is not None and v.name in names]
        if touched:
            found[node.name] = f"reads or writes {touched[0]!r}, which takes non-finite values (e.g. a -inf mask)"
    return found
