"""Run ``.tflite`` artifacts in LiteRT and compare them with qcc's ORT QDQ simulation.

Feeds are the ONNX model's (NCHW, float); an int8 interface is fed by quantizing with the input
tensor's parameters and read by dequantizing, and NHWC 4-D inputs/outputs (``--nhwc-io``) are
transposed, so results compare element by element with ONNX Runtime. Delegation is read from
``_get_ops_details()``: XNNPACK partitions appear as ``DELEGATE`` nodes whose outputs are the
tensors they produce.
"""

from __future__ import annotations

import collections
import time
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from tflite.Model import Model

from qcc.backends._tflite_shapes import STATIC_NOTE
from qcc.data import Feed
from qcc.errors import BackendError
from qcc.metrics import OutputFidelity, concat_parts, cosine
from qcc.runtime import current_cost, session

RESOLVERS = {"xnnpack": OpResolverType.AUTO, "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
AGREEMENT = 0.99
# The builtin kernels round twice (a fixed-point multiply, then a rounding shift), which the
# simulation (XNNPACK's arithmetic) does not model; a deep depthwise network turns that into
# many-step differences that are noise. They pass when their outputs are about as close to the
# float model as the simulation's: 1 - cosine at most twice the simulation's, plus this slack.
# A wrong parameter costs far more. XNNPACK must agree within one step.
COSINE_SLACK = 0.002


def interpreter(data: bytes, resolver: str = "xnnpack", threads: int = 1) -> Interpreter:
    """Returns an allocated LiteRT interpreter for the model bytes."""
    interp = Interpreter(model_content=data, experimental_op_resolver_type=RESOLVERS[resolver], num_threads=threads)
    interp.allocate_tensors()
    return interp


def run(interp: Interpreter, feed: Feed, like: list[tuple[int, ...]] | None = None) -> list[np.ndarray]:
    """Runs one feed; returns float outputs in the signature's order (NCHW when ``like`` says so)."""
    for detail in interp.get_input_details():
        array = np.asarray(feed[detail["name"]] if detail["name"] in feed else list(feed.values())[detail["index"]])
        if array.ndim == 4 and tuple(detail["shape"]) != array.shape:
            array = array.transpose(0, 2, 3, 1)
        if detail["dtype"] == np.int8:
            scale, zero_point = detail["quantization"]
            array = np.clip(np.rint(array / scale) + zero_point, -128, 127)
        interp.set_tensor(detail["index"], array.astype(detail["dtype"]))
    interp.invoke()
    cost = current_cost()
    if cost is not None:
        cost.count_run("litert_runs")
    outputs = []
    for i, detail in enumerate(interp.get_output_details()):
        array = interp.get_tensor(detail["index"])
        if detail["dtype"] == np.int8:
            scale, zero_point = detail["quantization"]
            array = (array.astype(np.float32) - zero_point) * scale
        if like is not None and array.ndim == 4 and array.shape != like[i]:
            array = array.transpose(0, 3, 1, 2)
        outputs.append(array.astype(np.float32))
    return outputs


def delegated_ops(interp: Interpreter) -> dict[str, Any]:
    """Which ops the delegate took (walking back from each partition's outputs to its inputs)."""
    details = interp._get_ops_details()  # noqa: SLF001 - the only delegation introspection LiteRT offers
    producer = {int(t): op for op in details if op["op_name"] != "DELEGATE" for t in op["outputs"]}
    covered: set[int] = set()
    partitions = [op for op in details if op["op_name"] == "DELEGATE"]
    for partition in partitions:
        boundary = {int(t) for t in partition["inputs"]}
        pending = [int(t) for t in partition["outputs"]]
        while pending:
            tensor = pending.pop()
            op = producer.get(tensor)
            if tensor in boundary or op is None or op["index"] in covered:
                continue
            covered.add(op["index"])
            pending.extend(int(t) for t in op["inputs"])
    taken, left = collections.Counter(), collections.Counter()
    for op in details:
        if op["op_name"] != "DELEGATE":
            (taken if op["index"] in covered else left)[op["op_name"]] += 1
    return {"partitions": len(partitions), "delegated": dict(taken), "builtin": dict(left)}


def output_steps(simulation: onnx.ModelProto) -> list[float | None]:
    """The quantization step of each simulation output (None for float outputs)."""
    inits = {t.name: t for t in simulation.graph.initializer}
    producers = {o: n for n in simulation.graph.node for o in n.output}
    steps = []
    for out in simulation.graph.output:
        node = producers.get(out.name)
        if node is not None and node.op_type == "DequantizeLinear" and node.input[1] in inits:
            steps.append(float(onnx.numpy_helper.to_array(inits[node.input[1]]).max()))
        else:
            steps.append(None)
    return steps


def compare_with_simulation(
    data: bytes, simulation: onnx.ModelProto, reference: ir.Model | onnx.ModelProto, samples: list[Feed]
) -> dict[str, Any]:
    """Runs the artifact under both resolvers and compares with the simulation and the float model.

    Every sample the artifact accepts runs: samples are grouped by shape, and the interpreter's
    inputs are resized to each group's (``resize_tensor_input`` + ``allocate_tensors``). A static
    artifact accepts only its own shapes; the others are counted in ``samples_skipped``, and
    ``shapes`` says whether the artifact is dynamic (and if static, why).

    Returns:
        A JSON-serializable dict; ``ok`` is True when both resolvers ran, every output is finite,
        XNNPACK agrees with the simulation within one step on at least 99% of the output elements
        (or, with float islands, is about as close to the float model: ``COSINE_SLACK``), and the
        builtin kernels do too or are about as close to the float model.
    """
    details = _input_details(data)
    accepted = [s for s in samples if _artifact_shapes(details, s) is not None]
    skipped = len(samples) - len(accepted)
    samples = accepted
    sim = session(simulation, level="disable", what="the QDQ simulation")
    ref = session(reference, what="the float model")
    steps = output_steps(simulation)
    expected = [sim.run(None, feed) for feed in samples]
    floats = [ref.run(None, feed) for feed in samples]
    simulation_cosine = _min_cosine(expected, floats)
    result: dict[str, Any] = {
        "runtime": "LiteRT (ai-edge-litert)",
        "samples": len(samples),
        "samples_skipped": skipped,
        "shapes": shape_summary(data, details),
        "simulation_cosine_vs_float_min": None if simulation_cosine is None else round(simulation_cosine, 6),
        "float_ops": float_ops(data),
        "resolvers": {},
    }
    if not samples:
        result.update(ok=False, error="no verify sample has the artifact's input shapes (--input-shape?)")
        result["fidelity"] = _fidelity([], [], [o.name for o in ref.get_outputs()], reference)
        return result
    ok = True
    for name in RESOLVERS:
        try:
            interp = interpreter(data, name)
            got = run_all(interp, samples, [[tuple(np.shape(o)) for o in e] for e in expected])
        except (RuntimeError, ValueError) as exc:
            result["resolvers"][name] = {"ok": False, "error": str(exc).strip().splitlines()[0]}
            ok = False
            continue
        # Float islands round differently in LiteRT's float kernels (summation order, FMA): a value
        # that lands elsewhere at the next quantizer moves every int8 op after it, so with islands
        # XNNPACK, too, is held to the float-closeness criterion.
        closeness = name == "builtin" or bool(result["float_ops"])
        entry = _agreement(got, expected, floats, steps, simulation_cosine if closeness else None)
        if name == "xnnpack":
            entry["delegation"] = delegated_ops(interp)
            result["fidelity"] = _fidelity(got, floats, [o.name for o in ref.get_outputs()], reference)
        result["resolvers"][name] = entry
        ok &= entry["ok"]
    result["ok"] = ok
    if "fidelity" not in result:
        error = result["resolvers"].get("xnnpack", {}).get("error", "unknown error")
        raise BackendError(
            f"LiteRT cannot run the .tflite qcc wrote under its default (XNNPACK) resolver: {error}.",
            "calibrate with samples of the input shape you deploy, or --exclude the op the error names; "
            "please report it with the model.",
        )
    return result


def run_all(interp: Interpreter, samples: list[Feed], like: list[list[tuple[int, ...]]]) -> list[list[np.ndarray]]:
    """Runs every sample, resizing the inputs (and reallocating) whenever the sample's shapes change.

    ``like`` holds each sample's ONNX output shapes (NCHW outputs are transposed back to them).

    Raises:
        ValueError: a sample's shapes do not fit the artifact's signature.
    """
    details = interp.get_input_details()
    current = None
    outputs = []
    for feed, shapes in zip(samples, like, strict=True):
        wanted = _artifact_shapes(details, feed)
        if wanted is None:
            raise ValueError(f"a sample of shapes {_feed_shapes(feed)} does not fit the artifact's inputs")
        if wanted != current:
            for detail, shape in zip(details, wanted, strict=True):
                interp.resize_tensor_input(detail["index"], list(shape), strict=False)
            interp.allocate_tensors()
            current = wanted
        outputs.append(run(interp, feed, shapes))
    return outputs


def shape_summary(data: bytes, details: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether the artifact's inputs (``details``: its input details) are dynamic (their ``-1`` dims), or why static."""
    dynamic = {d["name"]: [int(v) for v in d["shape_signature"]] for d in details if -1 in d["shape_signature"]}
    if dynamic:
        return {"dynamic": True, "inputs": dynamic}
    description = (Model.GetRootAs(data, 0).Description() or b"").decode()
    _, _, reason = description.partition(STATIC_NOTE)
    return {"dynamic": False, "reason": reason or "the model's input shapes are static (or pinned)"}


def _fits(signature: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    return len(signature) == len(shape) and all(s in (-1, d) for s, d in zip(signature, shape, strict=True))


def _input_details(data: bytes) -> list[dict[str, Any]]:
    return Interpreter(model_content=data, experimental_op_resolver_type=RESOLVERS["builtin"]).get_input_details()


def _feed_shapes(feed: Feed) -> dict[str, tuple[int, ...]]:
    return {k: tuple(np.shape(v)) for k, v in feed.items()}


def _artifact_shapes(details: list[dict[str, Any]], feed: Feed) -> tuple[tuple[int, ...], ...] | None:
    """Each input's shape in the artifact's layout for this feed, or None when one does not fit.

    A 4-D input is NHWC in the artifact (``--nhwc-io``) when the NCHW feed fits its signature only
    transposed, or, when both fit, when its static shape is the transposed one.
    """
    shapes = []
    for i, detail in enumerate(details):
        array = feed[detail["name"]] if detail["name"] in feed else list(feed.values())[i]
        shape = tuple(int(d) for d in np.shape(array))
        signature = tuple(int(d) for d in detail.get("shape_signature", detail["shape"]))
        candidates = [shape]
        if len(shape) == 4:
            nhwc = (shape[0], shape[2], shape[3], shape[1])
            static = tuple(int(d) for d in detail["shape"])
            candidates = [nhwc, shape] if static == nhwc and static != shape else [shape, nhwc]
        fits = [c for c in candidates if _fits(signature, c)]
        if not fits:
            return None
        shapes.append(fits[0])
    return tuple(shapes)


def float_ops(data: bytes) -> list[str]:
    """The float islands: ops computing on float32 data (not the QUANTIZE/DEQUANTIZE at their edges)."""
    interp = Interpreter(model_content=data, experimental_op_resolver_type=RESOLVERS["builtin"])
    tensors = interp.get_tensor_details()
    found = []
    for op in interp._get_ops_details():  # noqa: SLF001 - see delegated_ops
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE", "DELEGATE") or not len(op["inputs"]):
            continue
        if tensors[int(op["inputs"][0])]["dtype"] == np.float32:
            found.append(f"{op['op_name']} -> {tensors[int(op['outputs'][0])]['name']}")
    return found


def _fidelity(got, floats, names: list[str], reference: ir.Model | onnx.ModelProto) -> dict[str, Any]:
    """Cosine and error of every output vs the float model (the shape every verify reports)."""
    fidelity = OutputFidelity(concat_parts(reference))
    for g_outs, f_outs in zip(got, floats, strict=True):
        for name, g, f in zip(names, g_outs, f_outs, strict=True):
            fidelity.add(name, f, g)
        fidelity.samples += 1
    return fidelity.result()


def _min_cosine(outputs, floats) -> float | None:
    """The lowest cosine of any output of any sample against the float model's."""
    cosines = [
        cosine(np.asarray(o, np.float64).ravel(), np.asarray(f, np.float64).ravel())
        for o_outs, f_outs in zip(outputs, floats, strict=True)
        for o, f in zip(o_outs, f_outs, strict=True)
    ]
    return min(cosines) if cosines else None


def _agreement(got, expected, floats, steps, simulation_cosine: float | None) -> dict[str, Any]:
    """Agreement with the simulation; with ``simulation_cosine``, the float-closeness criterion too."""
    within, total, worst_steps, finite = 0, 0, 0.0, True
    for g_outs, e_outs, f_outs in zip(got, expected, floats, strict=True):
        for g, e, f, step in zip(g_outs, e_outs, f_outs, steps, strict=True):
            g, e, f = (np.asarray(a, np.float64).ravel() for a in (g, e, f))
            if not e.size:  # a zero-size output (a Slice to [0, 3]) agrees trivially
                continue
            finite &= bool(np.all(np.isfinite(g)))
            # A float output (after a float island) has no step of its own: use the step it would
            # have as a symmetric int8 tensor over its range.
            tolerance = step if step is not None else max(float(np.max(np.abs(e))), 1e-6) / 127
            diff = np.abs(g - e)
            within += int(np.sum(diff <= tolerance * 1.001 + 1e-7))
            total += diff.size
            worst_steps = max(worst_steps, float(diff.max() / tolerance) if diff.size else 0.0)
    fraction = within / max(total, 1)
    cosine_min = _min_cosine(got, floats)
    if fraction >= AGREEMENT:
        criterion = "within one step of the simulation"
    elif (
        cosine_min is not None
        and simulation_cosine is not None
        and 1.0 - cosine_min <= 2.0 * (1.0 - simulation_cosine) + COSINE_SLACK
    ):
        criterion = "as close to the float model as the simulation"
    else:
        criterion = None
    return {
        "ok": finite and criterion is not None,
        "criterion": criterion,
        "within_one_step": round(fraction, 6),
        "max_error_steps": round(worst_steps, 3),
        "cosine_vs_float_min": round(cosine_min, 6) if cosine_min is not None else None,
    }


def latency_ms(data: bytes, feed: Feed, resolver: str = "xnnpack", runs: int = 30, threads: int = 1) -> float:
    """Minimum invoke time in milliseconds over ``runs`` runs (after one warm-up)."""
    interp = interpreter(data, resolver, threads)
    run(interp, feed)
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        interp.invoke()
        best = min(best, time.perf_counter() - start)
    return best * 1e3
