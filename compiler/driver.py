"""The driver: load -> pipeline -> emit -> verify -> report, as one straight function.

What a compile cost is counted while it runs: :func:`compile_model` makes a
``qcc.runtime.CostCounter`` current for the compile, each compile it makes (the one asked for and
the candidates of its selections) is recorded with why it was made and how many times its pass
pipeline ran, and load, emit and verify are stages of the count like the passes; the counter's
report is ``report["cost"]`` (see ``qcc.report``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import itertools
import json
import logging
import os
import time
from typing import Any

import onnx
import onnx_ir as ir

from qcc import frontend
from qcc.annotations import ALREADY_QUANTIZED_REASON, Decision, Plan, Replan, get_decision, pending_replan
from qcc.backends import get_backend
from qcc.backends.base import Artifact
from qcc.context import PassContext, Progress, no_progress
from qcc.data import CalibrationData, CalibrationSource, one_pass, open_calibration, reiterable
from qcc.errors import (
    NonFiniteActivationsError,
    OptionError,
    QccError,
    StrictError,
    UnsupportedModelError,
)
from qcc.frontend import OwnQuantization
from qcc.io import check_output_path, check_output_suffix, write_atomic
from qcc.options import CalibrationMethod, CompileOptions, Precision
from qcc.passes.mixed_precision import Fidelity, errors_by_method, simulated_fidelity
from qcc.pipeline import run_pipeline
from qcc.report import (
    STRICT_WARNINGS,
    build_report,
    compile_warnings,
    inspect_command,
    mixed_precision_section,
)
from qcc.runtime import CompileCost, CostCounter, counting_cost, current_cost
from qcc.target import TargetSpec

logger = logging.getLogger(__name__)
# The report's warnings go to the package's logger, which users configure (``logging.getLogger("qcc")``).
_user_log = logging.getLogger("qcc")

VERIFY_SAMPLES = 4
# Re-plans after calibration finds non-finite tensors; each one widens the float region.
MAX_REPLANS = 4


@dataclasses.dataclass
class CompileResult:
    """The result of one compile.

    Attributes:
        artifact: the target artifact (bytes and, for ONNX targets, the ModelProto).
        report: the JSON-serializable report (see ``qcc.report``).
        annotated: the annotated IR the artifact was emitted from (``annotations.float_twin``
            of it is the float function the artifact approximates, with qcc's rewrites such as
            SmoothQuant and its tensor names: what ``qcc analyze`` compares against).
    """

    artifact: Artifact
    report: dict[str, Any]
    annotated: ir.Model | None = dataclasses.field(default=None, repr=False)
    # The plan's float nodes and clip methods: a compile seeded with them skips the mixed-precision
    # and clip searches.
    plan: Plan = dataclasses.field(default_factory=Plan, repr=False)
    # The files the compile read (model, calibration data): save() never writes over them.
    inputs: tuple[str, ...] = dataclasses.field(default=(), repr=False)

    @property
    def model(self) -> onnx.ModelProto | None:
        """The int8 ONNX model, for ONNX targets (``ort``, ``trt``); None otherwise.

        For a model over 2 GB this is its graph without the external tensors' data; ``save()``
        writes the model file and its ``.data`` file.
        """
        return self.artifact.proto

    @property
    def warnings(self) -> list[dict[str, str]]:
        """``report["warnings"]``: ``[{"code": ..., "message": ...}]``, what the compile did not do as
        asked (codes: ``qcc.report.WARNING_CODES``)."""
        return self.report.get("warnings", [])

    def check_strict(self) -> None:
        """Refuses the warnings ``strict`` does not accept (``qcc.report.STRICT_WARNINGS``).

        Raises:
            StrictError: with this result attached and ``exit_code`` 3.
        """
        refused = [w for w in self.warnings if w["code"] in STRICT_WARNINGS]
        if refused:
            raise StrictError(self, refused)

    def save(self, path: str | os.PathLike, report_path: str | os.PathLike | None = None) -> None:
        """Writes the artifact (and optionally the JSON report) atomically.

        Raises:
            OutputError: a path cannot be written, it is one of the compile's input files, or its
                suffix is another target's artifact suffix (a ``.tflite`` named ``.onnx``).
        """
        check_output_suffix(path, self.report["target"])
        check_output_path(path, inputs=self.inputs)
        if report_path is not None:
            check_output_path(report_path, inputs=(*self.inputs, path))
        self.artifact.save(path)
        if report_path is not None:
            write_atomic(report_path, json.dumps(self.report, indent=2).encode())


def compile_model(
    model: object,
    calibration: CalibrationSource | None,
    options: CompileOptions,
    progress: Progress = no_progress,
) -> CompileResult:
    """Compiles a float model for ``options.target``.

    The report's ``warnings`` say what the user must not miss though the compile succeeded (a missed
    ``tolerance``, nothing quantized, nodes kept float, an already-quantized model); each is also
    logged as a warning on the ``qcc`` logger.

    Args:
        model: path, bytes, onnx.ModelProto, onnx_ir.Model or graphsurgeon Graph (not modified).
        calibration: calibration data (see ``qcc.data``).
        options: compile options.
        progress: progress callback for long stages.

    Returns:
        The artifact and its report; ``report["cost"]`` counts what this call cost (every compile
        it made, pipeline runs, ONNX Runtime sessions and runs, simulation runs, seconds by stage).

    Raises:
        QccError: any problem with the model, the data, the options or the output.
    """
    with counting_cost() as cost:
        result = _compile(_Call(_Source(model), calibration, progress), options)
        _add_warnings(result, options)
    result.report["cost"] = cost.report()
    return result


def _add_warnings(result: CompileResult, options: CompileOptions) -> None:
    """Fills ``report["warnings"]`` of the compile kept, and logs each on the ``qcc`` logger."""
    # The plan's float nodes that the target could run int8 (a Log next to a non-finite tensor could not).
    int8_capable = get_backend(options.target).spec.int8_capable_ops
    op_types = {node.name: node.op_type for node in result.annotated.graph}
    kept = {
        name: reason
        for name, reason in result.plan.keep_float.items()
        if op_types.get(name) in int8_capable and reason != ALREADY_QUANTIZED_REASON
    }
    result.report["warnings"] = compile_warnings(result.report, kept)
    for warning in result.report["warnings"]:
        _user_log.warning("%s: %s", warning["code"], warning["message"])


# Options no float rewrite reads (``pipeline.FLOAT_PASSES``, ``DATA_REWRITE_PASSES``): compiles that
# differ only in these share the rewritten model. A rewrite that reads one must take it out of here.
PLAN_ONLY_OPTIONS = frozenset(
    {
        "method",
        "verify",
        "verify_each",
        "tolerance",
        "tolerance_metric",
        "latency_budget",
        "bias_correction",
        "weight_rounding",
        "refit",
    }
)


class _Source:
    """The model a compile was given, loaded (checked, upgraded, shape-inferred) once for every
    compile of the call; each compile works on its own copy of the loaded IR. The float rewrites run
    once too: a compile whose rewrites would do what an earlier one's did starts from a copy of
    their result (``rewritten``)."""

    def __init__(self, model: object) -> None:
        self.model = model
        self._loaded: dict[int, frontend.LoadedModel] = {}  # by the opset the target needs
        self._rewritten: dict[tuple, ir.Model] = {}  # by the options the rewrites read

    def rewritten(self, options: CompileOptions) -> ir.Model | None:
        """A copy of the model as the float rewrites left it for these options, if a compile of this
        call ran them."""
        found = self._rewritten.get(_rewrite_key(options))
        return found.clone() if found is not None else None

    def keep_rewritten(self, options: CompileOptions, model: ir.Model) -> None:
        """Keeps a copy of ``model``, just rewritten for ``options``, for the compiles after."""
        self._rewritten[_rewrite_key(options)] = model.clone()

    def shared(self, options: CompileOptions) -> frontend.LoadedModel:
        """The model loaded for the options' target, which every copy is made from: read it, never
        change it."""
        with _stage("load"):
            min_opset = get_backend(options.target).spec.min_opset(options)
            if min_opset not in self._loaded:
                self._loaded[min_opset] = frontend.load(self.model, min_opset=min_opset)
            return self._loaded[min_opset]


def _rewrite_key(options: CompileOptions) -> tuple:
    """The options the float rewrites read (all but ``PLAN_ONLY_OPTIONS``)."""
    fields = dataclasses.fields(options)
    return tuple((f.name, repr(getattr(options, f.name))) for f in fields if f.name not in PLAN_ONLY_OPTIONS)


@dataclasses.dataclass(frozen=True)
class _Call:
    """What every compile of one ``compile_model`` call reads: the model, the calibration data (a
    selection may narrow it: a one-shot iterator read into a list, the verify samples) and where
    progress goes."""

    model: _Source
    calibration: CalibrationSource | None
    progress: Progress = no_progress


def _compile(call: _Call, options: CompileOptions, statistics: dict | None = None) -> CompileResult:
    """:func:`compile_model` without the warnings; the selections compile their candidates with it.

    Args:
        statistics: a calibration-statistics cache shared by the compiles of one selection.
    """
    backend = get_backend(options.target)
    backend.spec.check_options(options)
    chosen_by_user = options.method is not None
    methods = (options.method,)
    if options.method is None and options.needs_calibration:
        methods = backend.spec.default_methods(options)
        if not options.verify:
            methods = methods[:1]  # choosing between methods runs the artifacts; --no-verify runs none
    if len(methods) > 1:
        return _compile_auto(call, options, methods)
    options = dataclasses.replace(options, method=methods[0])
    select_mode = not chosen_by_user and backend.spec.dynamic
    if select_mode and _refits(options, call.calibration) and _may_try_dynamic(call.model, options):
        return _compare_then_refit(call, options, statistics, select_mode)
    return _compile_planned(call, options, statistics, select_mode)


@dataclasses.dataclass
class _Planned:
    """A compile up to its annotated model, before emit: what a selection's candidates compare."""

    annotated: ir.Model
    plan: Plan  # the float nodes and clip methods it settled on
    ctx: PassContext  # the last plan's
    loaded: frontend.LoadedModel
    data: CalibrationData | None
    timings: dict[str, float]
    counted: CompileCost  # the compile's record in the cost counter
    start: float  # time.perf_counter() when it began


def _plan(call: _Call, options: CompileOptions, statistics: dict | None, plan: Plan | None = None) -> _Planned:
    """Load (shared), then the pass pipeline, again for each plan the passes ask for (float nodes,
    clip methods), until one settles. With ``plan`` (another compile's float nodes and clip methods)
    nothing is searched again."""
    backend = get_backend(options.target)
    cost = current_cost() or CostCounter()  # a compile outside compile_model counts for nobody
    counted = cost.begin_compile(_distinguishing(options))
    timings: dict[str, float] = {}
    start = time.perf_counter()
    model, calibration = call.model, call.calibration
    loaded = model.shared(options)
    timings["load"] = time.perf_counter() - start
    _check_excludes(loaded.model, options.exclude, loaded.source)
    if calibration is None and options.needs_calibration:
        raise QccError(
            "calibration data is required.",
            "pass --calib data.npz (or calibration=... in Python); --dynamic needs none.",
        )
    data = None
    if calibration is not None:
        data = open_calibration(calibration, loaded.input_specs(), options.max_calibration_samples)
    settled = plan is not None
    current = dataclasses.replace(plan, tensor_methods=plan.tensor_methods or {}) if plan is not None else Plan()
    own = loaded.own_quantization
    if own is not None:
        _check_takes_own_quantization(backend.spec, own, loaded.source)
        current = current.merged(Replan(dict.fromkeys(own.nodes, ALREADY_QUANTIZED_REASON)))
    statistics = {} if statistics is None else statistics
    pristine = loaded.model  # the float model as loaded, shared by the call: each plan works on a copy
    for _attempt in range(MAX_REPLANS + 1):
        ctx = PassContext(
            options,
            backend.spec,
            data,
            call.progress,
            keep_float=dict(current.keep_float),
            statistics=statistics,
            tensor_methods=current.tensor_methods,
            settled=settled,
            search=current.search,
        )
        rewritten = model.rewritten(options)  # once this compile, or an earlier one of the call, rewrote it alike
        if rewritten is not None:  # a plan of the rewritten model: the annotation passes only
            annotated = rewritten
            counted.replans += 1
            timings.update(run_pipeline(annotated, ctx, plan_only=True))
        else:
            annotated = pristine.clone()
            counted.pipeline_runs += 1
            timings.update(run_pipeline(annotated, ctx, rewritten=lambda m: model.keep_rewritten(options, m)))
        replan = pending_replan(annotated.graph)
        if replan is None:
            break
        if _attempt == MAX_REPLANS:
            if replan.nonfinite:
                raise NonFiniteActivationsError(list(replan.nonfinite))
            raise QccError(
                f"planning did not settle after {MAX_REPLANS} re-plans (the last asked for {replan.describe()}).",
                "compile with --tolerance off, or --exclude the nodes the report names; please report the model.",
            )
        current = current.merged(replan)
        logger.info("keeping %d nodes float (%s); planning again", len(current.keep_float), replan.describe())
    return _Planned(annotated, current, ctx, loaded, data, timings, counted, start)


def _compile_planned(
    call: _Call, options: CompileOptions, statistics: dict | None, select_mode: bool, plan: Plan | None = None
) -> CompileResult:
    """One compile with one calibration method (:func:`_plan`, then emit, verify and the report);
    with ``select_mode``, a static compile that needed float nodes is compared with ``--dynamic``.
    With ``plan`` (another compile's float nodes and clip methods) nothing is searched again."""
    backend = get_backend(options.target)
    cost = current_cost() or CostCounter()
    planned = _plan(call, options, statistics, plan)
    progress = call.progress
    annotated, current, ctx, loaded, data = planned.annotated, planned.plan, planned.ctx, planned.loaded, planned.data
    timings, counted, start = planned.timings, planned.counted, planned.start
    pristine, own = loaded.model, loaded.own_quantization
    stamp = time.perf_counter()
    with cost.stage("emit"):
        artifact = backend.emit(annotated, ctx)
    timings["emit"] = time.perf_counter() - stamp
    verify = None
    if options.verify:
        stamp = time.perf_counter()
        progress("verify", 0, 1)
        int8 = frozenset(
            n.name
            for n in annotated.graph
            if n.op_type in backend.spec.compute_ops
            and getattr(get_decision(n), "decision", None) in (Decision.INT8, Decision.WEIGHT_ONLY)
        )
        samples = data.spread(VERIFY_SAMPLES) if data is not None else []
        with cost.stage("verify"):
            verify = backend.verify(artifact, pristine, samples, planned_int8=int8)
        progress("verify", 1, 1)
        timings["verify"] = time.perf_counter() - stamp
    timings["total"] = counted.seconds = time.perf_counter() - start
    report = build_report(
        annotated,
        loaded.proto,
        target=options.target,
        options=options,
        activation_dtype=ctx.activation_dtype,
        verify=verify,
        timings=timings,
        artifact_bytes=artifact.size,
        already_quantized=own.summary() if own is not None else None,
    )
    report["model"]["source"] = loaded.source
    if options.method == CalibrationMethod.AUTO and options.tolerance is not None:
        # tensor -> method, the rest minmax
        report["clip_search"] = dict(sorted((current.tensor_methods or {}).items()))
    result = CompileResult(artifact=artifact, report=report, annotated=annotated, plan=current)
    if select_mode and _dynamic_may_be_closer(annotated, options, result.report):
        # --dynamic needs the samples to smooth (all of them) and verify; a one-shot iterator is spent by now.
        samples, smooth = (data, options.smoothquant) if data.reiterable else (data.spread(VERIFY_SAMPLES), False)
        dynamic_options = dataclasses.replace(options, smoothquant=smooth)  # as the static compile could
        with cost.selection("mode"):
            narrowed = dataclasses.replace(call, calibration=samples)
            result = _static_or_dynamic(narrowed, dynamic_options, statistics, result)
    return result


def _refits(options: CompileOptions, calibration: CalibrationSource | CalibrationData | None) -> bool:
    """The compile runs the refit with ``--tolerance`` on data it can read again."""
    return (
        options.refit
        and options.precision == Precision.INT8
        and options.needs_calibration
        and not options.dynamic
        and options.verify
        and options.tolerance is not None
        and reiterable(calibration)
    )


def _compare_then_refit(
    call: _Call, options: CompileOptions, statistics: dict | None, select_mode: bool
) -> CompileResult:
    """Compiles without the refit (the slowest pass) to settle the float nodes, the clip methods and
    static vs ``--dynamic``; then compiles that plan once more with the refit, instead of refitting
    both candidates. The report's selection is that of the compiles without the refit."""
    statistics = {} if statistics is None else statistics
    with _selection("without_refit"):
        unfitted = _compile_planned(call, dataclasses.replace(options, refit=False), statistics, select_mode)
    if unfitted.report["options"].get("dynamic"):  # --dynamic won: no fixed ranges to refit to
        unfitted.report["mode_selection"]["compared"] = "without the refit"
        unfitted.report["options"]["refit"] = options.refit
        return unfitted
    return _refit_plan(
        call,
        options,
        statistics,
        unfitted.plan,
        unfitted.report["timings"]["total"],
        unfitted.report.get("mode_selection"),
    )


def _refit_plan(
    call: _Call,
    options: CompileOptions,
    statistics: dict,
    plan: Plan,
    selection_seconds: float,
    mode_selection: dict[str, Any] | None = None,
) -> CompileResult:
    """Compiles a settled ``plan`` (float nodes, clip methods) again, with the refit; the report counts
    the time of the compiles that settled it under ``timings["selection"]`` and keeps their
    ``mode_selection``, if any."""
    with _selection("refit"):
        result = _compile_planned(call, options, statistics, False, plan)
    if mode_selection is not None:
        result.report["mode_selection"] = {**mode_selection, "compared": "without the refit"}
    timings = result.report["timings"]
    timings["selection"] = round(selection_seconds, 4)
    timings["total"] = round(timings["total"] + timings["selection"], 4)
    return result


def _needed_float_nodes(report: dict[str, Any]) -> bool:
    """The compile missed the tolerance, or met it only by keeping nodes float."""
    mixed = report.get("mixed_precision") or {}
    return mixed.get("met") is False or (mixed.get("met") is True and bool(mixed.get("kept_float")))


def _dynamic_may_be_closer(model: ir.Model, options: CompileOptions, report: dict[str, Any]) -> bool:
    """A static compile that missed the tolerance, or met it only by keeping nodes float, of a model
    :func:`_may_try_dynamic` compares with ``--dynamic``."""
    return (
        _needed_float_nodes(report)
        and ((report.get("mixed_precision") or {}).get("artifact_error") or 0.0) > 0.0  # all float: can't be closer
        and not options.dynamic
        and options.precision == Precision.INT8
        and _without_convolutions(model)
    )


def _may_try_dynamic(source: _Source, options: CompileOptions) -> bool:
    """The static compile may be compared with ``--dynamic`` (:func:`_dynamic_may_be_closer`): a
    model without convolutions (a transformer: static activation ranges lose most at LayerNorm
    outliers). Only then is the refit kept out of the compiles compared."""
    return _without_convolutions(source.shared(options).model)


def _without_convolutions(model: ir.Model) -> bool:
    """Matrix products and no convolution."""
    return not any(node.op_type in ("Conv", "ConvTranspose") for node in model.graph) and any(
        node.op_type in ("MatMul", "Gemm") for node in model.graph
    )


def _static_or_dynamic(call: _Call, options: CompileOptions, statistics: dict, static: CompileResult) -> CompileResult:
    """Compiles with ``--dynamic`` too and keeps whichever artifact is closer to fp32 on the same
    calibration samples (the static one on a tie); the report's ``mode_selection`` says why."""
    dynamic = _compile(call, dataclasses.replace(options, dynamic=True, method=None, latency_budget=None), statistics)
    missed = static.report["mixed_precision"]["met"] is False
    why = (
        f"the static compile {'missed --tolerance' if missed else 'met --tolerance only with nodes kept float'}"
        " on a model without convolutions, so --dynamic was tried"
    )
    return _keep_closer(options, "mode_selection", {"static": static, "dynamic": dynamic}, why)


def _keep_closer(
    options: CompileOptions,
    section: str,
    candidates: dict[str, CompileResult],
    why: str,
) -> CompileResult:
    """Of two compiles, the one whose artifact is closer to fp32 on the calibration samples (by the
    tolerance's metric; the first on a tie), with ``report[section]`` saying which, how close and why."""
    errors = {
        name: mixed_precision_section(None, result.report["verify"], options)["artifact_error"]
        for name, result in candidates.items()
    }
    floats = {
        name: len((result.report.get("mixed_precision") or {}).get("kept_float") or [])
        for name, result in candidates.items()
    }
    first, second = candidates
    chosen = second if errors[second] is not None and errors[second] < errors[first] else first
    best = candidates[chosen]
    best.report[section] = {
        "chosen": chosen,
        "metric": options.tolerance_metric.value,
        "artifact_error": errors,
        "kept_float": floats,
        "rule": "closer to fp32",
        "why": why,
    }
    return best


# Output-cosine gain another method needs over the ones before it; ties (YOLO: 0.9996 vs 0.9997) keep
# minmax, whose ranges never clip.
AUTO_MARGIN = 0.002


def _compile_auto(call: _Call, options: CompileOptions, methods: tuple[CalibrationMethod, ...]) -> CompileResult:
    """One plan per calibration method, scored in the simulation (``mixed_precision.simulated_fidelity``:
    mean output cosine against the float model on the verify samples); the closest is compiled: the
    ``trt`` and ``tflite`` int8 default, minmax or meanmax for the whole model
    (``TargetSpec.default_methods``). (``--method auto`` chooses per tensor instead, inside one
    compile: ``passes/_clip_search.py``.)

    Only the chosen method's plan is emitted and verified. Its simulated error against the bound
    decides what follows, as mixed precision would decide it: within the bound, the plan is refit
    (or, without the refit, compiled as it is); above it, the chosen method is compiled with the
    search.
    """
    if call.calibration is not None and not reiterable(call.calibration):
        # A one-shot iterator of feeds or a reader without rewind(): each compile reads it again
        # (up to the samples it uses).
        feeds = list(itertools.islice(one_pass(call.calibration), options.max_calibration_samples))
        call = dataclasses.replace(call, calibration=feeds)
    scores: dict[str, float] = {}
    best: tuple[_Planned, Fidelity] | None = None
    selection_seconds = 0.0
    statistics: dict = {}  # the float model runs over the calibration data once per kind of statistics
    for method in methods:  # the first stays unless another method is clearly better
        # Mixed precision searches once, for the chosen method, and only if it misses the bound; the
        # refit too (the slowest pass) runs only on the chosen method's compile.
        candidate = dataclasses.replace(
            options, method=method, verify=True, tolerance=None, refit=False, latency_budget=None
        )
        with _selection("method"):
            planned = _plan(call, candidate, statistics)
            samples = planned.data.spread(VERIFY_SAMPLES) if planned.data is not None else []
            with (current_cost() or CostCounter()).stage("score"):
                fidelity = simulated_fidelity(planned.annotated, samples, options.tolerance_metric)
            planned.counted.seconds = time.perf_counter() - planned.start
        selection_seconds += planned.counted.seconds
        scores[method.value] = fidelity.cosine
        if best is None or fidelity.cosine > max(scores[m] for m in scores if m != method.value) + AUTO_MARGIN:
            best = planned, fidelity
    assert best is not None
    chosen_plan, fidelity = best
    chosen = chosen_plan.ctx.options.method.value
    final = dataclasses.replace(options, method=chosen)
    met = options.tolerance is not None and fidelity.error <= options.tolerance
    if met and _refits(final, call.calibration):  # the plan stands: refit it
        result = _refit_plan(call, final, statistics, chosen_plan.plan, selection_seconds)
    elif options.refit or (options.tolerance is not None and not met):
        with _selection("chosen_method"):
            result = _compile(call, final, statistics)
    else:  # the chosen plan as it is
        with _selection("chosen_method"):
            result = _compile_planned(call, final, statistics, False, chosen_plan.plan)
    selection: dict[str, Any] = {"chosen": chosen, "output_cosine": scores, "scored_in": "simulation"}
    result = _other_methods_if_missed(call, options, statistics, result, scores, selection)
    result.report["method_selection"] = selection
    return result


def _other_methods_if_missed(
    call: _Call,
    options: CompileOptions,
    statistics: dict,
    best: CompileResult,
    scores: dict[str, float],
    selection: dict[str, Any],
) -> CompileResult:
    """When the chosen method's compile kept nodes float and still misses ``--tolerance``, or was
    left no int8 node, tries the other methods and keeps the best by :func:`_after_mixed_precision`.

    The choice above compares all-int8 artifacts, but what the user gets is the artifact after
    mixed precision, and the two can disagree:

    * A clipped tensor next to a node kept float can hold the error above the bound where minmax's
      unclipped ranges let the same float nodes reach it (a small MatMul chain on ``tflite``:
      0.0033 against 6e-5). So the other methods are first measured at the chosen plan, in one
      simulation whose activation parameters are fed (``mixed_precision.errors_by_method``); a
      method closer there is compiled with that plan (its float nodes, no second search).
    * A method can need so many nodes float that their neighbours are stranded (Magika on
      ``tflite``: meanmax met the bound with no int8 node left; minmax meets it with int8 nodes).
      With nothing int8 left to simulate, each other method is compiled with its own search.

    A compile that met the bound keeps its method (in the zoo a second search never beat it: each
    cost a third of a ``tflite`` or ``trt`` compile). Candidates compiled with their own search
    skip the refit until one wins.
    """
    section = best.report.get("mixed_precision")
    if section is None or not section.get("kept_float") or (section["met"] and _int8_nodes(best)):
        return best
    others = sorted((CalibrationMethod(m) for m in scores if m != selection["chosen"]), key=lambda m: -scores[m.value])
    errors = {selection["chosen"]: section["artifact_error"]}
    plan = best.plan if _int8_nodes(best) else None  # the plan the other methods are measured at
    if plan is not None:
        specs = call.model.shared(options).input_specs()
        data = open_calibration(call.calibration, specs, options.max_calibration_samples)
        simulated = errors_by_method(
            best.annotated,
            data.spread(VERIFY_SAMPLES),
            options.tolerance_metric,
            others,
            get_backend(options.target).spec,
        )
        selection["simulated_at_plan"] = simulated
        others = [m for m in others if simulated[m.value] < simulated["planned"]]
    for method in others:
        final = dataclasses.replace(options, method=method)
        if plan is not None:  # the chosen plan, with this method's ranges
            with _selection("method_at_plan"):
                result = _compile_planned(call, final, statistics, False, plan)
        else:  # its own search, without the refit (the slowest pass); the one kept is refit
            with _selection("method_after_mixed_precision"):
                result = _compile(call, dataclasses.replace(final, refit=False), statistics)
        errors[method.value] = result.report["mixed_precision"]["artifact_error"]
        if _after_mixed_precision(result) > _after_mixed_precision(best):
            if not result.report["options"]["refit"] and _refits(final, call.calibration):
                result = _refit_plan(call, final, statistics, result.plan, result.report["timings"]["total"])
            best = result
            selection["chosen"] = method.value
    selection["error_after_mixed_precision"] = errors
    return best


def _after_mixed_precision(result: CompileResult) -> tuple[bool, int, float]:
    """What ranks compiles that chase the same bound: meeting it; among those that meet it, the
    nodes left int8 (speed), then the smaller error; among those that miss it, the smaller error."""
    section = result.report["mixed_precision"]
    return section["met"], _int8_nodes(result) if section["met"] else 0, -section["artifact_error"]


def _int8_nodes(result: CompileResult) -> int:
    """The nodes the artifact runs int8 (absorbed activations included)."""
    totals = result.report["totals"]
    return totals["int8"] + totals["fused"]


def _stage(name: str) -> contextlib.AbstractContextManager[None]:
    """:meth:`CostCounter.stage` of the compile's counter."""
    return (current_cost() or CostCounter()).stage(name)


def _selection(why: str) -> contextlib.AbstractContextManager[None]:
    """:meth:`CostCounter.selection` of the compile's counter: the compiles inside are its candidates."""
    return (current_cost() or CostCounter()).selection(why)


def _distinguishing(options: CompileOptions) -> dict[str, Any]:
    """The options a selection varies between its compiles, as ``report["cost"]["compiles"]`` shows them."""
    return {
        "method": options.method.value if options.method is not None else None,
        "weight_rounding": options.weight_rounding.value,
        "dynamic": options.dynamic,
        "refit": options.refit,
        "tolerance": options.tolerance,
    }


def plan_model(model: object, options: CompileOptions) -> dict[str, Any]:
    """Runs the float rewrites and the plan (no data needed) and returns the report of decisions.

    Raises:
        QccError: the model cannot be loaded.
    """
    from qcc.passes.plan import PlanPass

    backend = get_backend(options.target)
    loaded = frontend.load(model)
    ctx = PassContext(options=options, target=backend.spec)
    run_pipeline(loaded.model, ctx, float_only=True)
    PlanPass(ctx)(loaded.model)
    return build_report(
        loaded.model,
        loaded.proto,
        target=options.target,
        options=options,
        activation_dtype=ctx.activation_dtype,
        verify=None,
        timings={},
        artifact_bytes=None,
    )


def _check_excludes(model: ir.Model, exclude: tuple[str, ...], source: str) -> None:
    """Every ``--exclude`` entry names a node or an op type of the model (loaded from ``source``).

    Raises:
        OptionError: an entry matches nothing; the message lists the nearest names.
    """
    names = {node.name for node in model.graph} | {node.op_type for node in model.graph}
    for entry in exclude:
        if entry in names:
            continue
        near = difflib.get_close_matches(entry, sorted(names), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(map(repr, near))}? " if near else ""
        raise OptionError(
            f"--exclude {entry!r} matches no node name or op type of the model.",
            f"{hint}`{inspect_command(source)}` lists the op types; node names are as in the model (Netron shows "
            "them).",
        )


def _check_takes_own_quantization(spec: TargetSpec, own: OwnQuantization, origin: str) -> None:
    """An ONNX artifact keeps an already-quantized model's Q/DQ nodes, and their scales, as they are
    (the runtime fuses them like qcc's own). A ``.tflite`` cannot: qcc's TFLite writer gives int8
    tensors the parameters qcc calibrated and would run the model's Q/DQ as float arithmetic, a
    float model with extra rounding.

    Raises:
        UnsupportedModelError: the target cannot keep the model's own Q/DQ.
    """
    if spec.artifact_suffix == ".onnx":
        return
    raise UnsupportedModelError(
        f"{origin} is already quantized (QDQ: {len(own.tensors)} tensors behind its own DequantizeLinear); "
        f"qcc's {spec.name} backend takes float models and cannot keep a model's own Q/DQ scales.",
        f"pass the float model it came from (qcc calibrates it for {spec.name}), or compile this one for ort or "
        "trt, which keep its Q/DQ and scales.",
    )
