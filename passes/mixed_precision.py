"""Mixed precision: keep float the nodes that remove the most error for their cost, until the output
error bound holds.

Runs last, when every quantization parameter is final. With ``--tolerance`` (default: 1 - cosine
<= 0.002 on every output), it measures on a few calibration samples how far the planned model's
outputs are from the float model's, in a simulation of the quantized model
(``_simulation.Simulation``). Within the bound, nothing changes. Otherwise:

1. **Sensitivity.** Each quantized activation tensor is a unit: the quantized nodes that write or
   read it. For each unit, the plan is made again with those nodes float (which tensors the target
   then still quantizes is the plan's rule, not guessed here) and the simulated error is measured
   with only those tensors quantized. The unit's effect is how much the error falls. Every unit
   is screened on one sample, against the all-int8 model.
2. **Cost**, with ``--latency-budget`` on a target run by ONNX Runtime
   (``TargetSpec.priced_in_onnxruntime``): each unit has a price (``qcc.latency``), the time its
   nodes add when float, from their multiply-accumulates at rates measured in ONNX Runtime, plus the
   conversions at the edges it creates or removes. Units are then ranked by effect per millisecond
   (Silero VAD: the STFT Conv removes a little more error than the output Conv and costs sixty
   times more), those whose screened effect could close enough of the gap first. Otherwise units
   are ranked by effect.
3. **Selection**, in rounds. A round measures the ``REFINED`` best-ranked units that are not float
   yet, on every sample, each on top of the float set so far (effects do not add up: with two
   broken tensors, floating either alone changes little, so the second shows only once the first
   is float), and takes them in that order while each lowers the error, measured again, by at
   least ``MIN_GAIN`` of the gap left to the target (smaller gains cost speed and cannot close the
   gap: PP-OCRv5 det on ``ort`` had floated many nodes that each lowered it by 1e-5 to 1e-4, 31
   float in all and 1.55x faster than fp32; with the rule, 16 float and 1.88x in the zoo, eval
   mask IoU 0.960 -> 0.956). A round that finds none looks at the next ``REFINED`` units down the
   ranking, up to ``WINDOWS`` rounds in a row. It stops when the simulated error is within
   ``MARGIN`` of the bound (the artifact's integer kernels round slightly differently), when those
   rounds find nothing that helps, or at the budget, and the report then says the bound was not
   met. Priced, the budget is ``--latency-budget``: the plan's predicted time as a fraction of
   fp32's. Otherwise at most ``MAX_FLOAT_SHARE`` of the quantized nodes float (MobileNetV2 on
   ``ort`` at 36 of about 64 float was 1.1x fp32); a small model may always float two nodes, one
   tensor's writer and reader.
4. **Pruning** (priced). A unit taken early can be redundant once later ones are float; each is
   tried int8 again, most expensive first, and stays int8 if the error stays within
   ``PRUNE_SLACK`` of what the search reached (MobileNetV2 on ``ort``, budget 1.0: 33 float at
   1.19x fp32 without pruning).
5. The pass asks the driver to plan again with the chosen nodes float (``annotations.Replan``), each
   with its measured effect as the reason. On the second round it only measures and records
   (``annotations.MixedPrecision``, with the search's ending and, priced, its cost model and the
   predicted latency); the driver checks the bound on the artifact itself.

It is skipped with ``--no-verify`` (it runs the model, as method selection does), with
``--dynamic``, and for models over 2 GB (the simulation would hold a second copy).
``--exclude`` still wins: excluded nodes are float before any of this. The search costs one
simulated run of one sample per unit, plus ``REFINED`` runs of all samples per round (and one
per unit taken after the first of a round, and one per unit pruning tries).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from qcc.annotations import (
    MIXED_REASON,
    Decision,
    MixedPrecision,
    Replan,
    Role,
    clear_annotations,
    float_twin,
    get_decision,
    get_quant,
    quantized_values,
    request_replan,
    set_mixed_precision,
)
from qcc.errors import UnsupportedModelError
from qcc.latency import LatencyModel, Tensor, estimate
from qcc.metrics import cosine, relative_error
from qcc.options import CalibrationMethod, ToleranceMetric
from qcc.passes._base import QccPass
from qcc.passes._clip_search import method_params, search_clip_ranges
from qcc.passes._simulation import WORKERS, Simulation
from qcc.passes.plan import PlanPass
from qcc.runtime import is_large, session

logger = logging.getLogger(__name__)

SAMPLES = 4  # calibration samples each simulated run uses
REFINED = 12  # units measured on every sample after screening all on one
WINDOWS = 2  # rounds in a row that find nothing to float before the search stops
MARGIN = 0.8  # the simulation aims at this fraction of the bound
MAX_FLOAT_SHARE = 0.4  # at most this share of the quantized nodes is made float (unpriced searches)
MIN_GAIN = 0.02  # a unit is floated only if it closes at least this share of the gap to the target
# Priced units are ranked by error removed per millisecond; a unit costing less than this share of
# the float model's time counts as costing that much.
COST_FLOOR = 0.001
# Pruning returns a unit to int8 only while the error stays within this share above what the
# forward search reached: the unit was redundant, not the margin under the bound spent (pruned to
# the bound itself, MobileNetV2's 1 - cosine went 0.0009 -> 0.0016 and eval top-1 agreement 0.917).
PRUNE_SLACK = 0.05
SHOWN = 3  # units the report names among those the search left int8
# The error of an output that is not finite where the float model's is: the worst 1 - cosine
# (opposite directions), and for the relative error a value no finite output of interest reaches.
NONFINITE_ERROR = {ToleranceMetric.COSINE: 2.0, ToleranceMetric.RELATIVE: 1e6}
_QUANTIZED = (Decision.INT8, Decision.WEIGHT_ONLY)


class MixedPrecisionPass(QccPass):
    """Measures the quantized model's output error and, above the tolerance, asks for the most
    harmful nodes to be planned float (see module docstring)."""

    name = "mixed-precision"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        try:
            return self._call(model)
        except UnsupportedModelError as error:
            # e.g. a graph output declared with a shape it does not have: the float model runs,
            # the gated twin does not. The artifact's own verify still reports its error.
            logger.warning("mixed precision skipped: %s", error)
            return ir.passes.PassResult(model, False)

    def _call(self, model: ir.Model) -> ir.passes.PassResult:
        options = self.ctx.options
        if options.tolerance is None or not options.verify or self.ctx.calibration is None or options.dynamic:
            return ir.passes.PassResult(model, False)
        if is_large(model):
            logger.info("mixed precision skipped: a model over 2 GB would be held twice by the simulation")
            return ir.passes.PassResult(model, False)
        if not any(get_quant(v).role == Role.ACTIVATION for v in quantized_values(model.graph)):
            if self.ctx.search is not None:  # the search floated every activation: the float model's error
                floated = MixedPrecision(options.tolerance_metric.value, options.tolerance, 0.0, {}, 0, 0)
                floated.search = dict(self.ctx.search)
                set_mixed_precision(model.graph, floated)
            return ir.passes.PassResult(model, False)
        samples = self.ctx.calibration.spread(SAMPLES)
        error = _Error(model, samples, options.tolerance_metric)
        if self.ctx.calibration_method == CalibrationMethod.AUTO and self.ctx.tensor_methods is None:
            # Round 1 of auto: other clip ranges first (they cost no speed), by a simulation whose
            # activation parameters are fed.
            sim = Simulation(model, samples, tunable="params")
            before = error.worst(sim.run())
            if before > options.tolerance:
                spec = self.ctx.target
                methods, _params, after = search_clip_ranges(
                    model,
                    sim,
                    error.worst,
                    frozenset(spec.fixed_output_params),
                    spec.shared_group_ops,
                    lambda done, total: self.ctx.progress("clip ranges", done, total),
                )
                logger.info("clip search: %d tensors change method, error %.4g -> %.4g", len(methods), before, after)
                if methods:
                    request_replan(model.graph, Replan({}, methods=methods))
                    return ir.passes.PassResult(model, False)
        sim = Simulation(model, samples)
        outputs = error.of(sim.run())
        worst = max(outputs.values())
        searched = self.ctx.settled or any(reason.startswith(MIXED_REASON) for reason in self.ctx.keep_float.values())
        measured = MixedPrecision(
            options.tolerance_metric.value, options.tolerance, worst, outputs, sim.evaluations, len(samples)
        )
        if worst <= options.tolerance or searched:
            measured.search = dict(self.ctx.search) if searched and self.ctx.search is not None else None
            set_mixed_precision(model.graph, measured)
            return ir.passes.PassResult(model, False)
        chosen, measured.search = self._search(model, sim, error, worst)
        measured.evaluations = sim.evaluations
        set_mixed_precision(model.graph, measured)
        if chosen:
            # methods: the clip search, if any, is done
            request_replan(model.graph, Replan(chosen, methods={}, search=measured.search))
        return ir.passes.PassResult(model, False)

    def _search(
        self, model: ir.Model, sim: Simulation, error: _Error, worst: float
    ) -> tuple[dict[str, str], dict[str, object]]:
        """Returns the nodes to keep float, with their reasons (empty: nothing helps), and how the
        search ended (``MixedPrecision.search``)."""
        bound = self.ctx.options.tolerance
        planner = _Planner(model, self.ctx)
        neighbours = _neighbours(model.graph)
        units = _units(model.graph, neighbours)
        # Screen every unit on one sample, with the quantizers its nodes alone touch switched off;
        # then measure the most harmful on all samples, with what the plan really keeps quantized.
        simulated: dict[tuple[frozenset[str], int | None], float] = {}

        def worst_with(quantized: set[str], samples: int | None = None) -> float:
            """The simulated error with only these tensors quantized; each set is simulated once
            (units with the same nodes, a unit's nodes float already: a tenth of MobileNetV2's)."""
            return worst_of_each([quantized], samples)[0]

        def worst_of_each(choices: list[set[str]], samples: int | None = None) -> list[float]:
            """``worst_with`` of each, the new ones simulated side by side (``Simulation.run_each``)."""
            keys = [(frozenset(quantized), samples) for quantized in choices]
            new = list(dict.fromkeys(key for key in keys if key not in simulated))
            for key, runs in zip(new, sim.run_each([set(q) for q, _ in new], samples=samples), strict=True):
                simulated[key] = error.worst(runs, samples)
            return [simulated[key] for key in keys]

        first = worst_with(set(sim.gates), samples=1)
        tensors = list(units)
        stills = [{name for name, owners in neighbours.items() if owners - units[t]} for t in tensors]
        screened: dict[str, float] = {}
        step = 4 * WORKERS  # units screened side by side between progress updates
        for start in range(0, len(units), step):
            errors = worst_of_each(stills[start : start + step], samples=1)
            for tensor, after in zip(tensors[start : start + step], errors, strict=True):
                screened[tensor] = first - after
            self.ctx.progress("sensitivity", min(start + step, len(units)), len(units))
        latency = self._latency(model, sim.samples[0], neighbours)
        cost = {t: latency.cost(nodes) for t, nodes in units.items()} if latency is not None else {}
        floor = COST_FLOOR * latency.fp32_total_ms if latency is not None else 1.0

        def worth(tensor: str, effect: float) -> float:
            """Error removed per millisecond when priced, else per unit."""
            return effect / max(cost[tensor], floor) if latency is not None else effect

        ranked = sorted(screened, key=lambda t: worth(t, screened[t]), reverse=True)
        quantized_nodes = sum(getattr(get_decision(n), "decision", None) in _QUANTIZED for n in model.graph)
        budget = max(int(MAX_FLOAT_SHARE * quantized_nodes), 2)  # a small model may float one writer + reader

        def affordable(nodes: set[str]) -> bool:
            """Priced, within --latency-budget; else within the node budget."""
            if latency is not None:
                return latency.affordable(nodes, self.ctx.options.latency_budget)
            return len(nodes) <= budget

        floating: set[str] = set()
        chosen: dict[str, str] = {}
        current = worst

        def error_with(nodes: set[str]) -> float:  # the simulated error with these nodes float
            return worst_with(planner.quantized(nodes))

        window = 0  # rounds that found nothing to float look further down the ranking
        taken: list[str] = []  # the units floated, in order
        # (float nodes, simulated error, priced cost) after each unit taken: ``qcc tune``'s front
        path = [(0, worst, 0.0)]
        spent = latency.cost if latency is not None else lambda nodes: 0.0
        measured: dict[str, float] = {}  # each unit's effect when last measured on every sample
        stopped = "bound"
        while current > MARGIN * bound:
            # A round: the most harmful units by the screening that are not float yet, measured on
            # every sample on top of the float set so far (errors do not add up: with two broken
            # tensors, floating either alone changes little, so the second shows only in a later
            # round); then taken in that order while each lowers the error, measured again.
            enough = MIN_GAIN * (current - MARGIN * bound)  # the least a unit taken must remove
            candidates = [t for t in ranked if units[t] - floating and affordable(floating | units[t])]
            if latency is not None:
                # Units whose screened effect could close enough of the gap come first: a cheap unit
                # that removes nothing ranks high per millisecond and would fill the rounds
                # (PP-OCRv5 det on ``ort`` stopped with 3 float and 1 - cosine 0.018, against 0.009).
                candidates.sort(key=lambda t: screened[t] < enough)  # stable: by worth within each tier
            batch = candidates[window * REFINED : (window + 1) * REFINED]
            if not batch or window >= WINDOWS:
                # Why: a unit that would close enough of the gap is left out by the budget, or
                # none left would, or none is left.
                blocked = any(
                    units[t] - floating
                    and measured.get(t, screened[t]) >= enough
                    and not affordable(floating | units[t])
                    for t in ranked
                )
                if blocked or not (candidates or window) and any(units[t] - floating for t in ranked):
                    stopped = "latency" if latency is not None else "budget"
                else:
                    stopped = "no_gain" if candidates or window else "exhausted"
                break
            # The batch's runs go side by side, all at once: samples of unequal size leave no
            # worker idle at the end of each unit (PP-OCRv5 det's images differ 8x in area).
            errors = worst_of_each([planner.quantized(floating | units[t]) for t in batch])
            effects = {t: current - after for t, after in zip(batch, errors, strict=True)}
            measured.update(effects)
            self.ctx.progress("float search", len(floating), budget)
            added = False
            for tensor in sorted(effects, key=lambda t: worth(t, effects[t]), reverse=True):
                new = units[tensor] - floating
                if effects[tensor] <= 0 or current <= MARGIN * bound:
                    break
                if not new or not affordable(floating | new):
                    continue
                after = current - effects[tensor] if not added else error_with(floating | new)
                if current - after < MIN_GAIN * (current - MARGIN * bound):
                    continue
                floating |= new
                taken.append(tensor)
                for node in sorted(new):
                    chosen[node] = (
                        f"{MIXED_REASON}: with the other nodes around {tensor!r} float, the simulated output "
                        f"error falls {current - after:.4g}; all chosen so far: {worst:.4g} -> {after:.4g}"
                    )
                current, added = after, True
                path.append((len(floating), current, spent(floating)))
            window = 0 if added else window + 1
        pruned: list[str] = []
        if latency is not None and taken and current <= MARGIN * bound:
            floating, current, pruned = _prune(taken, units, floating, current, error_with, latency, MARGIN * bound)
            chosen = {node: reason for node, reason in chosen.items() if node in floating}
            if pruned:
                path.append((len(floating), current, spent(floating)))
        logger.info(
            "mixed precision: %d units measured, %d nodes float, error %.4g -> %.4g (%s)",
            len(units),
            len(chosen),
            worst,
            current,
            stopped,
        )
        # Measured on every sample; when the budget let none be measured, as screened on one.
        known = measured or screened
        helpful = (t for t in known if units[t] - floating and known[t] > 0)
        left = sorted(helpful, key=known.get, reverse=True)[:SHOWN]
        summary: dict[str, object] = {
            "stopped": stopped,
            "left": [
                {"tensor": t, "nodes": sorted(units[t] - floating), "effect": float(known[t])}
                | (
                    {"cost_ms": round(latency.cost(floating | units[t]) - latency.cost(floating), 4)}
                    if latency is not None
                    else {}
                )
                for t in left
            ],
        }
        if latency is not None:
            summary["latency"] = latency.summary(floating) | {
                "float_cost_ms": round(spent(floating), 4),
                "predicted_ms": round(latency.int8_total_ms + spent(floating), 4),
                "budget": self.ctx.options.latency_budget,
                "pruned": pruned,
                "path": [
                    {"float_nodes": n, "error": float(e), "predicted_ms": round(latency.int8_total_ms + c, 4)}
                    for n, e, c in path
                ],
            }
        return chosen, summary

    def _latency(self, model: ir.Model, feed, neighbours: dict[str, set[str]]) -> LatencyModel | None:
        """The plan priced node by node for the target's runtime, with ``--latency-budget`` on a
        target run by ONNX Runtime (else None)."""
        if self.ctx.options.latency_budget is None or not self.ctx.target.priced_in_onnxruntime:
            return None
        edges = {v.name for v in [*model.graph.inputs, *model.graph.outputs]}
        tensors = {}
        for value in quantized_values(model.graph):
            if value.const_value is not None or value.name not in neighbours:
                continue
            touching = {_owner(n) for n in [value.producer(), *value.consumers()] if n is not None}
            joins_float = value.name in edges or any(
                n is None or getattr(get_decision(n), "decision", None) not in _QUANTIZED for n in touching
            )
            tensors[value.name] = Tensor(frozenset(neighbours[value.name]), joins_float)
        return estimate(model, feed, tensors)


@dataclasses.dataclass(frozen=True)
class Fidelity:
    """How close a planned model's simulated outputs come to the float model's on some samples.

    Attributes:
        cosine: the output cosine, averaged over samples, then over outputs.
        error: the worst output's error under the tolerance's metric (what the bound is checked
            against, as mixed precision checks it).
    """

    cosine: float
    error: float


def simulated_fidelity(model: ir.Model, samples: list, metric: ToleranceMetric) -> Fidelity:
    """The annotated model, every planned quantizer on, in the simulation mixed precision measures
    with, against the float model on ``samples``: what the driver chooses a calibration method by,
    without writing and running an artifact per method."""
    runs = Simulation(model, samples).run()
    error = _Error(model, samples, metric)
    pairs = list(zip(error.expected, runs, strict=True))
    cosines = [
        np.mean([1.0 - expected[i].error(got[i], ToleranceMetric.COSINE) for expected, got in pairs])
        for i in range(len(error.names))
    ]
    return Fidelity(float(np.mean(cosines)) if cosines else 0.0, error.worst(runs) if error.names else 0.0)


def errors_by_method(
    model: ir.Model, samples: list, metric: ToleranceMetric, methods: list[CalibrationMethod], target
) -> dict[str, float]:
    """The simulated error (worst output, on ``samples``) of the annotated model as it is, under
    ``"planned"``, and with every activation's range from each of ``methods`` instead: one
    simulation whose scales and zero points are fed, the float nodes as planned."""
    sim = Simulation(model, samples, tunable="params")
    error = _Error(model, samples, metric)
    errors = {"planned": error.worst(sim.run())}
    fixed, shared = frozenset(target.fixed_output_params), target.shared_group_ops
    for method in methods:
        params = method_params(model.graph, sim, method, fixed, shared)
        errors[method.value] = error.worst(sim.run(params=params))
    return errors


def _prune(
    taken: list[str],
    units: dict[str, set[str]],
    floating: set[str],
    current: float,
    error_with: Callable[[set[str]], float],
    latency: LatencyModel,
    limit: float,
) -> tuple[set[str], float, list[str]]:
    """Quantizes again, most expensive first, each unit the bound no longer needs float.

    The forward search takes the units that remove the most error per millisecond first; one
    taken early can be redundant once later ones are float (their errors overlap). Each is tried
    int8 on the final set, measured on every sample, and goes back to int8 if the simulated error
    stays within ``limit`` and within ``PRUNE_SLACK`` of the error the search reached. Returns the
    float set, its error, and the units returned to int8.
    """
    pruned: list[str] = []
    limit = min(limit, current * (1 + PRUNE_SLACK))
    saved = {t: latency.cost(floating) - latency.cost(floating - units[t]) for t in taken}
    for tensor in sorted(taken, key=saved.get, reverse=True):
        others = set().union(*(units[t] for t in taken if t != tensor and t not in pruned))
        candidate = floating - (units[tensor] - others)
        if candidate == floating:
            continue
        after = error_with(candidate)
        if after <= limit:
            floating, current = candidate, after
            pruned.append(tensor)
    return floating, current, pruned


class _Error:
    """The per-output error of simulated outputs against the float model's, on fixed samples."""

    def __init__(self, model: ir.Model, samples: list, metric: ToleranceMetric) -> None:
        reference = session(float_twin(model), level="basic", what="the float model")
        self.names = [o.name for o in reference.get_outputs()]
        self.expected = [[_Expected(array) for array in reference.run(None, feed)] for feed in samples]
        self.metric = metric

    def of(self, runs: list[list[np.ndarray]], samples: int | None = None) -> dict[str, float]:
        """Returns each output's error, averaged over the (first ``samples``) samples."""
        errors = {}
        for i, name in enumerate(self.names):
            pairs = zip(self.expected[:samples], runs, strict=True)
            per_sample = [e[i].error(g[i], self.metric) for e, g in pairs]
            errors[name] = float(np.mean(per_sample))
        return errors

    def worst(self, runs: list[list[np.ndarray]], samples: int | None = None) -> float:
        """The largest of :meth:`of`: what the bound is checked against."""
        return max(self.of(runs, samples).values())


class _Expected:
    """One float output of one sample, prepared once for the many errors measured against it: its
    finite values in float64, where they are (None: everywhere), and their norm."""

    def __init__(self, array: np.ndarray) -> None:
        values = np.asarray(array, dtype=np.float64).ravel()
        keep = np.isfinite(values)
        self.keep = None if keep.all() else keep
        self.values = values if self.keep is None else values[keep]
        self.norm = float(np.linalg.norm(self.values))

    def error(self, got: np.ndarray, metric: ToleranceMetric) -> float:
        """The error of ``got`` over the positions where the float output is finite; an output
        that is not finite there has the metric's ``NONFINITE_ERROR`` (NaN would compare as
        neither worse nor better and stop the search: a Log front end whose input quantizes to 0)."""
        g = np.asarray(got, dtype=np.float64).ravel()
        if self.keep is not None:
            g = g[self.keep]
        if not np.all(np.isfinite(g)):
            return NONFINITE_ERROR[metric]
        if metric == ToleranceMetric.COSINE:
            return 1.0 - cosine(self.values, g, norm_a=self.norm)
        return relative_error(self.values, g)


class _Planner:
    """Plans a copy of the model again with some nodes float; returns the tensors still quantized."""

    def __init__(self, model: ir.Model, ctx) -> None:
        self.float_model = model.clone()
        clear_annotations(self.float_model.graph)
        self.ctx = ctx
        self.node_reasons: dict[ir.Node, str | None] = {}  # what no float set changes (PlanPass)

    def quantized(self, floating: set[str]) -> set[str]:
        """Names of the tensors the target quantizes when ``floating`` nodes are also float."""
        keep_float = {**self.ctx.keep_float, **{name: MIXED_REASON for name in floating}}
        # The plan only annotates: one copy, its annotations cleared each time (a clone per
        # candidate took a sixth of MobileNetV2's search).
        clear_annotations(self.float_model.graph)
        PlanPass(dataclasses.replace(self.ctx, keep_float=keep_float), self.node_reasons)(self.float_model)
        return {v.name for v in quantized_values(self.float_model.graph)}


def _units(graph: ir.Graph, neighbours: dict[str, set[str]]) -> dict[str, set[str]]:
    """Each computed quantized activation with the quantized nodes that write or read it; the
    same node set reached through several tensors (a Conv's input and output) is one unit."""
    unique: dict[frozenset[str], str] = {}
    for value in quantized_values(graph):
        if get_quant(value).role == Role.ACTIVATION and value.const_value is None and neighbours[value.name]:
            unique.setdefault(frozenset(neighbours[value.name]), value.name)
    return {tensor: set(nodes) for nodes, tensor in unique.items()}


def _neighbours(graph: ir.Graph) -> dict[str, set[str]]:
    """Each quantized tensor with the quantized nodes that write or read it (constants: readers)."""
    found: dict[str, set[str]] = {}
    for value in quantized_values(graph):
        nodes = {_owner(n) for n in [value.producer(), *value.consumers()] if n is not None}
        found[value.name] = {
            n.name for n in nodes if n is not None and getattr(get_decision(n), "decision", None) in _QUANTIZED
        }
    return found


def _owner(node: ir.Node) -> ir.Node | None:
    """The node that decides for ``node``: its producer for an absorbed activation."""
    decision = get_decision(node)
    if decision is not None and decision.decision == Decision.FUSED and node.inputs and node.inputs[0] is not None:
        return node.inputs[0].producer()
    return node
