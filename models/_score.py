"""Runs one artifact against its fp32 model: fidelity, output cosine, ORT census, interleaved latency.

Meant to run in a child process of zoo.py / bench.py (see ``_harness.py``), so that a runtime crashing on a
freshly compiled artifact (a segfault in LiteRT on a bad flatbuffer, an ORT abort) costs one row, not the run:

    python models/_score.py score   --model-dir D --metric M --artifact A --fp32-cache C.npz --out R.json
    python models/_score.py latency --model-dir D --artifact A [--artifact B ...] --repeats N --out R.json

``.onnx`` artifacts run in ONNX Runtime and ``.tflite`` artifacts in LiteRT (``ai_edge_litert``), both at one
thread. The LiteRT runner takes the fp32 model's feeds as they are: it matches inputs by name (else by
position), transposes NCHW feeds when the interpreter wants NHWC, resizes dynamic inputs, quantizes float feeds
for int8 inputs and dequantizes int8 outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import evaluate  # noqa: E402

Feed = dict[str, np.ndarray]
Outputs = dict[str, np.ndarray]
Runner = Callable[[Mapping[str, np.ndarray]], Outputs]

# The one number a table shows per model, the first of these the model's metric returns.
HEADLINE_KEYS = (
    "top1_agreement",
    "box_f1",
    "mask_iou",
    "exact_agreement",
    "nn_agreement",
    "decision_agreement",
    "cosine_mean",
)


# ---------------------------------------------------------------------------------------------------- metrics


def output_cosine(fp32: Sequence[Outputs], int8: Sequence[Outputs]) -> dict:
    """Cosine of every float output, per feed (flattened), int8 vs fp32.

    Also the metric of a model that ``evaluate.METRICS`` does not know.

    Returns:
        {"cosine_mean", "cosine_min" (of the worst output), "outputs": {name: {"cosine_mean", "cosine_min"}}}.
    """
    per_output = {}
    for name, reference in fp32[0].items():
        if np.asarray(reference).dtype.kind != "f":
            continue
        cos = np.array([_cosine(a[name], b[name]) for a, b in zip(fp32, int8, strict=True)], dtype=np.float64)
        per_output[name] = {"cosine_mean": round(float(cos.mean()), 5), "cosine_min": round(float(cos.min()), 5)}
    if not per_output:
        return {"cosine_mean": None, "cosine_min": None, "outputs": {}}
    return {
        "cosine_mean": min(o["cosine_mean"] for o in per_output.values()),
        "cosine_min": min(o["cosine_min"] for o in per_output.values()),
        "outputs": per_output,
    }


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def metric_for(metric: str) -> evaluate.Metric:
    """Returns ``evaluate.METRICS[metric]``, or :func:`output_cosine` for ``"output_cosine"``.

    Raises:
        KeyError: the metric name is unknown.
    """
    if metric == "output_cosine":
        return output_cosine
    return evaluate.METRICS[metric]


def headline(metrics: Mapping) -> tuple[str, float] | None:
    """Returns (key, value) of the first of HEADLINE_KEYS in a metric result, None when there is none."""
    for key in HEADLINE_KEYS:
        if metrics.get(key) is not None:
            return key, metrics[key]
    return None


# ---------------------------------------------------------------------------------------------------- runners


def ort_runner(path: str | os.PathLike, threads: int = 1, simulate: bool = False) -> Runner:
    """Returns a function running the model in ONNX Runtime (CPU) on one feed -> {output name: array}.

    ``simulate``: graph optimizations off, so every Q/DQ is computed as written (float math on the
    dequantized values). That is how TensorRT's explicit quantization computes a QDQ graph (integer
    products, float rescale); with optimizations on, ONNX Runtime fuses the Q/DQ into its own integer
    kernels, whose requantization a TensorRT artifact never sees.
    """
    options = {"graph_optimization_level": ort.GraphOptimizationLevel.ORT_DISABLE_ALL} if simulate else {}
    session = evaluate.session(path, threads, **options)
    names = [o.name for o in session.get_outputs()]
    return lambda feed: dict(zip(names, session.run(names, dict(feed)), strict=True))


def _fits(shape: Sequence[int], signature: Sequence[int]) -> bool:
    return len(shape) == len(signature) and all(s in (-1, x) for x, s in zip(shape, signature, strict=True))


class LiteRtRunner:
    """Runs a ``.tflite`` artifact in LiteRT on feeds made for the fp32 ONNX model.

    Args:
        path: the .tflite file.
        input_names, output_names: the ONNX model's, in order; matched by tensor name, else by position.
        threads: interpreter threads.
    """

    def __init__(self, path: str | os.PathLike, input_names: Sequence[str], output_names: Sequence[str], threads=1):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=os.fspath(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input_names, self.output_names = list(input_names), list(output_names)

    @staticmethod
    def _pick(details: list[dict], name: str, position: int) -> dict:
        by_name = {d["name"]: d for d in details}
        return by_name.get(name) or details[position]

    def __call__(self, feed: Mapping[str, np.ndarray]) -> Outputs:
        """Runs one feed; raises RuntimeError naming the input when LiteRT cannot take its shape."""
        arrays, static_misfits, resized = {}, [], False
        for position, name in enumerate(self.input_names):
            detail = self._pick(self.interpreter.get_input_details(), name, position)
            array = np.asarray(feed[name])
            signature = [int(d) for d in detail.get("shape_signature", detail["shape"])]
            if not _fits(array.shape, signature) and array.ndim == 4:
                nhwc = array.transpose(0, 2, 3, 1)
                array = nhwc if _fits(nhwc.shape, signature) else array
            if not _fits(array.shape, signature):
                static_misfits.append(f"{name!r} {tuple(array.shape)} vs signature {signature}")
            if tuple(array.shape) != tuple(detail["shape"]):
                self.interpreter.resize_tensor_input(detail["index"], list(array.shape))
                resized = True
            arrays[detail["index"]] = array
        try:
            if resized:
                self.interpreter.allocate_tensors()
            for detail in self.interpreter.get_input_details():
                array = arrays[detail["index"]]
                scale, zero_point = detail["quantization"]
                if detail["dtype"] in (np.int8, np.uint8) and array.dtype.kind == "f" and scale:
                    info = np.iinfo(detail["dtype"])
                    array = np.clip(np.round(array / scale) + zero_point, info.min, info.max)
                self.interpreter.set_tensor(detail["index"], np.ascontiguousarray(array, dtype=detail["dtype"]))
            self.interpreter.invoke()
        except (RuntimeError, ValueError) as error:
            if not static_misfits:
                raise
            # Resizing a static dimension is allowed but fails inside ops with baked shapes: say so.
            raise RuntimeError(
                f"the artifact's inputs are static and this feed does not fit: {'; '.join(static_misfits)} "
                f"(LiteRT: {str(error).strip().splitlines()[0]})"
            ) from error
        outputs = {}
        details = self.interpreter.get_output_details()
        for position, name in enumerate(self.output_names):
            detail = self._pick(details, name, position)
            value = self.interpreter.get_tensor(detail["index"])
            scale, zero_point = detail["quantization"]
            if value.dtype in (np.int8, np.uint8) and scale:
                value = ((value.astype(np.float32) - zero_point) * scale).astype(np.float32)
            outputs[name] = value
        return outputs


def open_runner(
    artifact: str | os.PathLike, fp32_path: str | os.PathLike, threads: int = 1, simulate: bool = False
) -> Runner:
    """Returns the runner of an artifact: LiteRT for ``.tflite``, ONNX Runtime otherwise (``simulate``:
    see :func:`ort_runner`)."""
    if Path(artifact).suffix == ".tflite":
        session = evaluate.session(fp32_path, threads)
        return LiteRtRunner(
            artifact, [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()], threads
        )
    return ort_runner(artifact, threads, simulate)


def runtime_of(artifact: str | os.PathLike, simulate: bool = False) -> str:
    """Names the runtime that runs an artifact."""
    if Path(artifact).suffix == ".tflite":
        return "litert"
    return "onnxruntime, Q/DQ simulated (optimizations off)" if simulate else "onnxruntime"


def _align(outputs: Outputs, reference: Outputs) -> Outputs:
    """Transposes NHWC outputs back to the reference's NCHW shape when that is the only difference."""
    aligned = {}
    for name, value in outputs.items():
        want = np.shape(reference[name])
        if value.shape != want and value.ndim == 4 and value.transpose(0, 3, 1, 2).shape == want:
            value = value.transpose(0, 3, 1, 2)
        aligned[name] = value
    return aligned


# ---------------------------------------------------------------------------------------------------- scoring


def fp32_outputs(model_dir: Path, feeds: Sequence[Feed], cache: Path) -> list[Outputs]:
    """Returns the fp32 model's outputs on the feeds, cached in ``cache`` (refreshed when the model changes)."""
    sources = (model_dir / "model.onnx", model_dir / "eval.npz")
    if cache.exists() and all(cache.stat().st_mtime >= s.stat().st_mtime for s in sources):
        return evaluate.load_feeds(cache)
    run = ort_runner(model_dir / "model.onnx")
    outputs = [run(feed) for feed in feeds]
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.npz")
    np.savez(tmp, **{f"{i}/{name}": a for i, o in enumerate(outputs) for name, a in o.items()})
    os.replace(tmp, cache)
    return outputs


def score(model_dir: Path, metric: str, artifact: Path, cache: Path, simulate: bool = False) -> dict:
    """Scores an artifact against the fp32 model on ``eval.npz`` (``simulate``: see :func:`ort_runner`;
    for artifacts meant for TensorRT).

    Returns:
        {"runtime", "samples", "fidelity" (the metric's dict), "headline": [key, value] | None,
        "output_cosine", "reference"? ({"fp32", "int8"} ground-truth metrics), "census"? (ONNX artifacts:
        ``evaluate.fusion_census``), "float_compute_left" (count, ONNX artifacts only)}.
    """
    feeds = evaluate.load_feeds(model_dir / "eval.npz")
    fp32 = fp32_outputs(model_dir, feeds, cache)
    run = open_runner(artifact, model_dir / "model.onnx", simulate=simulate)
    int8 = [_align(run(feed), reference) for feed, reference in zip(feeds, fp32, strict=True)]
    fidelity = metric_for(metric)(fp32, int8)
    result = {
        "runtime": runtime_of(artifact, simulate),
        "samples": len(feeds),
        "fidelity": fidelity,
        "headline": headline(fidelity),
        "output_cosine": output_cosine(fp32, int8),
    }
    reference_path = model_dir / "reference.npz"
    if metric in evaluate.REFERENCE_METRICS and reference_path.exists():
        with np.load(reference_path) as npz:
            reference = {key: npz[key] for key in npz.files}
        check = evaluate.REFERENCE_METRICS[metric]
        result["reference"] = {"fp32": check(fp32, reference), "int8": check(int8, reference)}
    if artifact.suffix == ".onnx":
        census = evaluate.fusion_census(artifact)
        result["census"] = census
        result["float_compute_left"] = sum(census["float_compute_left"].values())
    return result


def latency(model_dir: Path, artifacts: Sequence[Path], repeats: int, warmup: int = 3) -> dict:
    """Times fp32 (ONNX Runtime) and every artifact on the largest eval feed, one thread, runs interleaved.

    Interleaving makes every model see the same machine load, so ratios hold up on shared cores.

    Returns:
        {"fp32_ms", "artifacts": {path: {"int8_ms", "speedup" (fp32_ms / int8_ms), "runtime"}}, "repeats",
        "threads": 1, "feed": {input: shape}}.
    """
    feeds = evaluate.load_feeds(model_dir / "eval.npz")
    feed = dict(max(feeds, key=lambda f: sum(a.size for a in f.values())))
    runners = {"fp32": ort_runner(model_dir / "model.onnx")}
    runners.update({os.fspath(a): open_runner(a, model_dir / "model.onnx") for a in artifacts})
    times: dict[str, list[float]] = {key: [] for key in runners}
    for i in range(warmup + repeats):
        for key, run in runners.items():
            start = time.perf_counter()
            run(feed)
            if i >= warmup:
                times[key].append((time.perf_counter() - start) * 1e3)
    fp32_ms = statistics.median(times.pop("fp32"))
    return {
        "fp32_ms": round(fp32_ms, 3),
        "artifacts": {
            key: {
                "int8_ms": round(statistics.median(t), 3),
                "speedup": round(fp32_ms / statistics.median(t), 3),
                "runtime": runtime_of(key),
            }
            for key, t in times.items()
        },
        "repeats": repeats,
        "threads": 1,
        "feed": {name: list(a.shape) for name, a in feed.items()},
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    score_cmd = commands.add_parser("score", help="fidelity, output cosine and census of one artifact")
    score_cmd.add_argument("--metric", required=True, help="a name in evaluate.METRICS, or output_cosine")
    score_cmd.add_argument("--artifact", type=Path, required=True)
    score_cmd.add_argument("--fp32-cache", type=Path, required=True)
    score_cmd.add_argument(
        "--simulate", action="store_true", help="ONNX artifacts: Q/DQ computed as written (TensorRT's arithmetic)"
    )
    latency_cmd = commands.add_parser("latency", help="interleaved fp32/artifact latency")
    latency_cmd.add_argument("--artifact", type=Path, action="append", required=True)
    latency_cmd.add_argument("--repeats", type=int, default=30)
    for command in (score_cmd, latency_cmd):
        command.add_argument("--model-dir", type=Path, required=True, help="holds model.onnx and eval.npz")
        command.add_argument("--out", type=Path, required=True, help="where to write the JSON result")
    args = parser.parse_args(argv)
    if args.command == "score":
        result = score(args.model_dir, args.metric, args.artifact, args.fp32_cache, args.simulate)
    else:
        result = latency(args.model_dir, args.artifact, args.repeats)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
