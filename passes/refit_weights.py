"""Refit weights: fit each int8 layer, in graph order, to the quantized model's own inputs.

GPTQ (``weight_rounding``) rounds a layer's weights so that its output moves least on the float
model's inputs ``x``. In the quantized model the layer sees ``x~``, the float input plus every
upstream rounding, and the error it passes on is ``Wq x~ - W x``. With ``H~ = sum x~ x~^T`` and
``C = sum x x~^T`` (the same sampled rows of both models), that error's square is

    E(Wq) = tr(Wq H~ Wq^T) - 2 tr(W C Wq^T) + tr(W H W^T)

and the weights that minimize it, damped towards ``W``, are ``W* = (W C + d W)(H~ + d I)^-1``
(``d = DAMPINGS[k] * mean diag H~``): the layer then undoes part of the error it receives, not only
its own (after Li et al., "GPTAQ: Efficient Finetuning-Free Quantization for Asymmetric
Calibration", 2025). ``W*`` is rounded by GPTQ under ``H~``, on the weight's own scales.

The fit must be sequential: a layer fitted to cancel the error of unfitted upstream layers adds
error once those are fitted too (fitting all layers at once on MobileNetV2: eval cosine 0.58). So
layers are fitted in waves in graph order, each wave the next layers whose inputs do not depend on
a layer of the same wave, and the quantized model's inputs are observed again after each wave
(one ONNX Runtime session of the fake-quantized model whose refit weights are fed).

Per layer the candidates are its current levels, nearest rounding (GPTQ's levels, fitted to float
inputs, can be the worse start once activations are rounded) and ``W*`` at each damping; they are compared by
two-fold cross-validation (fit on the even samples, measure ``E`` on the odd, and the reverse), so
that a layer with few rows per input is not fitted to noise; the winner is refit on all samples.
Layers with fewer than ``ROWS_PER_COLUMN`` rows per input column keep their levels.

It runs last, after mixed precision has fixed which nodes are float (run before, the search
floats other nodes and the fit changes with them). Measured with the float set fixed (eval sets
of the zoo): MobileNetV2 top-1 agreement 0.79 -> 0.94 (cosine 0.9907 -> 0.9933), PP-OCRv5 rec
exact lines 0.75 -> 0.96, EfficientNet-Lite0 cosine 0.9907 -> 0.9937.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common

from qcc.annotations import Refit, float_twin, get_float_value, get_quant, set_float_value, set_refit
from qcc.errors import QccError
from qcc.irutils import NameAllocator, const_array
from qcc.optable import WEIGHT_INPUT
from qcc.options import Precision
from qcc.passes._base import QccPass
from qcc.passes._input_moments import Layer, layers
from qcc.passes.calibrate import failed_on_sample, run_float
from qcc.passes.weight_rounding import as_rows, error_spread, gptq_levels, level_range, levels_of, values_of
from qcc.pieces import Pieces
from qcc.qdq import materialize_qdq
from qcc.runtime import session

logger = logging.getLogger(__name__)

DAMPINGS = (0.01, 0.1, 1.0)
ROWS_PER_COLUMN = 8  # fewer rows per input column: the fit has too little to go on
MAX_SAMPLES = 8  # calibration samples observed per wave (spread over the set), in both models
MAX_COLUMNS = 2048  # larger layers keep their levels: three (columns x columns) sums per fold
# The float model's values for the waves ahead, held across samples: each of its runs fetches the
# layer inputs of as many waves as fit, instead of running the whole model once per wave.
AHEAD_BYTES = 64 << 20


class RefitWeightsPass(QccPass):
    """Refits int8 Conv/MatMul/Gemm weights to the quantized model's inputs (module docstring)."""

    name = "refit-weights"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        options, data = self.ctx.options, self.ctx.calibration
        if not options.refit or data is None or options.dynamic or options.precision != Precision.INT8:
            return ir.passes.PassResult(model, False)
        found = {name: layer for name, layer in layers(model.graph).items() if layer.columns <= MAX_COLUMNS}
        nodes = [n for n in model.graph if n.name in found]
        if not nodes:
            return ir.passes.PassResult(model, False)
        samples = [feed for _, feed in data.spaced(MAX_SAMPLES)]
        waves = _waves(model.graph, nodes)
        observer = _Observer(model, nodes, found, waves, len(samples))
        changed = 0
        for done, wave in enumerate(waves):
            sums = observer.observe(done, samples)
            for node in wave:
                changed += self._refit(node, found[node.name], sums[node.name], observer)
            self.ctx.progress("refit", done + 1, len(waves))
        logger.info("refit %d of %d layers to the quantized model's inputs", changed, len(nodes))
        return ir.passes.PassResult(model, bool(changed))

    def _refit(self, node: ir.Node, layer: Layer, folds: list[_Sums], observer: _Observer) -> bool:
        weight = node.inputs[WEIGHT_INPUT]
        quant = get_quant(weight)
        w_float = _float_weight(weight)
        matrix, scale, zero_point, restore = as_rows(node, w_float, quant.scale, quant.zero_point, layer.groups)
        current, _, _, _ = as_rows(node, observer.weights[weight.name], quant.scale, quant.zero_point, layer.groups)
        qmin, qmax = level_range(quant)
        rows = sum(f.rows for f in folds)
        if rows < ROWS_PER_COLUMN * layer.columns or min(f.rows for f in folds) == 0:
            set_refit(node, Refit("kept", 0.0, 0.0, f"{rows} rows for {layer.columns} inputs: too few to fit"))
            return False

        def fit(sums: _Sums, damping: float, spread: np.ndarray | None) -> np.ndarray | None:
            """``W*`` at ``damping``, rounded by GPTQ with the sums' error ``spread``."""
            target = matrix @ sums.cross
            ridge = damping * np.maximum(np.trace(sums.quantized, axis1=1, axis2=2) / layer.columns, 1e-12)
            a = sums.quantized + ridge[:, None, None] * np.eye(layer.columns)[None]
            try:
                fitted = np.linalg.solve(a, (target + ridge[:, None, None] * matrix).transpose(0, 2, 1))
            except np.linalg.LinAlgError:
                return None
            levels = gptq_levels(fitted.transpose(0, 2, 1), spread, scale, zero_point, qmin, qmax)
            return None if levels is None else values_of(levels, scale[..., None], zero_point[..., None])

        nearest = values_of(
            levels_of(matrix, scale[..., None], zero_point[..., None], qmin, qmax),
            scale[..., None],
            zero_point[..., None],
        )
        scores = {
            "kept": sum(_error(current, matrix, f) for f in folds),
            "nearest": sum(_error(nearest, matrix, f) for f in folds),
        }
        spreads = [_spread(f) for f in folds]  # GPTQ's error spread per fold, the same at every damping
        for damping in DAMPINGS:
            total = 0.0
            for train, test in ((0, 1), (1, 0)):
                values = fit(folds[train], damping, spreads[train])
                total += _error(values, matrix, folds[test]) if values is not None else np.inf
            scores[f"d={damping:g}"] = total
        best = min(scores, key=scores.get)
        if best == "kept":
            set_refit(node, Refit("kept", scores["kept"], scores["kept"], "the fit was not closer on held-out samples"))
            return False
        if best == "nearest":
            values = nearest
        else:
            both = folds[0] + folds[1]
            values = fit(both, float(best[2:]), _spread(both))
        if values is None:
            return False
        if get_float_value(weight) is None:
            set_float_value(weight, w_float)
        array = restore(values).astype(np.float32)
        weight.const_value = ir.Tensor(array, name=weight.name)
        observer.weights[weight.name] = array
        set_refit(node, Refit(best, scores[best], scores["kept"]))
        return True


def _float_weight(weight: ir.Value) -> np.ndarray:
    """The layer's float weight: as the model had it, before any rounding or refit."""
    original = get_float_value(weight)
    return original if original is not None else const_array(weight)


def _spread(sums: _Sums) -> np.ndarray | None:
    """GPTQ's error spread (``weight_rounding.error_spread``) of the quantized inputs' moment."""
    return error_spread(sums.quantized / sums.rows)


class _Sums:
    """``H~`` and ``C`` (per group) of one layer over some samples, ``tr(W H W^T)`` (the float
    layer's squared outputs: ``H`` itself is needed for nothing else, and costs as much as ``H~``
    to sum and to hold), and their row count.

    Args:
        weight: the layer's float weight as (groups, output rows, columns) float32.
    """

    def __init__(self, groups: int, columns: int, weight: np.ndarray) -> None:
        self.quantized = np.zeros((groups, columns, columns))
        self.cross = np.zeros((groups, columns, columns))
        self.energy = 0.0
        self.rows = 0
        self.weight = weight

    def add(self, x: np.ndarray, x_q: np.ndarray) -> None:
        """Folds one sample's rows (groups, columns, rows; float32 products, float64 sums) in."""
        self.quantized += x_q @ x_q.transpose(0, 2, 1)
        self.cross += x @ x_q.transpose(0, 2, 1)
        outputs = (self.weight @ x).astype(np.float64)
        self.energy += float(np.vdot(outputs, outputs))
        self.rows += x.shape[2]

    def __add__(self, other: _Sums) -> _Sums:
        out = copy.copy(self)
        out.quantized, out.cross = self.quantized + other.quantized, self.cross + other.cross
        out.energy, out.rows = self.energy + other.energy, self.rows + other.rows
        return out


def _error(values: np.ndarray, matrix: np.ndarray, sums: _Sums) -> float:
    """``E`` per row: the squared output error of weights ``values`` on these samples."""
    e = np.sum((values @ sums.quantized) * values) - 2 * np.sum((matrix @ sums.cross) * values)
    return float((e + sums.energy) / max(sums.rows, 1))


class _Observer:
    """The float model and the fake-quantized model (refit weights fed as inputs), run side by side
    on the same samples, returning each layer's sampled input rows of both, wave after wave. The
    fake-quantized model runs in pieces (``qcc.pieces``), one per wave, so each of its nodes runs
    once per sample over the whole refit (a model that cannot be cut runs whole for every wave); the
    float model runs whole and fetches the waves ahead (``_Ahead``)."""

    def __init__(
        self,
        model: ir.Model,
        nodes: list[ir.Node],
        found: dict[str, Layer],
        waves: list[list[ir.Node]],
        samples: int,
    ) -> None:
        self.found, self.waves = found, waves
        twin = float_twin(model)
        sim = materialize_qdq(model, keep_fused_activations=True, float_weights=True)
        by_name = {n.name: n for n in sim.graph}
        names = NameAllocator(sim.graph)
        self.weights: dict[str, np.ndarray] = {}  # weight name -> the fake-quantized values fed
        self.inputs: dict[str, str] = {}  # layer -> its data input in the fake-quantized model
        for node in nodes:
            twin_node = by_name[node.name]
            dq = twin_node.inputs[WEIGHT_INPUT].producer()
            weight = node.inputs[WEIGHT_INPUT]
            self.weights[weight.name] = get_quant(weight).grid_values(const_array(weight))
            fed = ir.Value(
                name=names.new(f"qcc_refit_{weight.name}"),
                type=dq.outputs[0].type,
                shape=ir.Shape(self.weights[weight.name].shape),
            )
            sim.graph.inputs.append(fed)
            twin_node.replace_input_with(WEIGHT_INPUT, fed)
            self.inputs[node.name] = twin_node.inputs[0].name
        common.RemoveUnusedNodesPass()(sim)  # the fed weights' Q -> DQ
        self.fed = {n.inputs[WEIGHT_INPUT].name: by_name[n.name].inputs[WEIGHT_INPUT].name for n in nodes}
        self.float_names = [list(dict.fromkeys(found[n.name].data for n in wave)) for wave in waves]
        self.quant_names = [list(dict.fromkeys(self.inputs[n.name] for n in wave)) for wave in waves]
        # The float model runs whole, at the "all" level: in pieces at "all" ONNX
        # Runtime picks kernels per piece, and at "basic" other kernels than the whole model's at
        # "all", a few ulps apart either way, which is enough to flip layers' cross-validated
        # choices (PP-OCRv5 rec trt: eval exact lines 0.875 -> 0.792 with the same plan). The
        # fake-quantized model, at "basic", computes the same values in pieces bit for bit. One
        # session fetches any of the waves' inputs with the same values, so it fetches them ahead.
        self.float = _Ahead(twin, self.float_names, "all", "the float model", samples)
        self.quantized = _in_pieces(sim, self.quant_names, "basic", "the simulated quantized model")

    def observe(self, index: int, samples) -> dict[str, list[_Sums]]:
        """Per layer of wave ``index``: its sums over the even and the odd samples."""
        wave = self.waves[index]
        sums = {}
        for node in wave:
            layer, weight = self.found[node.name], node.inputs[WEIGHT_INPUT]
            quant = get_quant(weight)
            rows = as_rows(node, _float_weight(weight), quant.scale, quant.zero_point, layer.groups)[0]
            rows = rows.astype(np.float32)
            sums[node.name] = [_Sums(layer.groups, layer.columns, rows) for _ in range(2)]
        float_names, quant_names = self.float_names[index], self.quant_names[index]
        feeds = {self.fed[name]: array for name, array in self.weights.items()}
        for sample, feed in enumerate(samples):
            x = dict(zip(float_names, self.float(index, feed, sample), strict=True))
            x_q = dict(zip(quant_names, self.quantized(index, {**feed, **feeds}, sample), strict=True))
            for node in wave:
                layer = self.found[node.name]
                rows = layer.rows(x[layer.data], seed=sample)
                rows_q = layer.rows(x_q[self.inputs[node.name]], seed=sample)
                sums[node.name][sample % 2].add(rows, rows_q)
        return sums


def _in_pieces(model: ir.Model, requests: list[list[str]], level: str, what: str):
    """``run(request, feed, sample) -> arrays``: the model in pieces, or whole where it cannot be cut
    (one request per run: the refit weights it is fed change between waves)."""
    if not Pieces.fits(model):
        return _Ahead(model, requests, level, what, samples=1, ahead_bytes=0)
    pieces = Pieces(model, requests, level=level, what=what)
    return lambda request, feed, sample: _checked(pieces.run, request, feed, sample)


class _Ahead:
    """``run(request, feed, sample) -> arrays``: one session of the whole model, each of whose runs
    also fetches the following requests' tensors for that sample, as many as ``ahead_bytes`` holds
    for every sample (their size guessed from the requests fetched so far), and keeps them until
    asked. Requests are asked in order, every sample per request; only a model whose feeds stay the
    same from one request to the next may fetch ahead."""

    def __init__(
        self,
        model: ir.Model,
        requests: list[list[str]],
        level: str,
        what: str,
        samples: int,
        ahead_bytes: int | None = None,  # None: AHEAD_BYTES
    ) -> None:
        self.requests, self.samples = requests, max(samples, 1)
        self.ahead_bytes = AHEAD_BYTES if ahead_bytes is None else ahead_bytes
        names = tuple(dict.fromkeys(n for r in requests for n in r))
        self.session = session(model, level=level, what=what, extra_outputs=names)
        self.held: dict[tuple[int, int], list[np.ndarray]] = {}
        self.fetched_bytes, self.fetched_requests = 0, 0

    def __call__(self, request: int, feed, sample: int) -> list[np.ndarray]:
        if (request, sample) not in self.held:
            per_request = self.fetched_bytes / self.fetched_requests if self.fetched_requests else self.ahead_bytes
            count = max(1, int(self.ahead_bytes // max(per_request * self.samples, 1)))
            ahead = range(request, min(request + count, len(self.requests)))
            names = list(dict.fromkeys(n for r in ahead for n in self.requests[r]))
            got = dict(zip(names, run_float(self.session, names, feed, sample), strict=True))
            for r in ahead:
                self.held[r, sample] = [got[n] for n in self.requests[r]]
            self.fetched_bytes += sum(a.nbytes for a in got.values())
            self.fetched_requests += len(ahead)
        return self.held.pop((request, sample))


def _checked(run, request: int, feed, sample: int) -> list[np.ndarray]:
    """A piece's run, with a failure on a sample said as calibration's own (``run_float``)."""
    try:
        return run(request, feed, sample)
    except QccError:
        raise
    except Exception as exc:  # noqa: BLE001 - ORT raises several exception types
        raise failed_on_sample(sample, exc) from None


def _waves(graph: ir.Graph, nodes: list[ir.Node]) -> list[list[ir.Node]]:
    """The layers in graph order, cut into runs whose inputs do not depend on a layer of the run."""
    upstream: dict[int, set[str]] = {}  # node -> names of the layers it depends on
    names = {n.name for n in nodes}
    for node in graph:
        deps = set()
        for value in node.inputs:
            producer = value.producer() if value is not None else None
            if producer is not None:
                deps |= upstream.get(id(producer), set())
                if producer.name in names:
                    deps.add(producer.name)
        upstream[id(node)] = deps
    waves: list[list[ir.Node]] = []
    current: set[str] = set()
    for node in nodes:
        if not waves or upstream[id(node)] & current:
            waves.append([])
            current = set()
        waves[-1].append(node)
        current.add(node.name)
    return waves
