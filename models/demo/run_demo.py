"""`make demo`: compile the bundled demo CNN for every qcc target and print what it gained.

For each target: the artifact, its size, held-out accuracy of fp32 vs int8 (1000 MNIST digits the
model never saw), and ONNX Runtime latency fp32 vs int8 at 1 thread (median of interleaved runs)
at batch 1 and batch 32. The demo CNN is tiny (~0.1 ms per digit), so at batch 1 per-op overhead,
not arithmetic, decides the latency; batch 32 shows the integer kernels' speed.

    python models/demo/run_demo.py --data build/demo
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

import qcc
from qcc.runtime import session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from evaluate import latency  # noqa: E402  (models/evaluate.py, shared with the zoo)


def accuracy(model_path: Path, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of a model on the held-out digits, run in ONNX Runtime."""
    logits = session(model_path.read_bytes(), threads=1).run(None, {"input": images})[0]
    return float((logits.argmax(axis=1) == labels).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("build/demo"), help="folder written by models/demo/train.py")
    args = parser.parse_args()
    fp32 = args.data / "model.onnx"
    images = np.load(args.data / "eval.npz")["input"]
    labels = np.load(args.data / "eval_labels.npy")
    if images.ndim == 5:  # (samples, 1, 1, 28, 28): sample axis form
        images = images[:, 0]
    fp32_accuracy = accuracy(fp32, images, labels)

    table = Table(title="qcc demo: MNIST CNN trained by models/demo/train.py, 1000 held-out digits, ORT 1 thread")
    for column in (
        "target",
        "artifact",
        "size",
        "accuracy",
        "compile",
        "batch 1 ms",
        "speed-up",
        "batch 32 ms",
        "speed-up",
    ):
        table.add_column(column, justify="left" if column in ("target", "artifact") else "right")
    table.add_row("fp32", fp32.name, f"{fp32.stat().st_size / 1e3:.0f} kB", f"{fp32_accuracy:.1%}", "", "", "", "", "")
    for target in qcc.targets():
        start = time.perf_counter()
        result = qcc.compile(str(fp32), target=target, calibration=str(args.data / "calib.npz"))
        seconds = time.perf_counter() - start
        artifact = args.data / f"model.{target}{result.artifact.suffix}"
        result.save(artifact, args.data / f"report.{target}.json")
        int8_accuracy = accuracy(artifact, images, labels)
        b1 = latency(fp32, artifact, {"input": images[:1]}, repeats=200)
        b32 = latency(fp32, artifact, {"input": images[:32]}, repeats=50)
        table.add_row(
            target,
            artifact.name,
            f"{artifact.stat().st_size / 1e3:.0f} kB",
            f"{int8_accuracy:.1%}",
            f"{seconds:.1f} s",
            f"{b1['fp32_ms']:.3f} -> {b1['int8_ms']:.3f}",
            f"{b1['ratio']:.2f}x",
            f"{b32['fp32_ms']:.2f} -> {b32['int8_ms']:.2f}",
            f"{b32['ratio']:.2f}x",
        )
    Console(width=max(Console().width, 120)).print(table)
    print(f"artifacts and reports in {args.data}/ ; accuracy fp32 {fp32_accuracy:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
