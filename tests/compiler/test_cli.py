"""The CLI end to end, as a user runs it: exit codes, one-line errors, untouched inputs."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest

from tests.conftest import random_feeds
from tests.e2e.synthetic import synthetic_model

QCC = [sys.executable, "-m", "qcc.cli"]


def qcc_run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*QCC, *args], capture_output=True, text=True, timeout=120)


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def model_and_calib(tmp_path):
    model = synthetic_model("residual_cnn")
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=np.stack([f["x"] for f in random_feeds(model, 8)]))
    return tmp_path / "m.onnx", tmp_path / "calib.npz"


def test_compile_writes_artifact_and_report(model_and_calib, tmp_path):
    model, calib = model_and_calib
    before = digest(model)
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    proc = qcc_run(
        "compile", str(model), "--calib", str(calib), "-o", str(out), "--report", str(report), "--verify-each"
    )
    assert proc.returncode == 0, proc.stderr
    assert "verify ok" in proc.stdout
    assert digest(model) == before
    data = json.loads(report.read_text())
    assert data["verify"]["ok"] and data["totals"]["int8"] > 0
    onnx.checker.check_model(onnx.load(out))
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing_model", "does not exist"),
        ("garbage_model", "not an ONNX model"),
        ("missing_calib", "does not exist"),
        ("wrong_input_name", "not model inputs"),
        ("nan_calib", "NaN or Inf"),
        ("output_is_input", "never overwrites its inputs"),
        ("missing_folder", "does not exist"),
        ("bad_target", "--target 'nope' is not a valid choice"),
        ("bad_activation_type", "--activation-type 'int4' is not a valid choice"),
        ("bad_input_shape", "is not NAME=SIZES"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_leaves_no_trace(model_and_calib, tmp_path, case, message):
    model, calib = model_and_calib
    out = tmp_path / "out.onnx"
    args = ["compile", str(model), "--calib", str(calib), "-o", str(out)]
    if case == "missing_model":
        args[1] = str(tmp_path / "nope.onnx")
    elif case == "garbage_model":
        (tmp_path / "garbage.onnx").write_bytes(b"\x08\x01garbage" * 10)
        args[1] = str(tmp_path / "garbage.onnx")
    elif case == "missing_calib":
        args[3] = str(tmp_path / "nope.npz")
    elif case == "wrong_input_name":
        np.savez(tmp_path / "bad.npz", image=np.zeros((2, 1, 3, 16, 16), np.float32))
        args[3] = str(tmp_path / "bad.npz")
    elif case == "nan_calib":
        np.savez(tmp_path / "bad.npz", x=np.full((2, 1, 3, 16, 16), np.nan, np.float32))
        args[3] = str(tmp_path / "bad.npz")
    elif case == "output_is_input":
        args[5] = str(model)
    elif case == "missing_folder":
        args[5] = str(tmp_path / "no" / "such" / "out.onnx")
    elif case == "bad_target":
        args += ["--target", "nope"]
    elif case == "bad_activation_type":
        args += ["--activation-type", "int4"]
    elif case == "bad_input_shape":
        args += ["--input-shape", "x=1,3,a,16"]
    before = digest(model)
    proc = qcc_run(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert digest(model) == before
    assert not out.exists()
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


def test_input_shape_pins_a_static_tflite(model_and_calib, tmp_path):
    from qcc.backends._tflite_litert import interpreter

    model, calib = model_and_calib
    out, report = tmp_path / "m.tflite", tmp_path / "report.json"
    proc = qcc_run(
        "compile", str(model), "-c", str(calib), "-t", "tflite", "-o", str(out), "--report", str(report),
        "--input-shape", "x=1,3,16,16",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (detail,) = interpreter(out.read_bytes()).get_input_details()
    assert list(detail["shape_signature"]) == [1, 3, 16, 16]
    assert json.loads(report.read_text())["options"]["input_shapes"] == {"x": [1, 3, 16, 16]}
    assert "--input-shape" in qcc_run("compile", "--help").stdout
    # inspect reads the .tflite it wrote: per node int8 or float, per tensor scale and zero point
    proc = qcc_run("inspect", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["kind"] == "tflite" and info["totals"]["nodes"] == len(info["nodes"])
    assert any(n["precision"] == "int8" for n in info["nodes"])


def test_inspect_and_targets(model_and_calib):
    model, _ = model_and_calib
    proc = qcc_run("inspect", str(model), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["targets"]["ort"]["int8"] > 0
    assert data["model"]["inputs"][0]["name"] == "x"
    proc = qcc_run("targets")
    assert proc.returncode == 0 and "ort" in proc.stdout


def test_trt_compile_writes_calibration_cache_and_check_passes(model_and_calib, tmp_path):
    model, calib = model_and_calib
    out, cache = tmp_path / "m.trt.onnx", tmp_path / "m.cache"
    proc = qcc_run("compile", str(model), "-t", "trt", "-c", str(calib), "-o", str(out), "--calib-cache", str(cache))
    assert proc.returncode == 0, proc.stderr
    assert cache.read_text().startswith("TRT-")
    proc = qcc_run("check", "--target", "trt", str(out))
    assert proc.returncode == 0 and "0 error(s)" in proc.stdout


def test_check_rejects_an_ort_uint8_model(model_and_calib, tmp_path):
    model, calib = model_and_calib
    out = tmp_path / "m.ort.onnx"
    assert (
        qcc_run("compile", str(model), "-c", str(calib), "-o", str(out), "--activation-type", "uint8").returncode == 0
    )
    proc = qcc_run("check", "--target", "trt", str(out))
    assert proc.returncode == 1 and "zero-point" in proc.stdout


def test_dynamic_compile_needs_no_calibration_file(tmp_path):
    model = synthetic_model("transformer_block")
    onnx.save(model, tmp_path / "m.onnx")
    out = tmp_path / "out.onnx"
    proc = qcc_run("compile", str(tmp_path / "m.onnx"), "--dynamic", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "verify ok" in proc.stdout and "not compared" in proc.stdout
    kinds = {n.op_type for n in onnx.load(out).graph.node}
    assert "DynamicQuantizeLinear" in kinds and "MatMulInteger" in kinds


def test_static_compile_without_calibration_is_a_one_line_error(tmp_path):
    model = synthetic_model("residual_cnn")
    onnx.save(model, tmp_path / "m.onnx")
    proc = qcc_run("compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "out.onnx"))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: calibration data is required") and "Traceback" not in proc.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_tolerance_and_mode_selection_are_reported(tmp_path):
    from tests.passes.test_mixed_precision import _calibration, _sensitive_model

    model = _sensitive_model()
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", **_calibration(model))
    out = tmp_path / "o.onnx"
    proc = qcc_run(
        "compile", str(tmp_path / "m.onnx"), "-c", str(tmp_path / "c.npz"), "-o", str(out), "--tolerance", "1e-7"
    )
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())  # rich wraps long lines
    assert "above the bound 1e-07" in text or "within the bound 1e-07" in text
    assert "mode: " in text and "kept (output error static" in text
    proc = qcc_run(
        "compile", str(tmp_path / "m.onnx"), "-c", str(tmp_path / "c.npz"), "-o", str(out), "--tolerance", "off"
    )
    assert proc.returncode == 0 and "tolerance:" not in proc.stdout and "mode: " not in proc.stdout


# --- issue 18: version, one error style, --json everywhere, start-up, output suffix, --strict, inspect ----

HEAVY = ("onnx", "onnx_ir", "onnxruntime", "numpy", "ml_dtypes")


def qcc_main(capsys, *args: str) -> subprocess.CompletedProcess:
    """Runs the CLI's entry point in this process (the parser's errors need no subprocess)."""
    from qcc.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(["qcc", *args], exit_.value.code, out.out, out.err)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The single `error: <problem> Fix: <remedy>` line of a failed run (exit 2), checked."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and " Fix: " in lines[0], proc.stderr
    assert "╭" not in proc.stderr and "Traceback" not in proc.stderr
    return lines[0]


def test_version_prints_the_package_version():
    import qcc

    proc = qcc_run("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"qcc {qcc.__version__}\n"


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["--version"],
        ["compile", "{tmp}/missing.onnx", "-t", "ort", "--calib", "{tmp}/x.npz", "-o", "{tmp}/x.onnx"],
        ["compile", "m.onnx", "-o", "x.onnx", "-t", "tensorrt"],
    ],
)
def test_start_up_and_early_errors_import_nothing_heavy(tmp_path, args):
    # Start-up time itself is measured by models/bench_startup.py; here, what makes it slow.
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = subprocess.run([sys.executable, "-X", "importtime", *QCC[1:], *args], capture_output=True, text=True)
    assert proc.returncode in (0, 2), proc.stderr
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert imported and not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_import_qcc_is_lazy_but_complete():
    code = (
        "import sys, qcc\n"
        f"assert not set({HEAVY!r}) & set(sys.modules), 'heavy import'\n"
        "from qcc import CompileOptions, CompileResult, QccError, compile, targets\n"
        "assert qcc.compile is compile and callable(compile) and CompileResult.__name__ == 'CompileResult'\n"
        "assert CompileOptions(target='trt').target == 'trt' and issubclass(qcc.OptionError, QccError)\n"
        "from qcc import StrictError\n"
        "assert issubclass(StrictError, QccError) and StrictError.exit_code == 3 and 'StrictError' in qcc.__all__\n"
        "print(','.join(targets()))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ort,trt,tflite"


def test_cli_target_list_is_the_backends():
    from qcc.backends import target_names
    from qcc.cli import Target
    from qcc.io import ARTIFACT_SUFFIXES

    assert [t.value for t in Target] == target_names() == list(ARTIFACT_SUFFIXES)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-t", "tensorrt"], "use --target trt"),
        (["-t", "TensorRT"], "use --target trt"),
        (["-t", "onnxruntime"], "use --target ort"),
        (["--target=litert"], "use --target tflite"),
        (["-ttf-lite"], "use --target tflite"),
        (["-m", "kl"], "use --method entropy"),
        (["--method", "kl-divergence"], "use --method entropy"),
        (["-m", "minmx"], "use --method minmax"),
        (["--precision", "float8"], "use --precision fp8"),
        (["-m", "zzz"], "use one of: auto, minmax, meanmax, percentile, mse, entropy"),
        (["--calibration", "c.npz"], "did you mean --calib?"),
        (["--max-samples", "many"], "invalid value for --max-samples"),
    ],
)
def test_usage_errors_are_one_line_with_did_you_mean(capsys, args, expected):
    line = one_error_line(qcc_main(capsys, "compile", "m.onnx", "-o", "x.onnx", *args))
    assert expected in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["compile", "m.onnx"], "qcc compile needs --output/-o"),
        (["compile"], "qcc compile needs MODEL"),
        (["compil", "m.onnx"], "did you mean compile?"),
        (["inspect", "m.onnx", "--jsn"], "did you mean --json?"),
        (["compile", "a.onnx", "b.onnx", "-o", "x.onnx"], "unexpected extra argument"),
        (["compile", "m.onnx", "-o"], "option -o needs a value"),
    ],
)
def test_missing_and_unknown_arguments_are_one_line(capsys, args, expected):
    assert expected in one_error_line(qcc_main(capsys, *args))


def test_help_still_teaches():
    proc = qcc_run("compile", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for words in ("ort|trt|tflite", "--strict", "--json", "entropy", "exit code 3"):
        assert words in text, words
    top = " ".join(qcc_run("--help").stdout.split())
    assert "--version" in top and "Exit codes" in top
    assert "--json-out" in qcc_run("analyze", "--help").stdout


def test_help_prose_is_wrapped_by_the_terminal_not_by_the_source():
    """A paragraph of a command's docstring spans several source lines; the help must not keep
    those breaks (at 80 columns each source line then wrapped on its own, in two)."""
    proc = subprocess.run(
        [*QCC, "compile", "--help"], capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "300"}
    )
    assert proc.returncode == 0
    assert "--strict turns the ones that mean a weaker artifact than asked" in proc.stdout
    lines = [line.strip() for line in proc.stdout.splitlines()]
    assert "qcc compile resnet.onnx -t ort -c calib.npz -o resnet.int8.onnx" in lines  # examples: one per line


@pytest.mark.parametrize(
    "args",
    [
        ["compile", "{tmp}/missing.onnx", "-o", "{tmp}/x.onnx", "--json"],  # a QccError
        ["compile", "m.onnx", "-o", "x.onnx", "-m", "kl", "--json"],  # a usage error
        ["inspect", "{tmp}/missing.onnx", "--json"],
        ["analyze", "{tmp}/missing.onnx", "-c", "{tmp}/c.npz", "--json"],
        ["check", "{tmp}/missing.onnx", "--json"],
    ],
)
def test_json_errors_are_one_object_on_stdout(capsys, tmp_path, args):
    proc = qcc_main(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert proc.returncode == 2, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) == {"error", "fix", "exit_code"} and data["exit_code"] == 2
    assert data["error"] and data["fix"]


@pytest.mark.parametrize(
    ("target", "name", "fixed"),
    [("tflite", "x.onnx", "x.tflite"), ("ort", "x.tflite", "x.onnx"), ("trt", "y.TFLITE", "y.onnx")],
)
def test_output_suffix_must_match_the_target(model_and_calib, tmp_path, target, name, fixed):
    model, calib = model_and_calib
    proc = qcc_run("compile", str(model), "-c", str(calib), "-t", target, "-o", str(tmp_path / name))
    line = one_error_line(proc)
    assert f"Fix: name the output {tmp_path / fixed}." in line
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize(
    ("path", "target", "ok"),
    [
        ("m.onnx", "ort", True),
        ("m.onnx", "trt", True),
        ("m.tflite", "tflite", True),
        ("m.int8", "tflite", True),  # not another target's suffix: the user's choice
        ("dir.onnx/m", "tflite", True),
        ("m.onnx", "tflite", False),
        ("m.ONNX", "tflite", False),
        ("m.tflite", "ort", False),
        ("m.tflite", "trt", False),
    ],
)
def test_check_output_suffix(path, target, ok):
    from qcc.errors import OutputError
    from qcc.io import check_output_suffix

    if ok:
        check_output_suffix(path, target)
    else:
        with pytest.raises(OutputError, match="Fix: name the output m.(onnx|tflite)"):
            check_output_suffix(path, target)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """One `compile --json` of the residual CNN for ort, shared by the tests that read its output."""
    folder = tmp_path_factory.mktemp("compiled")
    model = synthetic_model("residual_cnn")
    onnx.save(model, folder / "m.onnx")
    np.savez(folder / "calib.npz", x=np.stack([f["x"] for f in random_feeds(model, 8)]))
    out = folder / "m.int8.onnx"
    proc = qcc_run("compile", str(folder / "m.onnx"), "-c", str(folder / "calib.npz"), "-o", str(out), "--json")
    return folder, out, proc


def test_compile_json_is_one_object_with_the_report(compiled):
    folder, out, proc = compiled
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)  # nothing else on stdout
    assert data["schema_version"] == 1 and data["exit_code"] == 0
    assert data["output"] == str(out) and data["files"] == [str(out)] and out.exists()
    assert data["report"]["totals"]["int8"] > 0 and data["report"]["verify"]["ok"]
    assert data["warnings"] == data["report"].get("warnings", [])


def test_inspect_json_reads_a_quantized_onnx_and_a_float_one(compiled):
    folder, out, _ = compiled
    proc = qcc_run("inspect", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["kind"] == "qdq-onnx" and {"schema_version", "nodes", "tensors", "totals"} <= set(info)
    assert any(n["op"] == "Conv" and n["precision"] == "int8" for n in info["nodes"])
    float_info = json.loads(qcc_run("inspect", str(folder / "m.onnx"), "--json").stdout)
    assert float_info["schema_version"] == 1 and float_info["kind"] == "float-onnx"
    assert float_info["targets"]["ort"]["int8"] > 0


def test_check_and_targets_json(compiled):
    _, out, _ = compiled
    proc = qcc_run("check", str(out), "--json")
    data = json.loads(proc.stdout)
    # an ort artifact with uint8 activations breaks TensorRT's zero-point rule: exit 1
    assert proc.returncode == data["exit_code"] == 1 and data["errors"] > 0 and data["target"] == "trt"
    assert all(set(v) == {"severity", "rule", "node", "message"} for v in data["violations"])
    assert any(v["rule"] == "zero-point" for v in data["violations"])
    proc = qcc_run("targets", "--json")
    assert proc.returncode == 0
    data = json.loads(proc.stdout)
    assert [t["name"] for t in data["targets"]] == ["ort", "trt", "tflite"]
    assert data["targets"][2]["artifact_suffix"] == ".tflite" and all(t["description"] for t in data["targets"])


def test_analyze_json_is_a_flag_and_json_out_a_file(compiled, tmp_path):
    folder, _, _ = compiled
    out = tmp_path / "tensors.json"
    proc = qcc_run("analyze", str(folder / "m.onnx"), "-c", str(folder / "calib.npz"), "--json", "--json-out", str(out))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["schema_version"] == 1 and data["files"] == [str(out)] and data["tensors"]
    assert json.loads(out.read_text())["tensors"] == data["tensors"]


def test_analyze_table_ranks_no_excluded_node_and_lists_it_apart(compiled):
    folder, _, _ = compiled
    proc = qcc_run("analyze", str(folder / "m.onnx"), "-c", str(folder / "calib.npz"), "-x", "MaxPool", "--top", "20")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # the MaxPool "p" is float: listed on a line of its own, not among the ranked rows
    excluded = [line for line in lines if line.startswith("excluded")]
    assert len(excluded) == 1 and re.fullmatch(r"excluded \(--exclude\), not ranked: p drop -?\d+\.\d dB", excluded[0])
    assert not any(re.match(r"\W+p\s+\W+\s*MaxPool", line) for line in lines)


@pytest.fixture
def float_only_model(tmp_path):
    """A model no target has an int8 kernel for: its compile quantizes nothing (a warning)."""
    model = onnx.parser.parse_model(
        '<ir_version: 8, opset_import: ["" : 17]> g (float[1,4] x) => (float[1,4] y) { s = Sin(x)  y = Cos(s) }'
    )
    onnx.save(model, tmp_path / "sin.onnx")
    np.savez(tmp_path / "sin.npz", x=np.random.default_rng(0).random((4, 1, 4), np.float32))
    return tmp_path / "sin.onnx", tmp_path / "sin.npz"


def test_warnings_are_printed_and_strict_exits_3_after_writing(float_only_model, tmp_path):
    model, calib = float_only_model
    out = tmp_path / "sin.int8.onnx"
    proc = qcc_run("compile", str(model), "-c", str(calib), "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [w["code"] for w in data["warnings"]] == ["nothing_quantized"] and data["exit_code"] == 0
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "int8 kernel" in warnings[0]
    out.unlink()
    proc = qcc_run("compile", str(model), "-c", str(calib), "-o", str(out), "--strict")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert out.exists() and "warning: " in proc.stderr and "nothing_quantized" in proc.stderr


def test_tune_prints_the_trade_off_and_a_compile_that_lands_on_it(tmp_path):
    """Error against predicted latency, one line per unit floated, and the compile command for the
    cheapest step within --tolerance: run, it keeps exactly that many nodes float."""
    from tests.passes.test_mixed_precision import _costly_model

    model = _costly_model()
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=np.stack([f["x"] for f in random_feeds(model, 8)]))
    before = digest(tmp_path / "m.onnx")
    calib = str(tmp_path / "calib.npz")
    run = qcc_run("tune", str(tmp_path / "m.onnx"), "-t", "ort", "-c", calib, "--tolerance", "0.02")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    rows = [line.split() for line in lines[1 : lines.index(next(ln for ln in lines if ln.startswith("cheapest")))]]
    floats = [int(r[0]) for r in rows]
    speedups = [float(r[2].rstrip("x")) for r in rows]
    errors = [float(r[3]) for r in rows]
    assert floats[0] == 0 and floats == sorted(floats) and len(rows) >= 3
    assert speedups == sorted(speedups, reverse=True) and errors[0] > 0.02 > errors[-1]
    command = lines[-1].split()
    assert command[:2] == ["qcc", "compile"] and "--latency-budget" in command
    step = int(lines[-2].split(": ")[1].split()[0])
    args = [str(tmp_path / "out.onnx") if a == "OUT" else a for a in command[2:]]
    compiled = qcc_run("compile", *args, "--report", str(tmp_path / "r.json"))
    assert compiled.returncode == 0, compiled.stderr
    section = json.loads((tmp_path / "r.json").read_text())["mixed_precision"]
    assert section["met"] and len(section["kept_float"]) == step
    assert digest(tmp_path / "m.onnx") == before and not (tmp_path / "OUT").exists()


def test_tune_names_the_target_it_prices(model_and_calib):
    model, calib = model_and_calib
    run = qcc_run("tune", str(model), "-t", "trt", "-c", str(calib))
    assert run.returncode == 2 and "use --target ort" in run.stderr and "Traceback" not in run.stderr
