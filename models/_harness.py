"""The machinery shared by zoo.py and bench.py: find models, compile in child processes, score, time.

One row per (model, tool). Every step that can crash runs in a child process: the compile (the qcc CLI,
``baseline_ort.py`` for the ORT anchor, ``baseline_modelopt.py`` in its own env for the ModelOpt anchor of the
trt target), the scoring of the artifact and the latency loop (``_score.py``). A failing child turns into
``ok: false`` and a one-line ``reason`` on its row; the run goes on. A tool that cannot run here (the ModelOpt
env is not built) gives rows with ``stage: "skipped"`` and the reason. The compile child is reaped with
``os.wait4``, whose rusage gives that child's own peak RSS (``ru_maxrss``).

Model folders follow models/README.md: ``model.onnx``, ``calib.npz``, ``eval.npz`` (and optionally
``reference.npz``). A folder whose name is not in ``evaluate.METRICS`` is scored by output cosine.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, os.fspath(HERE))
import evaluate  # noqa: E402

logger = logging.getLogger("zoo")

ANCHOR = "anchor-ort"
MODELOPT_ANCHOR = "anchor-modelopt"
MODELOPT_ANCHOR_MAX = "anchor-modelopt-max"
MODELOPT_PYTHON = HERE / ".venv-modelopt" / "bin" / "python"
# The runtime each target is meant for, where this machine has it. Other targets' .onnx artifacts run in ORT.
NATIVE_RUNTIMES = {"ort": "onnxruntime", "tflite": "litert"}


@dataclasses.dataclass(frozen=True)
class ZooModel:
    """One model folder: ``model.onnx``, ``calib.npz``, ``eval.npz``; ``metric`` names its METRICS entry."""

    name: str
    folder: Path
    metric: str

    @property
    def onnx(self) -> Path:
        return self.folder / "model.onnx"

    @property
    def calib(self) -> Path:
        return self.folder / "calib.npz"

    @property
    def eval(self) -> Path:
        return self.folder / "eval.npz"


class Kind(enum.Enum):
    """Which program a tool runs: the qcc CLI, baseline_ort.py or baseline_modelopt.py."""

    QCC = "qcc"
    ORT_ANCHOR = "ort-anchor"
    MODELOPT_ANCHOR = "modelopt-anchor"


@dataclasses.dataclass(frozen=True)
class Tool:
    """Something that turns a float model into an int8 artifact: qcc for one target, or an anchor.

    Attributes:
        name: the row's tool name (``qcc-ort``, ``qcc-trt-entropy``, ``anchor-ort``, ``anchor-modelopt``).
        target: the qcc target whose runtime the artifact is meant for.
        suffix: the artifact's file suffix.
        kind: the program that compiles.
        options: extra command-line options of that program (``-m entropy``, ``--calibration-method max``).
        python: the interpreter of an anchor that runs in its own env (ModelOpt); None = this one.
        skip_reason: why this tool cannot run here; its rows are skipped with this reason.
    """

    name: str
    target: str
    suffix: str
    kind: Kind = Kind.QCC
    options: tuple[str, ...] = ()
    python: Path | None = None
    skip_reason: str | None = None

    @property
    def is_anchor(self) -> bool:
        return self.kind is not Kind.QCC


def discover(models_dir: Path, only: Sequence[str] = ()) -> list[ZooModel]:
    """Returns the model folders under ``models_dir``, in zoo order (METRICS order, then by name).

    Raises:
        SystemExit: a name in ``only`` has no complete folder, or no folder is complete.
    """
    folders = (
        {
            p.name: p.resolve()
            for p in sorted(Path(models_dir).iterdir())
            if all((p / f).is_file() for f in ("model.onnx", "calib.npz", "eval.npz"))
        }
        if Path(models_dir).is_dir()
        else {}
    )
    missing = [name for name in only if name not in folders]
    if missing:
        raise SystemExit(
            f"error: no model folder with model.onnx, calib.npz and eval.npz for {', '.join(missing)} in "
            f"{models_dir}; known: {', '.join(folders) or 'none'}. Fix: build it (make -C models all)."
        )
    names = [n for n in evaluate.METRICS if n in folders] + [n for n in folders if n not in evaluate.METRICS]
    if only:
        names = [n for n in names if n in only]
    if not names:
        raise SystemExit(f"error: no model folders in {models_dir}. Fix: make -C models all.")
    return [ZooModel(n, folders[n], n if n in evaluate.METRICS else "output_cosine") for n in names]


def qcc_tools(targets: Sequence[str] = ()) -> list[Tool]:
    """Returns one tool per qcc target (all of ``qcc.targets()`` unless ``targets`` names some)."""
    import qcc

    return [qcc_tool(t) for t in (list(targets) or qcc.targets())]


def qcc_tool(target: str, method: str | None = None) -> Tool:
    """Returns qcc for one target, ``qcc-<target>``, or ``qcc-<target>-<method>`` with ``-m <method>``."""
    from qcc.backends import get_backend

    suffix = get_backend(target).spec.artifact_suffix
    if method is None:
        return Tool(f"qcc-{target}", target, suffix)
    return Tool(f"qcc-{target}-{method}", target, suffix, options=("-m", method))


def anchor_tool() -> Tool:
    """Returns the ORT anchor (baseline_ort.py: quantize_static QDQ U8S8, per-channel MinMax)."""
    return Tool(ANCHOR, "ort", ".onnx", Kind.ORT_ANCHOR)


def modelopt_tools(python: Path = MODELOPT_PYTHON) -> list[Tool]:
    """Returns the ModelOpt anchors of the trt target, run by ``python`` (baseline_modelopt.py, INT8).

    ``anchor-modelopt`` uses ModelOpt's default entropy calibration, ``anchor-modelopt-max`` its max
    calibration. When ``python`` does not exist, both carry a ``skip_reason`` naming the make target that
    builds it.
    """
    skip = None
    if not Path(python).exists():
        skip = f"ModelOpt environment not built: make -C models venv-modelopt (no {python})"
    common = {"target": "trt", "suffix": ".onnx", "kind": Kind.MODELOPT_ANCHOR, "python": Path(python)}
    return [
        Tool(MODELOPT_ANCHOR, **common, skip_reason=skip),
        Tool(MODELOPT_ANCHOR_MAX, **common, options=("--calibration-method", "max"), skip_reason=skip),
    ]


# ---------------------------------------------------------------------------------------------------- children


@dataclasses.dataclass
class ChildResult:
    """How a child process ended: returncode (negative = signal), wall seconds, peak RSS, stderr's gist."""

    returncode: int
    seconds: float
    peak_rss_mb: float
    reason: str | None


def run_child(
    cmd: Sequence[str], log_stem: Path, timeout: float, cwd: Path | None = None, on_start=None
) -> ChildResult:
    """Runs a command, stdout/stderr to ``<log_stem>.out`` / ``.err``, and reaps it with os.wait4.

    Returns:
        Its result; ``reason`` is None on exit 0, else the last line of stderr, the signal or the timeout.
    """
    log_stem.parent.mkdir(parents=True, exist_ok=True)
    timed_out = threading.Event()
    start = time.perf_counter()
    with open(f"{log_stem}.out", "wb") as out, open(f"{log_stem}.err", "wb") as err:
        proc = subprocess.Popen(list(map(os.fspath, cmd)), stdout=out, stderr=err, cwd=cwd)
        if on_start is not None:
            on_start(proc.pid)  # e.g. a sampler of the child's memory; it must not wait for the child
        lock, reaped = threading.Lock(), [False]

        def kill() -> None:
            with lock:
                if not reaped[0]:
                    timed_out.set()
                    os.kill(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            with lock:
                reaped[0] = True
            timer.cancel()
    seconds = time.perf_counter() - start
    returncode = os.waitstatus_to_exitcode(status)
    proc.returncode = returncode  # reaped here; keeps Popen from waiting on a pid that is gone
    reason = None
    if timed_out.is_set():
        reason = f"timed out after {timeout:.0f} s"
    elif returncode < 0:
        reason = f"killed by {signal.Signals(-returncode).name}"
    elif returncode:
        lines = [line.strip() for line in Path(f"{log_stem}.err").read_text(errors="replace").splitlines()]
        lines = [line for line in lines if line]
        reason = f"exit {returncode}: {lines[-1] if lines else 'no message'}"[:400]
    return ChildResult(returncode, round(seconds, 2), round(usage.ru_maxrss / 1024, 1), reason)


def _score_child(args: Sequence[str], log_stem: Path, timeout: float) -> tuple[dict | None, str | None]:
    out = Path(f"{log_stem}.json")
    out.unlink(missing_ok=True)
    child = run_child([sys.executable, HERE / "_score.py", *args, "--out", out], log_stem, timeout)
    if child.reason:
        return None, child.reason
    try:
        return json.loads(out.read_text()), None
    except (OSError, ValueError) as error:
        return None, f"unreadable result: {error!r}"[:400]


# ---------------------------------------------------------------------------------------------------- one model


def _command(model: ZooModel, tool: Tool, artifact: Path, report: Path) -> list:
    """The compile command of one tool on one model."""
    if tool.kind is Kind.ORT_ANCHOR:
        return [sys.executable, HERE / "baseline_ort.py", model.onnx, model.calib, artifact, *tool.options]
    if tool.kind is Kind.MODELOPT_ANCHOR:
        return [tool.python, HERE / "baseline_modelopt.py", model.onnx, model.calib, artifact, *tool.options]
    return [
        *(Path(sys.executable).with_name("qcc"), "compile", model.onnx, "--target", tool.target),
        *("--calib", model.calib, "-o", artifact, "--report", report, *tool.options),
    ]


def _anchor_failure(stdout: Path) -> str | None:
    """The ``failed`` field of an anchor's JSON result (baseline_modelopt.py exits 0 when modelopt raises)."""
    try:
        failed = json.loads(stdout.read_text()).get("failed")
    except (OSError, ValueError, AttributeError):
        return None
    return f"modelopt: {failed}"[:400] if failed else None


def _compile(model: ZooModel, tool: Tool, work: Path, timeout: float) -> dict:
    """Compiles with one tool in a child process; returns the row (ok False + reason on failure)."""
    artifact = work / f"{tool.name}{tool.suffix}"
    artifact.unlink(missing_ok=True)
    row = {
        "model": model.name,
        "tool": tool.name,
        "target": tool.target,
        "artifact": os.fspath(artifact),
        "native_runtime": tool.target in NATIVE_RUNTIMES,
    }
    if tool.skip_reason:
        return {**row, "artifact": None, "compile": None, "ok": False, "stage": "skipped", "reason": tool.skip_reason}
    report = work / f"{tool.name}.report.json"
    stdout = work / f"{tool.name}.compile.out"
    # A scratch working directory: quant_pre_process leaves temp files (model-sized *.data) in it.
    with tempfile.TemporaryDirectory(dir=work, prefix=".compile.") as scratch:
        child = run_child(
            _command(model, tool, artifact, report), work / f"{tool.name}.compile", timeout, Path(scratch)
        )
    row["compile"] = {"seconds": child.seconds, "peak_rss_mb": child.peak_rss_mb, "returncode": child.returncode}
    if child.reason is None and not artifact.is_file():
        child.reason = _anchor_failure(stdout) or "exit 0 but no artifact was written"
    if child.reason:
        return {**row, "ok": False, "stage": "compile", "reason": child.reason}
    row["size_mb"] = round(artifact.stat().st_size / 1e6, 3)
    try:
        if tool.is_anchor:
            row["anchor"] = json.loads(stdout.read_text())
        else:
            row["qcc"] = _qcc_summary(json.loads(report.read_text()))
    except (OSError, ValueError, KeyError) as error:
        return {**row, "ok": False, "stage": "compile", "reason": f"unreadable compile result: {error!r}"[:400]}
    return {**row, "ok": True, "stage": None, "reason": None}


def _qcc_summary(report: dict) -> dict:
    """The parts of a qcc report a zoo table shows."""
    totals, verify = report["totals"], report.get("verify") or {}
    return {
        "activation_dtype": report.get("activation_dtype"),
        "int8": totals["int8"],
        "fused": totals["fused"],
        "float": totals["float"],
        "float_reasons": totals["float_reasons"],
        "verify_ok": verify.get("ok"),
        "integer_kernels": verify.get("integer_kernels"),
        "quantized_but_float": len(verify.get("quantized_but_float") or []),
        "timings": report.get("timings", {}),
    }


def measure_model(
    model: ZooModel, tools: Sequence[Tool], out: Path, repeats: int, timeout: float, step: str = ""
) -> list[dict]:
    """Compiles the model with every tool, scores each artifact, then times them all interleaved.

    Returns:
        One row per tool: model, tool, target, artifact, ok, stage/reason (where it failed), compile
        {seconds, peak_rss_mb}, size_mb, fidelity, headline, output_cosine, census, float_compute_left,
        runtime, latency {fp32_ms, int8_ms, speedup} (or latency_error), and qcc or anchor details.
    """
    work = out.resolve() / model.name
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for tool in tools:
        row = _compile(model, tool, work, timeout)
        if row["ok"]:
            scored, reason = _score_child(
                [
                    "score",
                    "--model-dir",
                    model.folder,
                    "--metric",
                    model.metric,
                    "--artifact",
                    row["artifact"],
                    "--fp32-cache",
                    work / "fp32_outputs.npz",
                    # TensorRT artifacts (qcc's, ModelOpt's) are scored as TensorRT computes them, not
                    # through ONNX Runtime's integer fusion (no GPU here; _score.ort_runner).
                    *(["--simulate"] if tool.target == "trt" else []),
                ],
                work / f"{tool.name}.score",
                timeout,
            )
            if reason:
                row.update(ok=False, stage="run", reason=reason)
            else:
                row.update(scored)
        _log_row(step, row)
        rows.append(row)
    ran = [r for r in rows if r["ok"]]
    if ran:
        timed, reason = _score_child(
            [
                "latency",
                "--model-dir",
                model.folder,
                "--repeats",
                str(repeats),
                *[a for r in ran for a in ("--artifact", r["artifact"])],
            ],
            work / "latency",
            timeout,
        )
        for row in ran:
            if reason:
                row["latency_error"] = reason
            else:
                row["latency"] = {"fp32_ms": timed["fp32_ms"], **timed["artifacts"][row["artifact"]]}
        logger.info(
            "%s %s latency: fp32 %s ms; %s",
            step,
            model.name,
            timed and timed["fp32_ms"],
            reason or ", ".join(f"{r['tool']} {r['latency']['int8_ms']} ms ({r['latency']['speedup']}x)" for r in ran),
        )
    return rows


def _log_row(step: str, row: dict) -> None:
    if row["stage"] == "skipped":
        logger.info("%s %s %s: skipped: %s", step, row["model"], row["tool"], row["reason"])
        return
    if not row["ok"]:
        logger.warning("%s %s %s: FAILED at %s: %s", step, row["model"], row["tool"], row["stage"], row["reason"])
        return
    key, value = row["headline"] or ("-", "-")
    logger.info(
        "%s %s %s: compiled in %.1f s (peak %.0f MB), %.2f MB, %s %s, cosine %s",
        step,
        row["model"],
        row["tool"],
        row["compile"]["seconds"],
        row["compile"]["peak_rss_mb"],
        row["size_mb"],
        key,
        value,
        row["output_cosine"]["cosine_mean"],
    )


def run_all(models: Sequence[ZooModel], tools: Sequence[Tool], out: Path, repeats: int, timeout: float) -> list:
    """Runs measure_model on every model; returns all rows."""
    rows = []
    for i, model in enumerate(models, 1):
        rows.extend(measure_model(model, tools, out, repeats, timeout, step=f"[{i}/{len(models)}]"))
    return rows


def stand_in_note(rows: Sequence[dict]) -> str | None:
    """A sentence naming the targets whose artifacts ran in a stand-in runtime (trt in ORT), None if none."""
    targets = sorted({r["target"] for r in rows if r["target"] not in NATIVE_RUNTIMES})
    if not targets:
        return None
    return (
        f"No runtime for {', '.join(targets)} here: those .onnx artifacts ran in ONNX Runtime, which checks that "
        "they run and how faithful they are, but their latency says nothing about their own runtime."
    )


def environment() -> dict:
    """Versions and machine facts recorded in every report."""
    import numpy
    import onnxruntime

    import qcc

    return {
        "python": sys.version.split()[0],
        "qcc": qcc.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


# ---------------------------------------------------------------------------------------------------- CLI + format


def arguments(description: str, repeats: int) -> argparse.ArgumentParser:
    """The options zoo.py and bench.py share."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, required=True, help="output folder (artifacts, logs, reports)")
    parser.add_argument("--models-dir", type=Path, default=HERE / "build", help="folder of model folders")
    parser.add_argument("--only", action="append", default=[], metavar="NAME", help="only this model (repeatable)")
    parser.add_argument("--target", action="append", default=[], help="only this qcc target (default: all)")
    parser.add_argument("--repeats", type=int, default=repeats, help="timed runs per model and artifact")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds before a child process is killed")
    return parser


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")


# Short names of the headline metrics, for table cells.
LABELS = {
    "top1_agreement": "top-1",
    "box_f1": "box F1",
    "mask_iou": "mask IoU",
    "exact_agreement": "exact",
    "nn_agreement": "NN",
    "decision_agreement": "decision",
    "cosine_mean": "cos",
}


def headline_value(row: dict) -> float | None:
    """The row's headline fidelity number (see _score.HEADLINE_KEYS), None when it did not run."""
    return row["headline"][1] if row.get("ok") and row.get("headline") else None


def fidelity_cell(row: dict) -> str:
    """'top-1 0.790' for a row that ran, '-' otherwise."""
    if not row.get("ok") or not row.get("headline"):
        return "-"
    key, value = row["headline"]
    return f"{LABELS.get(key, key)} {fmt(value)}"


def fmt(value, digits: int = 3) -> str:
    """A number for a Markdown cell; '-' for None."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def write_report(out: Path, report: dict, markdown: str) -> None:
    """Writes report.json and report.md into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown)
