"""Zoo fidelity metrics (int8 vs fp32 on a model's eval feeds), plus latency and the ORT fusion census.

Runs in the project env (numpy + onnxruntime; the census also reads the optimised graph with onnx). Fidelity
is agreement with fp32, not task accuracy: the eval sets are small and unlabelled.

    python models/evaluate.py MODEL_NAME FP32.onnx INT8.onnx EVAL.npz [--latency] [--census] [--threads N]

prints one JSON object: {"model", "samples", "metrics": METRICS[MODEL_NAME](fp32, int8), "latency"?,
"census"?}.

Building blocks:
    load_feeds(npz)                     the feed dicts of a zoo .npz (both key forms of qcc's data contract).
    run_model(path, feeds, threads=1)   outputs of every feed, as {output name: array} dicts.
    METRICS[name](fp32, int8) -> dict   one function per zoo model, on the two lists of output dicts.
    latency(fp32, int8, feed, ...)      median of interleaved single-thread runs; ratio = fp32 ms / int8 ms.
    fusion_census(path)                 op types in ORT's optimised (ORT_ENABLE_EXTENDED) graph.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnxruntime as ort

Feed = dict[str, np.ndarray]
Outputs = dict[str, np.ndarray]
Metric = Callable[[Sequence[Outputs], Sequence[Outputs]], dict]

_INDEXED_KEY = re.compile(r"^(\d+)/(.+)$")


# ---------------------------------------------------------------------------------------------------- running


def load_feeds(path: str | os.PathLike) -> list[Feed]:
    """Returns the samples of a zoo .npz as feed dicts, in sample order.

    Two key forms (qcc's calibration-data contract): ``<index>/<input name>`` (one feed per index, shapes
    may differ) or input names holding arrays with a leading sample axis (each row one feed).

    Raises:
        ValueError: the file mixes the two forms, or the sample-axis arrays disagree in length.
    """
    with np.load(path) as npz:
        arrays = {key: npz[key] for key in npz.files}
    matches = {key: _INDEXED_KEY.match(key) for key in arrays}
    if all(matches.values()):
        by_index: dict[int, Feed] = {}
        for key, match in matches.items():
            by_index.setdefault(int(match.group(1)), {})[match.group(2)] = arrays[key]
        return [by_index[i] for i in sorted(by_index)]
    if any(matches.values()):
        raise ValueError(f"{path} mixes '<index>/<input>' keys with input-name keys; use one form.")
    lengths = {len(a) for a in arrays.values()}
    if len(lengths) != 1:
        raise ValueError(f"{path}: inputs have different sample counts {sorted(lengths)}.")
    return [{name: a[i] for name, a in arrays.items()} for i in range(lengths.pop())]


def session(path: str | os.PathLike, threads: int = 1, **options) -> ort.InferenceSession:
    """Returns a CPU InferenceSession with intra_op_num_threads=threads (inter-op 1, sequential execution)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    for key, value in options.items():
        setattr(so, key, value)
    return ort.InferenceSession(os.fspath(path), so, providers=["CPUExecutionProvider"])


def run_model(
    path: str | os.PathLike, feeds_list: Sequence[Mapping[str, np.ndarray]], threads: int = 1
) -> list[Outputs]:
    """Runs a model on every feed and returns, per feed, {output name: array}."""
    sess = session(path, threads)
    names = [o.name for o in sess.get_outputs()]
    return [dict(zip(names, sess.run(names, dict(feed)), strict=True)) for feed in feeds_list]


def _largest(feeds_list: Sequence[Mapping[str, np.ndarray]]) -> Feed:
    return dict(max(feeds_list, key=lambda feed: sum(a.size for a in feed.values())))


def latency(
    fp32_path: str | os.PathLike,
    int8_path: str | os.PathLike,
    feed: Mapping[str, np.ndarray],
    threads: int = 1,
    repeats: int = 30,
    warmup: int = 3,
) -> dict:
    """Times fp32 and int8 on one feed, alternating runs so both see the same machine load.

    Returns:
        {"fp32_ms", "int8_ms" (medians), "ratio" (fp32_ms / int8_ms, > 1 means int8 is faster),
        "repeats", "threads"}.
    """
    sessions = {"fp32": session(fp32_path, threads), "int8": session(int8_path, threads)}
    feed = dict(feed)
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    for i in range(warmup + repeats):
        for key, sess in sessions.items():
            start = time.perf_counter()
            sess.run(None, feed)
            if i >= warmup:
                times[key].append((time.perf_counter() - start) * 1e3)
    fp32_ms, int8_ms = statistics.median(times["fp32"]), statistics.median(times["int8"])
    return {
        "fp32_ms": round(fp32_ms, 3),
        "int8_ms": round(int8_ms, 3),
        "ratio": round(fp32_ms / int8_ms, 3),
        "repeats": repeats,
        "threads": threads,
    }


FLOAT_COMPUTE_OPS = ("Conv", "FusedConv", "MatMul", "FusedMatMul", "Gemm", "FusedGemm", "ConvTranspose")


def fusion_census(path: str | os.PathLike) -> dict:
    """Counts op types in the graph ORT actually runs (ORT_ENABLE_EXTENDED, CPU), after its QDQ fusions.

    Returns:
        {"ops": {op type: count}, "float_compute_left": {op type: count} for Conv/MatMul/Gemm/FusedConv/...
        still running in float, "quantize": QuantizeLinear count, "dequantize": DequantizeLinear count}.
    """
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        optimized = os.path.join(tmp, "optimized.onnx")
        session(
            path,
            1,
            graph_optimization_level=ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            optimized_model_filepath=optimized,
        )
        graph = onnx.load(optimized, load_external_data=False).graph
    ops = collections.Counter(node.op_type for node in graph.node)
    return {
        "ops": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "float_compute_left": {op: ops[op] for op in FLOAT_COMPUTE_OPS if ops[op]},
        "quantize": ops["QuantizeLinear"] + ops["DynamicQuantizeLinear"],
        "dequantize": ops["DequantizeLinear"],
    }


# ---------------------------------------------------------------------------------------------------- metrics


def _rows(outputs: Sequence[Outputs], name: str) -> np.ndarray:
    """Concatenates one output over samples along the batch axis, as float64 (batch, -1)."""
    return np.concatenate([np.asarray(o[name], np.float64).reshape(len(o[name]), -1) for o in outputs])


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    denominator = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(denominator, 1e-30)


def _cosine_summary(a: np.ndarray, b: np.ndarray, prefix: str = "cosine") -> dict:
    cos = _cosines(a, b)
    return {f"{prefix}_mean": round(float(cos.mean()), 5), f"{prefix}_min": round(float(cos.min()), 5)}


def classification(output: str) -> Metric:
    """Returns a classifier metric on one output of shape (batch, classes) (logits or probabilities).

    The metric returns top1_agreement (same argmax), top1_in_int8_top5 (fp32 argmax among int8's five best),
    cosine_mean / cosine_min of the score vectors, and the sample count.
    """

    def metric(fp32: Sequence[Outputs], int8: Sequence[Outputs]) -> dict:
        a, b = _rows(fp32, output), _rows(int8, output)
        top1 = a.argmax(axis=1)
        top5 = np.argsort(-b, axis=1)[:, :5]
        return {
            "top1_agreement": round(float(np.mean(top1 == b.argmax(axis=1))), 4),
            "top1_in_int8_top5": round(
                float(np.mean([t in row for t, row in zip(top1, top5, strict=True)])), 4
            ),
            **_cosine_summary(a, b),
            "count": len(a),
        }

    return metric


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (x1, y1, x2, y2) box with many."""
    x1, y1 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x2, y2 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-12)


def yolov8_boxes(raw: np.ndarray, score: float = 0.25, iou: float = 0.45) -> tuple[np.ndarray, np.ndarray]:
    """Decodes one YOLOv8 output (4 + classes, N) to (boxes x1y1x2y2, classes) after class-agnostic NMS.

    Mirrors NudeDetector's post-processing (cv2.dnn.NMSBoxes, score then IoU threshold), in input pixels.
    """
    rows = raw.T
    scores = rows[:, 4:].max(axis=1)
    keep = scores >= score
    rows, scores = rows[keep], scores[keep]
    classes = rows[:, 4:].argmax(axis=1)
    cx, cy, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    order, kept = list(np.argsort(-scores, kind="stable")), []
    while order:
        best = order.pop(0)
        kept.append(best)
        if order:
            overlaps = _iou(boxes[best], boxes[order])
            order = [o for o, v in zip(order, overlaps, strict=True) if v <= iou]
    return boxes[kept], classes[kept]


def detection(output: str) -> Metric:
    """Returns a YOLOv8 detection metric: int8-vs-fp32 box F1 (IoU >= 0.5, same class), raw-output cosine."""

    def metric(fp32: Sequence[Outputs], int8: Sequence[Outputs]) -> dict:
        matched = n_fp32 = n_int8 = 0
        for a, b in zip(fp32, int8, strict=True):
            for raw_a, raw_b in zip(a[output], b[output], strict=True):
                boxes_a, cls_a = yolov8_boxes(raw_a)
                boxes_b, cls_b = yolov8_boxes(raw_b)
                n_fp32, n_int8 = n_fp32 + len(boxes_a), n_int8 + len(boxes_b)
                free = np.ones(len(boxes_b), bool)
                for box, cls in zip(boxes_a, cls_a, strict=True):
                    if not free.any():
                        break
                    overlaps = np.where(free & (cls_b == cls), _iou(box, boxes_b), 0.0)
                    if overlaps.max(initial=0.0) >= 0.5:
                        free[overlaps.argmax()] = False
                        matched += 1
        f1 = 1.0 if n_fp32 + n_int8 == 0 else 2 * matched / (n_fp32 + n_int8)
        return {
            "box_f1": round(f1, 4),
            "fp32_boxes": n_fp32,
            "int8_boxes": n_int8,
            "matched": matched,
            **_cosine_summary(_rows(fp32, output), _rows(int8, output)),
        }

    return metric


def count_regions(mask: np.ndarray) -> int:
    """Counts 8-connected regions of a 2-D boolean mask (union-find over horizontal runs, no scipy)."""
    parent: list[int] = []

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    previous: list[tuple[int, int, int]] = []
    for row in mask:
        padded = np.concatenate([[False], row, [False]]).astype(np.int8)
        edges = np.flatnonzero(np.diff(padded))
        current = []
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            run = len(parent)
            parent.append(run)
            for p_start, p_stop, p_run in previous:
                if p_start <= stop and start <= p_stop:  # touching, diagonals included
                    root_a, root_b = find(run), find(p_run)
                    parent[max(root_a, root_b)] = min(root_a, root_b)
            current.append((start, stop, run))
        previous = current
    return sum(1 for i in range(len(parent)) if find(i) == i)


def text_detection(output: str, threshold: float = 0.3) -> Metric:
    """Returns a DB text-detection metric: mask IoU at p > threshold, text regions, prob-map cosine."""

    def metric(fp32: Sequence[Outputs], int8: Sequence[Outputs]) -> dict:
        inter = union = regions_a = regions_b = 0
        for a, b in zip(fp32, int8, strict=True):
            mask_a, mask_b = a[output] > threshold, b[output] > threshold
            inter += int(np.sum(mask_a & mask_b))
            union += int(np.sum(mask_a | mask_b))
            for map_a, map_b in zip(
                mask_a.reshape(-1, *mask_a.shape[-2:]), mask_b.reshape(-1, *mask_b.shape[-2:]), strict=False
            ):
                regions_a += count_regions(map_a)
                regions_b += count_regions(map_b)
        cos = np.array(
            [_cosines(a[output][None], b[output][None])[0] for a, b in zip(fp32, int8, strict=True)]
        )
        return {
            "mask_iou": round(inter / union if union else 1.0, 4),
            "fp32_regions": regions_a,
            "int8_regions": regions_b,
            "cosine_mean": round(float(cos.mean()), 5),
            "cosine_min": round(float(cos.min()), 5),
        }

    return metric


def ctc_greedy(probs: np.ndarray, blank: int = 0) -> tuple[int, ...]:
    """Greedy CTC decode of one (steps, classes) array: argmax, collapse repeats, drop blanks."""
    best = probs.argmax(axis=-1)
    keep = np.concatenate([[True], best[1:] != best[:-1]]) & (best != blank)
    return tuple(int(c) for c in best[keep])


def text_recognition(output: str) -> Metric:
    """Returns a CTC recognition metric: exact decoded-sequence and per-step argmax agreement, cosine."""

    def metric(fp32: Sequence[Outputs], int8: Sequence[Outputs]) -> dict:
        exact, steps, cos = [], [], []
        for a, b in zip(fp32, int8, strict=True):
            for line_a, line_b in zip(a[output], b[output], strict=True):
                exact.append(ctc_greedy(line_a) == ctc_greedy(line_b))
                steps.append(np.mean(line_a.argmax(-1) == line_b.argmax(-1)))
                cos.append(_cosines(line_a[None], line_b[None])[0])
        return {
            "exact_agreement": round(float(np.mean(exact)), 4),
            "step_agreement": round(float(np.mean(steps)), 4),
            "cosine_mean": round(float(np.mean(cos)), 5),
            "cosine_min": round(float(np.min(cos)), 5),
            "lines": len(exact),
        }

    return metric


def embedding(output: str) -> Metric:
    """Returns a sentence-embedding metric: fp32-vs-int8 embedding cosine and nearest-neighbour agreement.

    NN agreement: the fraction of sentences whose most similar other sentence (cosine, among all eval
    sentences) is the same under the int8 embeddings as under the fp32 ones.
    """

    def nearest(rows: np.ndarray) -> np.ndarray:
        unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-30)
        similarity = unit @ unit.T
        np.fill_diagonal(similarity, -np.inf)
        return similarity.argmax(axis=1)

    def metric(fp32: Sequence[Outputs], int8: Sequence[Outputs]) -> dict:
        a, b = _rows(fp32, output), _rows(int8, output)
        return {
            **_cosine_summary(a, b),
            "nn_agreement": round(float(np.mean(nearest(a) == nearest(b))), 4),
            "sentences": len(a),
        }

    return metric


def voice_activity(output: str, threshold: float = 0.5) -> Metric:
    """Returns a VAD metric on per-frame speech probabilities: decision agreement at threshold, MAE,
    cosine."""

    def metric(fp32: Sequence[Outputs], int8: Sequence[Outputs]) -> dict:
        a = np.concatenate([np.ravel(o[output]) for o in fp32]).astype(np.float64)
        b = np.concatenate([np.ravel(o[output]) for o in int8]).astype(np.float64)
        return {
            "decision_agreement": round(float(np.mean((a > threshold) == (b > threshold))), 4),
            "mae": round(float(np.mean(np.abs(a - b))), 5),
            "cosine": round(float(_cosines(a[None], b[None])[0]), 5),
            "frames": len(a),
        }

    return metric


def speech_accuracy(
    output: str, key: str, threshold: float = 0.5
) -> Callable[[Sequence[Outputs], Mapping], dict]:
    """Returns a ground-truth metric: per-frame accuracy of (probability > threshold) vs reference[key]."""

    def metric(outputs: Sequence[Outputs], reference: Mapping[str, np.ndarray]) -> dict:
        decisions = np.concatenate([np.ravel(o[output]) for o in outputs]) > threshold
        return {"accuracy": round(float(np.mean(decisions == np.ravel(reference[key]).astype(bool))), 4)}

    return metric


METRICS: dict[str, Metric] = {
    "mobilenet_v2_imagenet": classification("logits"),
    "efficientnet_lite0": classification("logits"),
    "nudenet_yolov8n": detection("output0"),
    "ppocrv5_det": text_detection("fetch_name_0"),
    "ppocrv5_rec": text_recognition("fetch_name_0"),
    "minilm_l6_embed": embedding("sentence_embedding"),
    "silero_vad_seq": voice_activity("speech_probs"),
    "magika_filetype": classification("target_label"),
}

# Metrics against ground truth, computed for fp32 and int8 alike when the model's build has a reference.npz.
REFERENCE_METRICS: dict[str, Callable[[Sequence[Outputs], Mapping[str, np.ndarray]], dict]] = {
    "silero_vad_seq": speech_accuracy("speech_probs", "speech"),
}


def evaluate(
    model: str,
    fp32_path: str,
    int8_path: str,
    eval_path: str,
    threads: int = 1,
    reference_path: str | None = None,
) -> dict:
    """Runs both models on the eval feeds and returns {"model", "samples", "metrics"[, "reference"]}.

    "reference" ({"fp32": ..., "int8": ...}) is added for models in REFERENCE_METRICS when reference_path
    (by default ``reference.npz`` beside the eval file) exists.

    Raises:
        KeyError: no metric is registered for the model name.
    """
    if model not in METRICS:
        raise KeyError(f"no metric for {model!r}; known: {', '.join(METRICS)}")
    feeds = load_feeds(eval_path)
    fp32, int8 = run_model(fp32_path, feeds, threads), run_model(int8_path, feeds, threads)
    result = {"model": model, "samples": len(feeds), "metrics": METRICS[model](fp32, int8)}
    reference_path = reference_path or os.path.join(
        os.path.dirname(os.path.abspath(eval_path)), "reference.npz"
    )
    if model in REFERENCE_METRICS and os.path.exists(reference_path):
        with np.load(reference_path) as npz:
            reference = {key: npz[key] for key in npz.files}
        result["reference"] = {
            "fp32": REFERENCE_METRICS[model](fp32, reference),
            "int8": REFERENCE_METRICS[model](int8, reference),
        }
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(METRICS))
    parser.add_argument("fp32")
    parser.add_argument("int8")
    parser.add_argument("eval_npz")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for the fidelity runs")
    parser.add_argument(
        "--latency", action="store_true", help="also time fp32 vs int8 on the largest eval feed"
    )
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per model for --latency")
    parser.add_argument(
        "--census", action="store_true", help="also count op types in ORT's optimised int8 graph"
    )
    args = parser.parse_args(argv)
    result = evaluate(args.model, args.fp32, args.int8, args.eval_npz, args.threads)
    if args.latency:
        result["latency"] = latency(
            args.fp32, args.int8, _largest(load_feeds(args.eval_npz)), repeats=args.repeats
        )
    if args.census:
        result["census"] = {"fp32": fusion_census(args.fp32), "int8": fusion_census(args.int8)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
