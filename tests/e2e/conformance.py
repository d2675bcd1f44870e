"""ONNX's node conformance cases as a test corpus for every target.

``onnx.backend.test.case.node`` ships, per operator, small single-node models with inputs and
expected outputs. Each case with tensor inputs and at least one float tensor is compiled by
``qcc.compile(model, target=T, calibration=[inputs])`` in two variants:

* ``inputs``: the model as ONNX wrote it, every input a graph input (activations only);
* ``weights``: inputs beyond the first turned into initializers, so weights get quantized.

The artifact then runs in its own runtime (ONNX Runtime for ``ort``/``trt``; LiteRT under the
default XNNPACK resolver *and* the builtin kernels for ``tflite``) and is compared with ONNX's
expected outputs. A case ends one of these ways:

``matched``   every output within int8 error of the expected one (float outputs: cosine >= 0.99 or
              max error <= 1% of the expected range, non-finite values in the same places;
              integer/bool outputs: equal);
``refused``   a ``QccError`` naming the problem;
``mismatch``  the artifact ran and an output is off;
``failed``    the artifact does not load or run in its runtime;
``crash``     any other exception: a qcc bug.

``python -m tests.e2e.conformance`` runs every case and writes ``docs/operators.md`` (per operator
and target: lowered int8, float, decomposed into which builtins, or refused and why); the test
module ``test_conformance.py`` runs a bounded sample in ``make test``.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import json
import multiprocessing
import sys
import time
import traceback
import warnings
from collections.abc import Iterator

import numpy as np
import onnx
from onnx import numpy_helper

TARGETS = ("ort", "trt", "tflite")
VARIANTS = ("inputs", "weights")
CASES_PER_OP = 3
COSINE_FLOOR = 0.99
RANGE_SHARE = 0.01
# Non-float ops the corpus keeps out: random ops have no expected output to match.
_RANDOM = frozenset(
    {"Bernoulli", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial"}
)
_FLOATS = (np.float16, np.float32, np.float64)


@dataclasses.dataclass(frozen=True)
class Case:
    """One conformance case: a single-node model, its inputs and ONNX's expected outputs."""

    name: str
    op_type: str
    model: onnx.ModelProto
    inputs: tuple[np.ndarray, ...]
    outputs: tuple[np.ndarray, ...]


@dataclasses.dataclass
class Outcome:
    """How one (case, variant, target) ended; ``lowered`` says what the target made of the op."""

    case: str
    op_type: str
    variant: str
    target: str
    status: str
    detail: str = ""
    lowered: str = ""
    seconds: float = 0.0


def _is_float(array: np.ndarray) -> bool:
    return array.dtype in _FLOATS or array.dtype.name == "bfloat16"


@functools.lru_cache(maxsize=1)
def collect(per_op: int = CASES_PER_OP) -> list[Case]:
    """The first ``per_op`` cases of each operator with tensor inputs and a float tensor."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        testcases = collect_testcases()
    taken: dict[str, int] = collections.Counter()
    cases = []
    for tc in testcases:
        graph = tc.model.graph
        if len(graph.node) != 1 or graph.node[0].domain not in ("", "ai.onnx") or not tc.data_sets:
            continue
        op_type = graph.node[0].op_type
        inputs, outputs = tc.data_sets[0]
        # A numpy scalar is a 0-d tensor (CumSum's axis, Det's 2-D case); lists are sequences.
        inputs = [np.asarray(a) if isinstance(a, np.generic) else a for a in inputs]
        outputs = [np.asarray(a) if isinstance(a, np.generic) else a for a in outputs]
        arrays = list(inputs) + list(outputs)
        if op_type in _RANDOM or not all(isinstance(a, np.ndarray) for a in arrays):
            continue
        if not any(_is_float(a) for a in arrays) or taken[op_type] >= per_op:
            continue
        taken[op_type] += 1
        cases.append(Case(tc.name, op_type, tc.model, tuple(inputs), tuple(outputs)))
    return cases


def variant_model(case: Case, variant: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The case's model and calibration feed in one variant (see module docstring)."""
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    graph = model.graph
    feed = {value.name: array for value, array in zip(graph.input, case.inputs, strict=False)}
    if variant == "weights":
        keep = list(graph.input)[:1]
        for value in list(graph.input)[1:]:
            graph.initializer.append(numpy_helper.from_array(feed.pop(value.name), value.name))
        del graph.input[:]
        graph.input.extend(keep)
    return model, feed


def compare(got: np.ndarray, expected: np.ndarray) -> str | None:
    """None when ``got`` matches ``expected`` within int8 error, else what differs."""
    got = np.asarray(got)
    if got.shape != expected.shape:
        if got.size == expected.size and got.size <= 1:
            got = got.reshape(expected.shape)
        else:
            return f"shape {got.shape}, expected {expected.shape}"
    if not _is_float(expected):
        if expected.dtype == bool or np.issubdtype(expected.dtype, np.integer):
            equal = np.array_equal(got.astype(expected.dtype), expected)
            return None if equal else f"{int((got.astype(expected.dtype) != expected).sum())} of {got.size} differ"
        return None if np.array_equal(got, expected) else "values differ"
    got = got.astype(np.float64)
    want = expected.astype(np.float64)
    finite = np.isfinite(want)
    if not np.array_equal(finite, np.isfinite(got)):
        return "non-finite values in other places"
    if not np.array_equal(want[~finite], got[~finite], equal_nan=True):
        return "non-finite values differ"
    got, want = got[finite], want[finite]
    if got.size == 0:
        return None
    error = float(np.abs(got - want).max())
    span = float(want.max() - want.min())
    if error <= RANGE_SHARE * span or error <= 1e-5 * max(1.0, float(np.abs(want).max())):
        return None
    norm = float(np.linalg.norm(got) * np.linalg.norm(want))
    cosine = float(np.dot(got, want) / norm) if norm > 0 else 0.0
    if cosine >= COSINE_FLOOR and span > 0:
        return None
    return f"max error {error:.3g} (range {span:.3g}), cosine {cosine:.4f}"


def run_onnx(data, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Runs a model (bytes or path) in ONNX Runtime on the feed's inputs that the model has."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feed.items() if k in names})


def run_tflite(data: bytes, feed: dict[str, np.ndarray], resolver: str) -> list[np.ndarray]:
    """Runs a ``.tflite`` in LiteRT (``xnnpack`` or ``builtin``), resized to the feed's shapes."""
    from qcc.backends._tflite_litert import interpreter

    interp = interpreter(data, resolver)
    details = interp.get_input_details()
    resized = False
    for detail in details:
        array = np.asarray(feed[detail["name"]])
        if tuple(detail["shape"]) != array.shape:
            interp.resize_tensor_input(detail["index"], list(array.shape))
            resized = True
    if resized:
        interp.allocate_tensors()
    for detail in interp.get_input_details():
        array = np.asarray(feed[detail["name"]])
        if detail["dtype"] == np.int8 and array.dtype != np.int8:
            scale, zero_point = detail["quantization"]
            array = np.clip(np.rint(array / scale) + zero_point, -128, 127)
        interp.set_tensor(detail["index"], array.astype(detail["dtype"]))
    interp.invoke()
    outputs = []
    for detail in interp.get_output_details():
        array = interp.get_tensor(detail["index"])
        if detail["dtype"] == np.int8 and detail["quantization"][0] > 0:
            scale, zero_point = detail["quantization"]
            array = (array.astype(np.float32) - zero_point) * scale
        outputs.append(array)
    return outputs


def _tflite_ops(data: bytes) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = Interpreter(model_content=data, experimental_op_resolver_type=resolver)
    ops = [op["op_name"] for op in interp._get_ops_details()]  # noqa: SLF001 - no public op listing
    return [op for op in ops if op not in ("QUANTIZE", "DEQUANTIZE")] or ops


def _lowered(result, target: str) -> str:
    decisions = sorted({node["decision"] for node in result.report.get("nodes", [])})
    how = "/".join(decisions) or "none"
    if target == "tflite":
        ops = _tflite_ops(result.artifact.data)
        return f"{how}: {' '.join(dict.fromkeys(ops))}"
    return how


def run_case(case: Case, variant: str, target: str) -> Outcome:
    """Compiles one case for one target, runs the artifact and compares (see module docstring)."""
    import qcc
    from qcc.errors import QccError

    model, feed = variant_model(case, variant)
    outcome = Outcome(case.name, case.op_type, variant, target, "crash")
    start = time.perf_counter()
    try:
        result = qcc.compile(model, target=target, calibration=[feed], verify=False)
    except QccError as error:
        outcome.status, outcome.detail = "refused", str(error)
        return outcome
    except Exception as error:  # noqa: BLE001 - a crash is what this records
        outcome.detail = f"{type(error).__name__}: {error} @ {_where(error)}"
        return outcome
    finally:
        outcome.seconds = time.perf_counter() - start
    try:
        outcome.lowered = _lowered(result, target)
        if target == "tflite":
            runs = {r: run_tflite(result.artifact.data, feed, r) for r in ("xnnpack", "builtin")}
        else:
            runs = {"onnxruntime": run_onnx(result.artifact.runtime_model, feed)}
    except Exception as error:  # noqa: BLE001 - the runtime's own failure
        outcome.status, outcome.detail = "failed", f"{type(error).__name__}: {str(error)[:300]}"
        return outcome
    expected_outputs, note = _reference(case, model, feed)
    problems = []
    for runtime, got in runs.items():
        if len(got) != len(expected_outputs):
            problems.append(f"{runtime}: {len(got)} outputs, expected {len(expected_outputs)}")
            continue
        for index, (array, expected) in enumerate(zip(got, expected_outputs, strict=True)):
            problem = compare(array, expected)
            if problem:
                problems.append(f"{runtime} output {index}: {problem}")
    outcome.status = "mismatch" if problems else "matched"
    outcome.detail = "; ".join(problems + ([note] if note else []))
    return outcome


def _reference(case: Case, model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> tuple[tuple, str]:
    """ONNX's expected outputs; ONNX Runtime's float outputs where ONNX Runtime itself differs from them.

    qcc approximates the float model as ONNX Runtime runs it (that is where it calibrates), so a
    case on which ONNX Runtime disagrees with ONNX's expected outputs (MaxUnpool with an
    output_shape) is compared with ONNX Runtime, and the outcome says so.
    """
    try:
        float_outputs = run_onnx(model.SerializeToString(), feed)
    except Exception:  # noqa: BLE001 - qcc must have refused such a model; compare with ONNX's outputs
        return case.outputs, ""
    if len(float_outputs) == len(case.outputs) and any(
        compare(got, want) for got, want in zip(float_outputs, case.outputs, strict=True)
    ):
        return tuple(float_outputs), "ONNX Runtime's float model differs from ONNX's expected output; compared with it"
    return case.outputs, ""


def _where(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    return f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else "?"


def _run_op(args: tuple[str, tuple[str, ...], tuple[str, ...], int]) -> list[dict]:
    op_type, targets, variants, per_op = args
    import logging

    logging.disable(logging.WARNING)
    cases = [case for case in collect() if case.op_type == op_type][:per_op]
    return [
        dataclasses.asdict(run_case(case, variant, target))
        for case in cases
        for variant in variants
        for target in targets
    ]


def run_all(
    targets: tuple[str, ...] = TARGETS,
    variants: tuple[str, ...] = VARIANTS,
    ops: list[str] | None = None,
    jobs: int = 2,
    per_op: int = CASES_PER_OP,
) -> Iterator[dict]:
    """Runs every case, one operator per task in worker processes.

    A runtime that kills its process (a segfault in a kernel) breaks the pool; the operators left
    unfinished then run again one per process, so only the one that crashes is reported as such.
    """
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    op_types = ops or sorted({case.op_type for case in collect()})
    context = multiprocessing.get_context("spawn")
    retry = []
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures = {op: pool.submit(_run_op, (op, targets, variants, per_op)) for op in op_types}
        for op, future in futures.items():
            try:
                yield from future.result()
            except BrokenProcessPool:
                retry.append(op)
    for op in retry:
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            try:
                yield from pool.submit(_run_op, (op, targets, variants, per_op)).result()
            except BrokenProcessPool:
                yield dict(case="*", op_type=op, variant="*", target="*", status="crash",
                           detail="the worker process died (a runtime crash)", lowered="", seconds=0.0)


def summarize(rows: list[dict]) -> dict:
    """Per target: operator types matched, fully matched-or-refused, crashes; per-status counts."""
    summary = {}
    for target in sorted({r["target"] for r in rows if r["target"] != "*"}):
        mine = [r for r in rows if r["target"] == target]
        by_op = collections.defaultdict(list)
        for row in mine:
            by_op[row["op_type"]].append(row["status"])
        summary[target] = {
            "operator_types": len(by_op),
            "matched_types": sum(1 for s in by_op.values() if "matched" in s),
            "clean_types": sum(1 for s in by_op.values() if set(s) <= {"matched", "refused"}),
            "statuses": dict(collections.Counter(r["status"] for r in mine)),
        }
    return summary


def write_markdown(rows: list[dict], path: str) -> None:
    """docs/operators.md: per operator and target, how it was lowered or why it was refused."""
    summary = summarize(rows)
    targets = [t for t in TARGETS if t in summary]
    lines = [
        "# Operator support, generated by `make conformance`",
        "",
        "Do not edit: `python -m tests.e2e.conformance --markdown docs/operators.md` writes this file from a run",
        f"of ONNX's node conformance cases (up to {CASES_PER_OP} per operator, variants: "
        "all inputs as graph inputs, and inputs after the first as initializers).",
        "",
        "| target | operator types | matched | every case matched or refused | cases by outcome |",
        "|---|---|---|---|---|",
    ]
    for target in targets:
        s = summary[target]
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(s["statuses"].items()))
        lines.append(f"| {target} | {s['operator_types']} | {s['matched_types']} | {s['clean_types']} | {statuses} |")
    lines += [
        "",
        "Each cell: **int8** where the target has an int8 kernel for the operator (its spec: weighted, int8",
        "or shared-scale ops; in a model it runs int8 next to other int8 nodes, while a single-node case",
        "stays float because an isolated int8 op would only add conversions), then the outcome counts, how",
        "the node was compiled here (int8, float, fused; for tflite the builtins it became), and the",
        "first refusal or failure with its reason.",
        "",
        "| operator | " + " | ".join(targets) + " |",
        "|---|" + "---|" * len(targets),
    ]
    int8 = {target: _int8_ops(target) for target in targets}
    by_op = collections.defaultdict(lambda: collections.defaultdict(list))
    for row in rows:
        by_op[row["op_type"]][row["target"]].append(row)
    for op in sorted(by_op):
        cells = []
        for target in targets:
            mine = by_op[op].get(target, [])
            counts = collections.Counter(r["status"] for r in mine)
            text = ("**int8** " if op in int8[target] else "") + " ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            lowered = sorted({r["lowered"] for r in mine if r["lowered"] and r["status"] == "matched"})
            bad = [r for r in mine if r["status"] != "matched"]
            if lowered:
                text += ": " + "; ".join(lowered)[:160]
            if bad:
                text += f" ({bad[0]['status']}: {bad[0]['detail'][:160]})"
            cells.append(text.replace("|", "\\|").replace("\n", " "))
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def _int8_ops(target: str) -> frozenset[str]:
    """The operators a target's spec runs int8 (weighted, int8-kernel and shared-scale ops)."""
    from qcc.backends import get_backend

    spec = get_backend(target).spec
    return spec.compute_ops | spec.int8_ops | spec.shared_scale_ops | spec.fused_activations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--ops", default="", help="comma-separated operator types (default: all)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", default="build/conformance.json")
    parser.add_argument("--markdown", default="")
    args = parser.parse_args(argv)
    import os

    rows = []
    ops = [o for o in args.ops.split(",") if o] or None
    for row in run_all(tuple(args.targets.split(",")), tuple(args.variants.split(",")), ops, args.jobs):
        rows.append(row)
        if row["status"] not in ("matched", "refused"):
            print(f"{row['status']:9} {row['target']:6} {row['variant']:7} {row['case']}: {row['detail'][:200]}")
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(rows, f, indent=1)
    if args.markdown:
        write_markdown(rows, args.markdown)
    summary = summarize(rows)
    print(json.dumps(summary, indent=1))
    return 1 if any(s["statuses"].get("crash") for s in summary.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
