"""A dynamic-shape ``.tflite`` against the static one, at the same shape: is the dynamic artifact as fast?

    .venv/bin/python models/bench_tflite_dynamic.py --out build/bench-tflite-dynamic \
        [--models mobilenet_v2_imagenet ...] [--rounds 5] [--models-dir models/build]

The zoo must be built first (``make -C models all``).

Per zoo model, qcc compiles the float model twice for ``tflite``: as exported (its symbolic dimensions
become -1 in the artifact's ``shape_signature``) and with every input pinned to the first calibration
sample's shape (``input_shapes``, the CLI's ``--input-shape``). Both run in LiteRT with XNNPACK on one
thread on that sample; rounds alternate dynamic and static, each taking the minimum of 30 invokes, and
the ratio dynamic / static of the medians is reported (1.0 = as fast; the acceptance bound is 1.1).
Writes ``OUT/report.json`` and prints one line per model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as h  # noqa: E402

DEFAULT_MODELS = ("mobilenet_v2_imagenet",)


def _compile(model: Path, calib: dict, **options) -> bytes:
    import qcc

    return qcc.compile(str(model), target="tflite", calibration=calib, **options).artifact.data


def bench(name: str, rounds: int, models_dir: Path) -> dict:
    """Compiles one zoo model both ways and times both artifacts (see module docstring)."""
    from ai_edge_litert.interpreter import Interpreter

    from qcc.backends._tflite_litert import latency_ms

    folder = models_dir / name
    with np.load(folder / "calib.npz") as data:
        calib = {k: data[k] for k in data.files}
    first = {k: v[0] for k, v in calib.items()}
    pinned = {k: tuple(int(d) for d in v.shape) for k, v in first.items()}
    dynamic = _compile(folder / "model.onnx", calib)
    static = _compile(folder / "model.onnx", calib, input_shapes=pinned)
    signature = [d["shape_signature"].tolist() for d in Interpreter(model_content=dynamic).get_input_details()]
    times: dict[str, list[float]] = {"dynamic": [], "static": []}
    for _ in range(rounds):
        times["dynamic"].append(latency_ms(dynamic, first))
        times["static"].append(latency_ms(static, first))
    medians = {k: statistics.median(v) for k, v in times.items()}
    return {
        "model": name,
        "input_shape_signature": signature,
        "shape": {k: list(v) for k, v in pinned.items()},
        "ms": {k: round(v, 3) for k, v in medians.items()},
        "dynamic_over_static": round(medians["dynamic"] / medians["static"], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/bench-tflite-dynamic")
    parser.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models-dir", type=Path, default=h.HERE / "build", help="folder of zoo model folders")
    args = parser.parse_args()
    rows = [bench(name, args.rounds, args.models_dir) for name in args.models]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(rows, indent=2))
    for row in rows:
        print(
            f"{row['model']}: signature {row['input_shape_signature']}, XNNPACK 1 thread "
            f"dynamic {row['ms']['dynamic']} ms, static {row['ms']['static']} ms, "
            f"dynamic/static {row['dynamic_over_static']}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
