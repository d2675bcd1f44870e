"""Large-model benchmark: a float model above protobuf's 2 GB limit, compiled by qcc for ort and trt.

    .venv/bin/python models/bench_large.py --out build/bench-large [--width 14336] [--layers 3]

Builds (once, in ``OUT/model/``) an MLP of ``layers`` MatMul + Relu layers of ``width x width``
float32 weights stored as ONNX external data (the default is 2.47 GB), then compiles it in a child
process per target and records wall time, the child's peak RSS (``os.wait4``) and its peak
anonymous (private) memory, sampled from ``/proc/<pid>/smaps_rollup``. Read the anonymous peak
against the model size: qcc and ONNX Runtime both memory-map the weights from the external data
file (ONNX Runtime through a hard link), and RSS counts those shared, reclaimable file pages once
per mapping, so the RSS peak says more about the kernel's accounting than about memory used.
``ort`` writes int8 weights (about a quarter of the size, one file); ``trt`` keeps float weights
behind Q/DQ, so its artifact is written as ``model.trt.onnx`` plus ``model.trt.onnx.data``. Each
artifact is then loaded by ONNX Runtime from its path and run once. Writes ``OUT/report.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as h  # noqa: E402

QCC = Path(sys.executable).with_name("qcc")


def build(folder: Path, width: int, layers: int) -> tuple[Path, Path]:
    """Writes the model (external data) and a 4-sample calibration file; reuses them when present."""
    model, calib = folder / "model.onnx", folder / "calib.npz"
    if model.exists() and calib.exists():
        return model, calib
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    initializers, nodes, x = [], [], "x"
    for i in range(layers):
        weight = rng.standard_normal((width, width), dtype=np.float32) / np.float32(np.sqrt(width))
        initializers.append(numpy_helper.from_array(weight, f"w{i}"))
        del weight
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"h{i}"]))
        x = f"h{i}"
        if i < layers - 1:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"]))
            x = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "large_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, width])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 4, width])],
        initializers,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.save_model(proto, model, save_as_external_data=True, location="model.onnx.data")
    np.savez(calib, x=rng.standard_normal((4, 1, 4, width)).astype(np.float32))
    return model, calib


class _AnonymousPeak:
    """Samples a process's private (anonymous) memory every 50 ms until it exits."""

    def __init__(self) -> None:
        self.peak_mb = 0.0

    def watch(self, pid: int) -> None:
        threading.Thread(target=self._sample, args=(pid,), daemon=True).start()

    def _sample(self, pid: int) -> None:
        path = f"/proc/{pid}/smaps_rollup"
        while True:
            try:
                with open(path) as f:
                    for line in f:
                        if line.startswith("Anonymous:"):
                            self.peak_mb = max(self.peak_mb, int(line.split()[1]) / 1024)
            except OSError:
                return  # the process is gone
            time.sleep(0.05)


def run_artifact(path: Path, calib: Path) -> dict:
    """Loads an artifact from its path in ONNX Runtime and runs one sample."""
    start = time.perf_counter()
    sess = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"x": np.load(calib)["x"][0]})[0]
    return {"ran": bool(np.all(np.isfinite(out))), "load_and_run_seconds": round(time.perf_counter() - start, 2)}


def main() -> None:
    """Builds the model, compiles it for ort and trt, writes the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/bench-large"))
    parser.add_argument("--width", type=int, default=14336)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = args.out / "model"
    if args.build_only:
        build(folder, args.width, args.layers)
        return
    h.setup_logging()
    # Built in a child: a child's peak RSS counts its parent's memory at fork, so the parent stays small.
    cmd = [sys.executable, __file__, "--out", args.out, "--width", args.width, "--layers", args.layers, "--build-only"]
    built = h.run_child(list(map(str, cmd)), args.out / "build", args.timeout)
    if built.returncode:
        raise SystemExit(f"building the model failed: {built.reason}")
    model, calib = folder / "model.onnx", folder / "calib.npz"
    model_bytes = model.stat().st_size + (model.parent / "model.onnx.data").stat().st_size
    rows = []
    for target in ("ort", "trt"):
        artifact = args.out / f"model.{target}.onnx"
        report = args.out / f"model.{target}.report.json"
        cmd = [QCC, "compile", model, "-t", target, "-c", calib, "-o", artifact, "--report", report]
        anonymous = _AnonymousPeak()
        child = h.run_child(cmd, args.out / f"compile.{target}", args.timeout, on_start=anonymous.watch)
        row = {"target": target, "ok": child.returncode == 0, "reason": child.reason, "seconds": child.seconds,
               "peak_rss_mb": child.peak_rss_mb, "peak_rss_over_model": round(child.peak_rss_mb * 1e6 / model_bytes, 2),
               "peak_anonymous_mb": anonymous.peak_mb,
               "peak_anonymous_over_model": round(anonymous.peak_mb * 1e6 / model_bytes, 2)}
        if row["ok"]:
            files = [artifact, Path(f"{artifact}.data")]
            row["artifact_mb"] = round(sum(f.stat().st_size for f in files if f.exists()) / 1e6, 1)
            row["external_data"] = files[1].exists()
            row["verify_ok"] = json.loads(report.read_text())["verify"]["ok"]
            row.update(run_artifact(artifact, calib))
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {"model_mb": round(model_bytes / 1e6, 1), "width": args.width, "layers": args.layers, "rows": rows,
               "environment": h.environment()}
    (args.out / "report.json").write_text(json.dumps(summary, indent=2))
    print(f"model {summary['model_mb']} MB; report in {args.out / 'report.json'}")


if __name__ == "__main__":
    main()
