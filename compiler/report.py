"""The compile report: what was quantized, what stayed float and why, and what the runtime did.

The report is plain JSON-serializable data, the same from the API, the CLI (``--report``) and the
zoo. Sections: ``schema_version``, ``model`` (inputs, outputs, opset, op histogram before and after
the float rewrites), ``options``, ``nodes`` (per node: op, decision, reason), ``tensors`` (per
quantized tensor: role, dtype, axis, scale, zero point), ``totals``, ``verify`` (the backend's run
of the artifact), ``already_quantized`` (the model's own Q/DQ, for a QDQ input), ``warnings``,
``timings`` (seconds of the compile kept, by stage; ``selection``: the compiles it was chosen from)
and ``cost``.

``schema_version`` (an integer, now ``SCHEMA_VERSION``) versions the layout of this dict: the
names, types and meaning of the top-level keys and of the fields inside ``model``, ``totals``,
``nodes``, ``tensors``, ``mixed_precision`` and ``warnings``. It goes up when a key a script may
read is renamed, removed or changes meaning; new keys may appear without a change. It does not
version ``options`` (the compile options, as the installed qcc names them), ``verify`` (each
backend's own findings), the selection sections or ``cost``'s fields, nor qcc's numbers: ``qcc_version`` says which
qcc made the report.

``cost`` says what the whole ``compile_model`` call cost, every compile it made included (the
driver counts it with ``qcc.runtime.CostCounter``; a compile's selections make several):

* ``pipeline_runs``: how many times the whole pass pipeline ran, over every compile (the float
  rewrites run once for the compiles whose options they read alike: once for a default compile,
  twice when a model without convolutions is also compiled ``--dynamic``);
* ``replans``: how many times the annotation passes ran alone, on a model the rewrites had already
  run on: the plan a pass asked for (``annotations.Replan``: the float search's nodes, or the nodes
  around a non-finite activation), or another compile of the call that rewrites alike (another
  method, the chosen method with its search, the refit);
* ``compiles``: each compile in the order made, as ``{"why", "method", "weight_rounding", "dynamic",
  "refit", "tolerance", "pipeline_runs", "replans", "seconds"}``. ``why`` names the selections that made it,
  outermost first, joined by ``/``: ``requested`` (the options as given), ``method`` (one plan per
  calibration method compared, ``trt``/``tflite``: planned and scored in the simulation, neither
  emitted nor verified), ``chosen_method`` (the chosen method compiled
  again with the tolerance), ``method_at_plan`` (another method compiled at the chosen one's float
  nodes, when it missed the tolerance and simulated closer there), ``method_after_mixed_precision``
  (another method tried when mixed precision left the chosen one no int8 node), ``mode``
  (``--dynamic`` against static, for models without convolutions), ``without_refit`` (the compile
  that settles the plan before that comparison) and ``refit`` (a settled plan compiled again with
  the refit). ``seconds`` runs from loading the model to its report, without the compiles it was
  then compared with. The model is loaded once per call; each compile works on its own copy;
* ``sessions``: ONNX Runtime sessions created (a load check of each compile's model, calibration,
  simulations, references, artifacts); ``float_model_runs`` and ``quantized_model_runs``: ONNX
  Runtime ``run`` calls (one per sample fed) on graphs without and with quantize/dequantize
  nodes (the float model and its helpers; simulations and ONNX artifacts); ``litert_runs``: LiteRT
  ``invoke`` calls on a ``.tflite`` artifact (verify, under each resolver);
* ``simulation_runs``: evaluations of the switchable fake-quantized simulation
  (``passes/_simulation.py``; each scores one candidate on its samples, one ONNX Runtime run per
  sample, counted in ``quantized_model_runs`` too);
* ``seconds``: seconds by stage (``load``, each pass by name, ``score``: the method candidates'
  simulation, ``emit``, ``verify``) summed over every compile, and ``total``: the whole call;
* ``stages``: the five counts above by stage, for the stages that made a session or a run
  (``other``: outside any stage).

The ``cost`` key came without a change of ``schema_version`` (a new key). Its fields are
measurements of how qcc compiles, like ``timings``, and not versioned: they change as the driver
does (``compiles`` and its ``why`` names will, when selections search plans in one simulation).

``warnings`` lists what a user must not miss though the compile succeeded, each as ``{"code":
str, "message": str}`` (:func:`compile_warnings`; the codes are ``WARNING_CODES``). They are also
logged on the ``qcc`` logger, and ``strict`` (``--strict``) turns those in ``STRICT_WARNINGS``
into an error.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import shlex
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

import qcc
from qcc.annotations import (
    MIXED_REASON,
    Decision,
    get_decision,
    get_mixed_precision,
    get_quant,
    get_refit,
    get_rounding,
    get_smoothing,
    quantized_values,
)
from qcc.irutils import default_opset

# The version of this report's layout (see the module docstring).
SCHEMA_VERSION = 1
WARNING_CODES = (
    "tolerance_missed",  # the artifact misses --tolerance on the calibration samples
    "nothing_quantized",  # no node runs int8 (or int4): the artifact is the float model
    "kept_float",  # nodes qcc could quantize stay float (mixed precision, calibration rules, runtime fallbacks)
    "verify_failed",  # the artifact ran in its runtime and did not pass the backend's checks
    "already_quantized",  # a QDQ model: its own Q/DQ and scales are kept
)
# The warnings ``strict=True`` (``--strict``) turns into a StrictError: the artifact is not what was asked.
STRICT_WARNINGS = frozenset({"tolerance_missed", "nothing_quantized", "kept_float", "verify_failed"})


def build_report(
    model: ir.Model,
    original: onnx.ModelProto,
    *,
    target: str,
    options: Any,
    activation_dtype: ir.DataType | None,
    verify: dict[str, Any] | None,
    timings: dict[str, float],
    artifact_bytes: int | None,
    already_quantized: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Builds the report of one compile (see module docstring); ``warnings`` is left empty (the driver
    fills it once the compile is chosen: :func:`compile_warnings`)."""
    nodes = []
    by_op: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    reasons: collections.Counter = collections.Counter()
    for node in model.graph:
        decision = get_decision(node)
        kind = decision.decision.value if decision else Decision.FLOAT.value
        reason = decision.reason if decision else "not planned"
        nodes.append({"name": node.name, "op_type": node.op_type, "decision": kind, "reason": reason})
        by_op[node.op_type][kind] += 1
        if kind == Decision.FLOAT.value:
            reasons[MIXED_REASON if reason.startswith(MIXED_REASON) else reason] += 1
    tensors = {}
    for value in sorted(quantized_values(model.graph), key=lambda v: v.name or ""):
        quant = get_quant(value)
        tensors[value.name] = {
            "role": quant.role.value,
            "dtype": quant.dtype.name.lower(),
            "axis": quant.axis,
            "block_size": quant.block_size,
            "scale": _plain(quant.scale),
            "zero_point": _plain(quant.zero_point),
        }
    counts = collections.Counter(n["decision"] for n in nodes)
    initializers = {i.name for i in original.graph.initializer}
    return {
        "schema_version": SCHEMA_VERSION,
        "qcc_version": qcc.__version__,
        "target": target,
        "activation_dtype": activation_dtype.name.lower() if activation_dtype is not None else None,
        "model": {
            "inputs": [_io(v) for v in original.graph.input if v.name not in initializers],
            "outputs": [_io(v) for v in original.graph.output],
            "opset": default_opset(model),
            "nodes_before": len(original.graph.node),
            "nodes_after_rewrites": len(nodes),
            "ops_before": dict(collections.Counter(n.op_type for n in original.graph.node).most_common()),
        },
        "options": _plain(dataclasses.asdict(options)) if dataclasses.is_dataclass(options) else options,
        "totals": {
            "nodes": len(nodes),
            "int8": counts[Decision.INT8.value],
            "fused": counts[Decision.FUSED.value],
            "float": counts[Decision.FLOAT.value],
            "float_reasons": dict(reasons.most_common()),
            "by_op": {op: dict(c) for op, c in sorted(by_op.items())},
            "quantized_tensors": len(tensors),
            "artifact_bytes": artifact_bytes,
        },
        "nodes": nodes,
        "tensors": tensors,
        "verify": verify,
        "mixed_precision": mixed_precision_section(model, verify, options) if hasattr(options, "tolerance") else None,
        "weight_rounding": weight_rounding_section(model),
        "smoothing": smoothing_section(model),
        "refit": refit_section(model),
        "already_quantized": already_quantized,
        "warnings": [],
        "timings": {k: round(v, 4) for k, v in timings.items()},
    }


def weight_rounding_section(model: ir.Model) -> dict[str, Any] | None:
    """The report's ``weight_rounding`` section: how many int8 layers GPTQ rounded, the output
    error of all of them on the calibration inputs against nearest rounding, and why the others
    were rounded to nearest. None when the pass measured nothing (``weight_rounding="nearest"``)."""
    rounded = [(n.name, r) for n in model.graph if (r := get_rounding(n)) is not None]
    if not rounded:
        return None
    gptq = [r for _, r in rounded if r.method == "gptq"]
    return {
        "gptq_layers": len(gptq),
        "nearest_layers": len(rounded) - len(gptq),
        # Geometric mean over the GPTQ layers of output error / nearest rounding's (< 1: closer).
        "output_error_vs_nearest": float(np.exp(np.mean([np.log(r.error / r.nearest) for r in gptq if r.nearest > 0])))
        if any(r.nearest > 0 for r in gptq)
        else None,
        "nearest_reasons": dict(collections.Counter(r.reason for _, r in rounded if r.method != "gptq").most_common()),
        "layers": {
            name: {"method": r.method, "error_vs_nearest": r.error / r.nearest if r.nearest else 1.0}
            for name, r in rounded
        },
    }


def refit_section(model: ir.Model) -> dict[str, Any] | None:
    """The report's ``refit`` section: how many int8 layers were refit to the quantized model's
    inputs, their held-out output error against their previous levels (geometric mean; < 1:
    closer), and why the others kept their levels. None when the pass did not run."""
    refits = [(n.name, r) for n in model.graph if (r := get_refit(n)) is not None]
    if not refits:
        return None
    fitted = [r for _, r in refits if r.choice != "kept" and r.kept_error > 0 and r.error > 0]
    return {
        "refit_layers": sum(1 for _, r in refits if r.choice != "kept"),
        "kept_layers": sum(1 for _, r in refits if r.choice == "kept"),
        "error_vs_kept": float(np.exp(np.mean([np.log(r.error / r.kept_error) for r in fitted]))) if fitted else None,
        "kept_reasons": dict(collections.Counter(r.reason for _, r in refits if r.choice == "kept").most_common()),
        "layers": {
            name: {"choice": r.choice, "error_vs_kept": r.error / r.kept_error if r.kept_error else 1.0}
            for name, r in refits
        },
    }


def smoothing_section(model: ir.Model) -> dict[str, Any] | None:
    """The report's ``smoothing`` section: each MatMul/Gemm input the smoothing pass considered, with
    its migration strength, the layers' output error against unsmoothed, where ``1/s`` went, or
    why it was left alone. None when the pass did not run (no MatMul/Gemm, ``smoothquant=False``)."""
    tensors: dict[str, dict[str, Any]] = {}
    for node in model.graph:
        smoothing = get_smoothing(node)
        if smoothing is None:
            continue
        entry = tensors.setdefault(smoothing.tensor, {"alpha": smoothing.alpha, "layers": []})
        entry["layers"].append(node.name)
        if smoothing.alpha:
            entry["error_vs_unsmoothed"] = smoothing.error / smoothing.unsmoothed if smoothing.unsmoothed else 1.0
            entry["folded_into"] = smoothing.folded_into
        else:
            entry["reason"] = smoothing.reason
    if not tensors:
        return None
    return {"smoothed": sum(1 for t in tensors.values() if t["alpha"]), "considered": len(tensors), "tensors": tensors}


def mixed_precision_section(
    model: ir.Model | None, verify: dict[str, Any] | None, options: Any
) -> dict[str, Any] | None:
    """The report's ``mixed_precision`` section: the bound, the error measured on the simulated
    model and on the artifact (the one that decides ``met``), and the nodes kept float for it.

    None when no tolerance was asked for; ``met`` is None when the artifact did not run.
    ``artifact_samples`` says how many samples ``met`` rests on: a TFLite artifact has static
    shapes and runs only the samples shaped like the first.
    """
    if options.tolerance is None:
        return None
    metric = options.tolerance_metric.value
    key = "relative_error_mean" if metric == "relative" else "cosine_mean"
    fidelity = (verify or {}).get("fidelity", {})
    outputs = fidelity.get("outputs", {})
    artifact = {name: (o[key] if metric == "relative" else 1.0 - o[key]) for name, o in outputs.items()}
    worst = max(artifact.values()) if artifact else None
    measured = get_mixed_precision(model.graph) if model is not None else None
    kept = [
        {"node": n.name, "op_type": n.op_type, "reason": d.reason}
        for n in (model.graph if model is not None else [])
        if (d := get_decision(n)) is not None and d.reason.startswith(MIXED_REASON)
    ]
    return {
        "metric": metric,
        "bound": options.tolerance,
        "artifact_error": worst,
        "artifact_outputs": artifact,
        "artifact_samples": fidelity.get("samples") if artifact else None,
        "met": None if worst is None else worst <= options.tolerance,
        "simulated_error": measured.error if measured else None,
        "simulated_runs": measured.evaluations if measured else 0,
        "samples": measured.samples if measured else None,
        "kept_float": kept,
        "search": measured.search if measured else None,
    }


_SEARCH_ENDINGS = {
    "no_gain": "no unit left int8 closes enough of the gap to the bound to be worth its speed",
    "budget": "floating more would pass the share of quantized nodes it may keep float",
    "latency": "floating more would pass --latency-budget, as priced for ONNX Runtime",
    "exhausted": "every quantized node is float already",
    "bound": "its simulation reached the bound, the artifact did not",
}


def _search_ending(search: Mapping[str, Any] | None) -> str:
    """One sentence on why mixed precision's search stopped, naming the best units it left int8."""
    if not search:
        return ""
    text = f" The float search stopped: {_SEARCH_ENDINGS.get(search['stopped'], search['stopped'])}"
    latency = search.get("latency") or {}
    over = latency.get("int8_ms", 0) > latency.get("budget", 1) * latency.get("fp32_ms", 0)
    if search["stopped"] == "latency" and over:
        text += (
            f" (the all-int8 plan alone is predicted at {latency['int8_ms'] / latency['fp32_ms']:.2f} of fp32's time, "
            "over the budget: no node can be kept float)"
        )
    left = search.get("left") or []
    if left:
        named = ", ".join(
            f"{u['tensor']!r} ({u['effect']:.2g}" + (f", {u['cost_ms']:.2g} ms" if "cost_ms" in u else "") + ")"
            for u in left
        )
        costs = " and what floating it would cost" if any("cost_ms" in u for u in left) else ""
        text += f"; the most helpful units left int8, with how much each lowered the error{costs}: {named}"
    elif search["stopped"] == "no_gain":
        text += "; floating any unit it measured last did not lower the error"
    return text + "."


def _trade_off(search: Mapping[str, Any] | None) -> str:
    """One sentence on what mixed precision's float nodes cost in speed, when it priced them."""
    latency = (search or {}).get("latency")
    if not latency or latency["predicted_ms"] <= 0 or latency["int8_ms"] <= 0:
        return ""
    fp32, spent = latency["fp32_ms"], latency["float_cost_ms"]
    saving = fp32 - latency["int8_ms"]
    share = f"{spent / saving:.0%} of the {saving:.3g} ms" if saving > 0 else f"{spent:.3g} ms, and"
    return (
        f" Mixed precision's float nodes spend {share} int8 saves over fp32: predicted "
        f"{fp32 / latency['predicted_ms']:.2f}x fp32 against {fp32 / latency['int8_ms']:.2f}x all-int8, "
        "as priced for ONNX Runtime at one thread."
    )


def compile_warnings(report: dict[str, Any], kept_float: Mapping[str, str]) -> list[dict[str, str]]:
    """The report's ``warnings``: what the user must not miss though the compile succeeded.

    Args:
        report: the finished report of the compile that was kept.
        kept_float: node name -> reason, for the nodes the plan would quantize that a later stage
            kept float (mixed precision, a target rule that needed calibration data, non-finite
            tensors): the compile's plan, ``CompileResult.plan``.

    Returns:
        ``[{"code": ..., "message": ...}]`` in the order of ``WARNING_CODES``; each message says
        what was measured and what to try.
    """
    found: list[dict[str, str]] = []

    def warn(code: str, message: str) -> None:
        found.append({"code": code, "message": message})

    target = report["target"]
    nodes = report["nodes"]
    mixed = report.get("mixed_precision") or {}
    if mixed.get("met") is False:
        what = "1 - cosine" if mixed["metric"] == "cosine" else "relative error"
        warn(
            "tolerance_missed",
            f"the artifact misses --tolerance: output {what} {mixed['artifact_error']:.4g} > bound {mixed['bound']:g} "
            f"on {mixed.get('artifact_samples')} calibration samples, with {len(mixed['kept_float'])} nodes kept "
            f"float.{_search_ending(mixed.get('search'))} "
            "Try --method mse or entropy, more representative calibration data, --exclude the layers `qcc analyze` "
            "ranks worst, or a looser --tolerance.",
        )
    own = report.get("already_quantized")
    quantized = [n for n in nodes if n["decision"] != Decision.FLOAT.value]
    if not quantized and own is None:
        source = report["model"].get("source")
        warn("nothing_quantized", f"nothing runs int8 on {target}: {_why_all_float(nodes, target, source)}.")
    kept = collections.Counter(
        _short_reason(n["reason"]) for n in nodes if n["decision"] == Decision.FLOAT.value and n["name"] in kept_float
    )
    unfused = list((report.get("verify") or {}).get("quantized_but_float") or [])
    if kept or unfused:
        parts = [f"x{count} {reason}" for reason, count in kept.most_common(3)]
        if unfused:
            parts.append(f"x{len(unfused)} planned int8 but run float in the runtime ({', '.join(unfused[:3])})")
        advice = " A looser --tolerance keeps fewer float." if any(r.startswith(MIXED_REASON) for r in kept) else ""
        warn(
            "kept_float",
            f"{sum(kept.values()) + len(unfused)} node(s) qcc could quantize stay float: {'; '.join(parts)}. "
            f"report['nodes'] gives each one's reason.{_trade_off(mixed.get('search'))}{advice}",
        )
    verify = report.get("verify")
    if verify is not None and verify.get("ok") is False and not unfused:
        detail = verify.get("error") or "report['verify'] gives each check"
        warn("verify_failed", f"the artifact did not pass verification in {verify.get('runtime')}: {detail}.")
    if own is not None:
        others = len(quantized)
        warn(
            "already_quantized",
            f"already quantized: {own['tensors']} tensors keep the model's own scales (its QuantizeLinear/"
            f"DequantizeLinear stay as they are); qcc quantized {others} other node(s). To let qcc choose every "
            f"scale for {target}, pass the float model it came from.",
        )
    return found


def inspect_command(source: str | None) -> str:
    """The ``qcc inspect`` command line for a model: its path (shell-quoted) when it was loaded from
    a file, else a placeholder (``source`` is ``<bytes>``, ``<onnx.ModelProto>``, ... or None)."""
    if not source or source.startswith("<"):
        return "qcc inspect <model>"
    return f"qcc inspect {shlex.quote(source)}"


def _why_all_float(nodes: list[dict[str, Any]], target: str, source: str | None) -> str:
    """Why no node was quantized, from the float reasons: the operators without an int8 kernel when
    that is all, else the commonest reasons. ``source`` is the model's path, for the command to run."""
    no_kernel = f"has no int8 kernel on {target}"
    without = sorted({n["op_type"] for n in nodes if n["reason"].endswith(no_kernel)})
    reasons = collections.Counter(_short_reason(n["reason"]) for n in nodes if not n["reason"].endswith(no_kernel))
    if without and not reasons:
        return (
            f"none of the model's operators ({', '.join(without)}) has an int8 kernel on {target}; the artifact is "
            f"the float model. `{inspect_command(source)}` shows what each target would quantize"
        )
    parts = [f"float x{count}: {reason}" for reason, count in reasons.most_common(3)]
    if without:
        parts.append(f"no int8 kernel for {', '.join(without)}")
    return "; ".join(parts) + "; the artifact is the float model"


def _short_reason(reason: str) -> str:
    """A float reason without the per-node detail after its first colon (mixed precision's measurement)."""
    return MIXED_REASON if reason.startswith(MIXED_REASON) else reason


def _io(value: onnx.ValueInfoProto) -> dict[str, Any]:
    if not value.type.HasField("tensor_type"):  # an optional or sequence output
        return {"name": value.name, "dtype": onnx.helper.printable_type(value.type), "shape": None}
    tensor = value.type.tensor_type
    dims = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in tensor.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "unknown"
    return {"name": value.name, "dtype": dtype, "shape": dims}


def _plain(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
