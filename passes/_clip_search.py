"""Per-tensor clip ranges for ``--method auto``: each activation group's method, by its effect on
the outputs.

No clipping method wins on every tensor (``_clip_range``): clipping outliers buys resolution for
the bulk of a tensor, but a few large values can carry the signal (a detector's text pixels) or be
the result (a graph output). So the choice is measured: starting from minmax everywhere, each
group of tensors that share parameters (``activation_qparams.activation_groups``) tries the other
methods' ranges in the simulation (``_simulation``, by feeding scale and zero point; never for a
graph output: a clipped result is wrong), one group at
a time, on one sample; the most promising choices are then confirmed one by one on every sample,
each kept only if the error over all samples falls. Groups whose parameters the target fixes
(TFLite's Softmax output) keep them.

Cost: about one simulated run of one sample per (group, candidate) plus ``CONFIRMED`` runs of all
samples.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from qcc.annotations import TensorRange, get_histogram, get_quant
from qcc.options import CalibrationMethod
from qcc.passes._clip_range import clip_range, consumer_bounds
from qcc.passes._simulation import Simulation
from qcc.passes.activation_qparams import activation_groups, union_range
from qcc.quantmath import activation_params

CANDIDATES = (CalibrationMethod.MEANMAX, CalibrationMethod.PERCENTILE, CalibrationMethod.MSE, CalibrationMethod.ENTROPY)
CONFIRMED = 16  # choices confirmed on every sample, most promising first
_SAME = 0.01  # ranges within 1% of the current one are not tried


Params = dict[str, tuple[np.ndarray, np.ndarray]]


def search_clip_ranges(
    model: ir.Model,
    sim: Simulation,
    error: Callable[[list, int | None], float],
    fixed_ops: frozenset[str],
    shared_group_ops: frozenset[str],
    progress: Callable[[int, int], None],
) -> tuple[dict[str, str], Params, float]:
    """Returns the chosen method per tensor (only where it is not minmax), the simulation
    parameters that go with them, and the error over all samples they reach.

    ``error(runs, samples)`` is the worst output's error of simulated runs on the first
    ``samples`` samples (None: all).
    """
    options = _candidates(model.graph, sim, fixed_ops, shared_group_ops)
    base_one = error(sim.run(samples=1), 1)
    promising: list[tuple[float, int, CalibrationMethod, Params]] = []
    total = sum(len(c) for _, c in options)
    done = 0
    for index, (_members, candidates) in enumerate(options):
        best = None
        for method, params in candidates:
            gain = base_one - error(sim.run(samples=1, params=params), 1)
            done += 1
            progress(done, total + CONFIRMED)
            if gain > 0 and (best is None or gain > best[0]):
                best = (gain, index, method, params)
        if best is not None:
            promising.append(best)
    promising.sort(key=lambda item: -item[0])
    chosen: dict[str, str] = {}
    params: Params = {}
    current = error(sim.run(), None)
    for step, (_gain, index, method, trial) in enumerate(promising[:CONFIRMED], 1):
        after = error(sim.run(params={**params, **trial}), None)
        progress(total + step, total + CONFIRMED)
        if after < current:
            current = after
            params.update(trial)
            chosen.update({v.name: method.value for v in options[index][0] if get_histogram(v) is not None})
    return chosen, params, current


def _candidates(
    graph: ir.Graph, sim: Simulation, fixed_ops: frozenset[str], shared_group_ops: frozenset[str]
) -> list[tuple[list[ir.Value], list[tuple[CalibrationMethod, Params]]]]:
    """Each group that may change, with every candidate method's simulation parameters."""
    out = []
    for members, current in _tunable_groups(graph, sim, fixed_ops, shared_group_ops):
        width = current.max - current.min
        tried = [current]  # a range within 1% of one already there is not tried again
        candidates = []
        bounds = _bounds(members)
        for method in CANDIDATES:
            trial = _group_range(members, method, bounds)
            if any(abs(trial.min - r.min) + abs(trial.max - r.max) <= _SAME * width for r in tried):
                continue
            tried.append(trial)
            candidates.append((method, _group_params(members, sim, trial)))
        if candidates:
            out.append((members, candidates))
    return out


def method_params(
    graph: ir.Graph,
    sim: Simulation,
    method: CalibrationMethod,
    fixed_ops: frozenset[str],
    shared_group_ops: frozenset[str],
) -> Params:
    """The simulation parameters of every activation group that may change with its range from
    ``method``: the model as calibration with that method would have made it (graph outputs keep
    minmax there too)."""
    params: Params = {}
    for members, _current in _tunable_groups(graph, sim, fixed_ops, shared_group_ops):
        params.update(_group_params(members, sim, _group_range(members, method, _bounds(members))))
    return params


def _tunable_groups(
    graph: ir.Graph, sim: Simulation, fixed_ops: frozenset[str], shared_group_ops: frozenset[str]
) -> list[tuple[list[ir.Value], TensorRange]]:
    """The activation groups whose range may change, with their current range: observed, fed to the
    simulation, not fixed by the target, not empty, and without a graph output (a clipped result is
    wrong outright, however the samples score it)."""
    found = []
    for members in activation_groups(graph, shared_group_ops):
        if any(v.producer() is not None and v.producer().op_type in fixed_ops for v in members):
            continue
        if any(v.is_graph_output() for v in members):
            continue
        if not any(get_histogram(v) is not None for v in members) or not any(v.name in sim.params for v in members):
            continue
        current = union_range(members)
        if current.max - current.min > 0:
            found.append((members, current))
    return found


def _bounds(members: list[ir.Value]) -> dict[str, tuple[float, float]]:
    """Each observed member's saturation bound (``consumer_bounds``)."""
    return {v.name: consumer_bounds(v) for v in members if get_histogram(v) is not None}


def _group_range(members: list[ir.Value], method: CalibrationMethod, bounds: dict) -> TensorRange:
    """The group's range with each observed member's range from ``method`` (``bounds``: :func:`_bounds`)."""
    quant = get_quant(members[0])
    levels = 255 if quant.symmetric else 256
    ranges = {
        v.name: TensorRange(*clip_range(get_histogram(v), method.value, levels, quant.symmetric, bounds[v.name]))
        for v in members
        if v.name in bounds
    }
    return union_range(members, ranges)


def _group_params(members: list[ir.Value], sim: Simulation, trial: TensorRange) -> Params:
    """The scale and zero point of ``trial`` for each member the simulation feeds."""
    quant = get_quant(members[0])
    scale, zero_point = activation_params(trial.min, trial.max, quant.dtype, quant.symmetric)
    return {v.name: (scale, zero_point) for v in members if v.name in sim.params}
