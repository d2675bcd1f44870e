"""`make demo`: compile the bundled demo CNN for every qcc target and print what it gained.

For each target: the artifact, its size, held-out accuracy (1000 MNIST digits the model never
saw), compile time, and latency of the float model (ONNX Runtime) against the int8 artifact in
its own runtime at 1 thread, median of interleaved runs:

* ``ort``: ONNX Runtime, batch 1 and batch 32;
* ``tflite``: LiteRT with XNNPACK; the artifact has the calibration samples' static batch of 1;
* ``trt``: accuracy from the same graph run in ONNX Runtime; no latency (no TensorRT here).

The demo CNN is tiny (~0.1 ms per digit), so at batch 1 per-op overhead, not arithmetic, decides
the latency; batch 32 shows the integer kernels' speed.

    python models/demo/run_demo.py --data build/demo
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

import qcc
from qcc.backends._tflite_litert import interpreter, run
from qcc.runtime import session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from evaluate import latency  # noqa: E402  (models/evaluate.py, shared with the zoo)

Runner = Callable[[np.ndarray], np.ndarray]


def runner(path: Path) -> Runner:
    """Returns a function running a batch of digits through the artifact in its runtime."""
    if path.suffix == ".tflite":
        interp = interpreter(path.read_bytes(), "xnnpack", threads=1)
        return lambda images: np.concatenate([run(interp, {"input": image[None]})[0] for image in images])
    sess = session(path.read_bytes(), threads=1)
    return lambda images: sess.run(None, {"input": images})[0]


def tflite_latency(fp32: Path, artifact: Path, image: np.ndarray, repeats: int = 200) -> dict[str, float]:
    """Median ms of ONNX Runtime fp32 vs LiteRT int8 on one digit, interleaved."""
    fp32_run, int8_run = runner(fp32), runner(artifact)
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    for i in range(repeats + 5):
        for key, fn in (("fp32", fp32_run), ("int8", int8_run)):
            start = time.perf_counter()
            fn(image)
            if i >= 5:
                times[key].append((time.perf_counter() - start) * 1e3)
    fp32_ms, int8_ms = statistics.median(times["fp32"]), statistics.median(times["int8"])
    return {"fp32_ms": fp32_ms, "int8_ms": int8_ms, "ratio": fp32_ms / int8_ms}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("build/demo"), help="folder written by models/demo/train.py")
    args = parser.parse_args()
    fp32 = args.data / "model.onnx"
    images = np.load(args.data / "eval.npz")["input"]
    labels = np.load(args.data / "eval_labels.npy")
    if images.ndim == 5:  # (samples, 1, 1, 28, 28): sample axis form
        images = images[:, 0]
    fp32_accuracy = float((runner(fp32)(images).argmax(axis=1) == labels).mean())

    table = Table(title="qcc demo: MNIST CNN trained by models/demo/train.py, 1000 held-out digits, 1 thread")
    columns = ("target", "artifact", "size", "accuracy", "compile", "batch 1 ms", "speed-up", "batch 32 ms", "speed-up")
    for column in columns:
        table.add_column(column, justify="left" if column in ("target", "artifact") else "right")
    size = f"{fp32.stat().st_size / 1e3:.0f} kB"
    table.add_row("fp32", fp32.name + " (ORT)", size, f"{fp32_accuracy:.1%}", "", "", "", "", "")
    for target in qcc.targets():
        start = time.perf_counter()
        result = qcc.compile(str(fp32), target=target, calibration=str(args.data / "calib.npz"))
        seconds = time.perf_counter() - start
        suffix = result.artifact.suffix
        artifact = args.data / (f"model.{target}{suffix}" if suffix == ".onnx" else f"model{suffix}")
        result.save(artifact, args.data / f"report.{target}.json")
        int8_accuracy = float((runner(artifact)(images).argmax(axis=1) == labels).mean())
        b1 = b32 = None
        if target == "ort":
            b1 = latency(fp32, artifact, {"input": images[:1]}, repeats=200)
            b32 = latency(fp32, artifact, {"input": images[:32]}, repeats=50)
        elif artifact.suffix == ".tflite":
            b1 = tflite_latency(fp32, artifact, images[:1])
        table.add_row(
            target,
            artifact.name + {"ort": " (ORT)", "tflite": " (LiteRT)", "trt": " (ORT sim.)"}.get(target, ""),
            f"{artifact.stat().st_size / 1e3:.0f} kB",
            f"{int8_accuracy:.1%}",
            f"{seconds:.1f} s",
            *_latency_cells(b1),
            *_latency_cells(b32),
        )
    Console(width=max(Console().width, 130)).print(table)
    print(f"artifacts and reports in {args.data}/ ; fp32 accuracy {fp32_accuracy:.1%}; trt latency needs TensorRT")
    return 0


def _latency_cells(result: dict[str, float] | None) -> tuple[str, str]:
    if result is None:
        return "-", "-"
    return f"{result['fp32_ms']:.3f} -> {result['int8_ms']:.3f}", f"{result['ratio']:.2f}x"


if __name__ == "__main__":
    raise SystemExit(main())
