"""``report["cost"]``: what one compile cost, counted exactly and per compile.

Each count is checked against a spy that counts the same thing from outside qcc's counter: ONNX
Runtime sessions and runs through a subclass of ``onnxruntime.InferenceSession`` (whether a session's
model is quantized is read from the model ONNX Runtime was given), pipeline runs through the
driver's ``run_pipeline``, compiles through the frontend's ``load`` and simulation runs through
``Simulation.run``. The spies only count and call through.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading

import numpy as np
import onnx
import onnxruntime
import pytest
from ai_edge_litert.interpreter import Interpreter

import qcc
from qcc import driver, frontend
from qcc.passes._simulation import Simulation
from qcc.pipeline import FLOAT_PASSES, QUANT_PASSES
from qcc.runtime import current_cost, session
from tests.conftest import build_model, random_feeds

CONV_NET = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,3,8,8] x, float[4,3,3,3] w1, float[4] b1, float[4,4,3,3] w2, float[4] b2) => (float[1,4,8,8] y) {
  c1 = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
  r1 = Relu(c1)
  y = Conv <pads = [1, 1, 1, 1]> (r1, w2, b2)
}
"""
COUNTS = ("sessions", "float_model_runs", "quantized_model_runs", "simulation_runs", "litert_runs")


@dataclasses.dataclass
class Spies:
    """What the spies counted since the last :meth:`reset`."""

    sessions: int = 0
    float_model_runs: int = 0
    quantized_model_runs: int = 0
    simulation_runs: int = 0
    litert_runs: int = 0
    pipeline_runs: int = 0
    replans: int = 0
    loads: int = 0
    spinning: int = 0  # sessions whose idle workers spin

    def reset(self) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, 0)

    def counts(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in (*COUNTS, "pipeline_runs", "replans")}


def _quantized(model: bytes | str) -> bool:
    """Whether the model ONNX Runtime was given has a quantize/dequantize or integer node."""
    proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(model, load_external_data=False)
    return any(
        n.op_type.endswith(("QuantizeLinear", "Integer")) or n.op_type.startswith("QLinear") for n in proto.graph.node
    )


def _spins(options: onnxruntime.SessionOptions | None) -> bool:
    """Whether the session's idle intra-op workers spin (ONNX Runtime's default)."""
    try:
        return options.get_session_config_entry("session.intra_op.allow_spinning") != "0"
    except Exception:  # noqa: BLE001 - no options, or the entry not set
        return True


@pytest.fixture
def spies(monkeypatch) -> Spies:
    found = Spies()
    lock = threading.Lock()  # a simulation runs its session on several threads at once

    class CountingSession(onnxruntime.InferenceSession):
        def __init__(self, model, *args, **kwargs):
            super().__init__(model, *args, **kwargs)
            self.spy_quantized = _quantized(model)
            found.sessions += 1
            found.spinning += _spins(args[0] if args else kwargs.get("sess_options"))

        def run(self, *args, **kwargs):
            with lock:
                if self.spy_quantized:
                    found.quantized_model_runs += 1
                else:
                    found.float_model_runs += 1
            return super().run(*args, **kwargs)

    def run_each(self, choices, *args, **kwargs):
        found.simulation_runs += len(choices)
        return original_run_each(self, choices, *args, **kwargs)

    def counted(count: str, function):
        def wrapper(*args, **kwargs):
            setattr(found, count, getattr(found, count) + 1)
            return function(*args, **kwargs)

        return wrapper

    def run_pipeline(model, ctx, **kwargs):
        if kwargs.get("plan_only"):
            found.replans += 1
        else:
            found.pipeline_runs += 1
        return original_run_pipeline(model, ctx, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", CountingSession)
    original_run_pipeline = driver.run_pipeline
    monkeypatch.setattr(driver, "run_pipeline", run_pipeline)
    monkeypatch.setattr(frontend, "load", counted("loads", frontend.load))
    original_run_each = Simulation.run_each
    monkeypatch.setattr(Simulation, "run_each", run_each)
    monkeypatch.setattr(Interpreter, "invoke", counted("litert_runs", Interpreter.invoke))
    return found


def _cost_counts(cost: dict) -> dict[str, int]:
    return {name: cost[name] for name in (*COUNTS, "pipeline_runs", "replans")}


def _check_consistent(cost: dict) -> None:
    """The totals are the sums of the stages' and the compiles' counts; seconds name every stage."""
    for name in COUNTS:
        assert cost[name] == sum(stage[name] for stage in cost["stages"].values()), name
    assert cost["pipeline_runs"] == sum(c["pipeline_runs"] for c in cost["compiles"])
    assert cost["replans"] == sum(c["replans"] for c in cost["compiles"])
    stages = set(cost["seconds"]) - {"total"}
    passes = {cls.name for cls in (*FLOAT_PASSES, *QUANT_PASSES)}  # every pass is named in the report too
    assert {"load", "emit"} | passes <= stages <= {"load", "score", "emit", "verify"} | passes
    assert set(cost["stages"]) <= stages
    assert sum(cost["seconds"][s] for s in stages) <= cost["seconds"]["total"] + 1e-3
    assert all(c["seconds"] > 0 for c in cost["compiles"])
    json.dumps(cost)  # plain data, as the report must be


@pytest.fixture(scope="module")
def conv_net() -> onnx.ModelProto:
    return build_model(CONV_NET)


def test_a_default_ort_compile_runs_the_pipeline_once_and_counts_every_session_and_run(spies, conv_net):
    result = qcc.compile(conv_net, calibration=random_feeds(conv_net, 8))
    cost = result.report["cost"]
    assert _cost_counts(cost) == spies.counts()
    # Within the bound: one compile, one pipeline run with the refit, the model loaded once.
    assert [(c["why"], c["refit"], c["pipeline_runs"]) for c in cost["compiles"]] == [("requested", True, 1)]
    assert cost["pipeline_runs"] == 1 and spies.loads == 1
    assert cost["float_model_runs"] > 0 and cost["quantized_model_runs"] > 0 and cost["simulation_runs"] > 0
    # Each pass that ran a model is a stage of its own: calibration runs the float model only.
    calibrate = cost["stages"]["calibrate"]
    assert calibrate["float_model_runs"] > 0 and calibrate["quantized_model_runs"] == 0
    assert cost["stages"]["mixed-precision"]["simulation_runs"] == spies.simulation_runs
    # numpy works between the runs: no session's idle workers spin on the cores it needs.
    assert spies.spinning == 0
    _check_consistent(cost)


def test_a_compile_without_verification_or_tolerance_runs_the_pipeline_once(spies, conv_net):
    result = qcc.compile(conv_net, calibration=random_feeds(conv_net, 8), verify=False, tolerance=None)
    cost = result.report["cost"]
    assert _cost_counts(cost) == spies.counts()
    assert cost["pipeline_runs"] == 1 and [c["why"] for c in cost["compiles"]] == ["requested"]
    assert cost["simulation_runs"] == 0 and "verify" not in cost["seconds"]
    _check_consistent(cost)


@pytest.mark.parametrize("target", ["trt", "tflite"])
def test_method_selection_counts_one_compile_per_method_then_the_refit(spies, conv_net, target, monkeypatch):
    backend = type(qcc.backends.get_backend(target))
    emitted = []
    monkeypatch.setattr(backend, "emit", lambda self, *a, _emit=backend.emit: emitted.append(1) or _emit(self, *a))
    result = qcc.compile(conv_net, target=target, calibration=random_feeds(conv_net, 8))
    cost = result.report["cost"]
    assert _cost_counts(cost) == spies.counts()
    assert (cost["litert_runs"] > 0) == (target == "tflite")  # verify runs the .tflite in LiteRT
    methods = list(result.report["method_selection"]["output_cosine"])
    # The methods' plans are scored in the simulation: only the chosen one is written.
    assert len(emitted) == 1 and cost["simulation_runs"] >= len(methods) and "score" in cost["seconds"]
    assert [(c["why"], c["method"]) for c in cost["compiles"]] == [
        *(("method", m) for m in methods),
        ("refit", result.report["method_selection"]["chosen"]),
    ]
    # The float rewrites run once for the call: every later compile plans the rewritten model.
    assert spies.loads == 1 and cost["pipeline_runs"] == 1 and cost["replans"] == len(methods)
    assert [c["pipeline_runs"] for c in cost["compiles"]] == [1] + [0] * len(methods)
    _check_consistent(cost)


def test_a_compile_that_needs_float_nodes_searches_once_and_refits_in_the_same_compile(spies):
    from qcc.passes.mixed_precision import MixedPrecisionPass
    from tests.passes.test_weight_rounding import CHAIN, _smooth_images

    model = build_model(CHAIN, seed=4)
    result = qcc.compile(model, calibration=_smooth_images(16, seed=1), tolerance=1e-5)
    cost = result.report["cost"]
    assert result.report["mixed_precision"]["kept_float"]
    assert _cost_counts(cost) == spies.counts()
    # The search, then the plan with its float nodes and the refit: one compile, one pipeline run
    # (the float rewrites run once), then the annotation passes again for the plan.
    fields = ("why", "weight_rounding", "refit", "pipeline_runs", "replans")
    assert [tuple(c[f] for f in fields) for c in cost["compiles"]] == [("requested", "auto", True, 1, 1)]
    assert spies.loads == 1
    assert cost["stages"]["refit-weights"]["quantized_model_runs"] > 0
    assert MixedPrecisionPass.name in cost["stages"]
    _check_consistent(cost)


def test_counts_are_per_compile_and_nothing_is_counted_outside_one(spies, conv_net):
    feeds = random_feeds(conv_net, 8)
    first = qcc.compile(conv_net, calibration=feeds).report["cost"]
    spies.reset()
    second = qcc.compile(conv_net, calibration=feeds).report["cost"]
    assert _cost_counts(second) == spies.counts() == _cost_counts(first)
    assert second["compiles"][0]["pipeline_runs"] == 1
    assert current_cost() is None
    outside = session(conv_net)
    outside.run(None, feeds[0])
    assert "run" not in vars(outside)  # a session made outside a compile is ONNX Runtime's own


def test_the_cli_json_output_carries_the_cost(tmp_path, conv_net):
    model, calib, out = tmp_path / "m.onnx", tmp_path / "calib.npz", tmp_path / "q.onnx"
    onnx.save(conv_net, model)
    np.savez(calib, x=np.stack([f["x"][0] for f in random_feeds(conv_net, 4)]))
    args = [str(model), "--calib", str(calib), "-o", str(out), "--no-verify", "--tolerance", "off", "--json"]
    done = subprocess.run([sys.executable, "-m", "qcc.cli", "compile", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    cost = json.loads(done.stdout)["report"]["cost"]
    assert cost["pipeline_runs"] == 1 and [c["why"] for c in cost["compiles"]] == ["requested"]


def test_a_counted_session_is_freed_as_soon_as_it_is_dropped():
    """No reference cycle: a session of a model with external data holds hard links to the user's
    data file until it is freed, and the ONNX checker refuses a file with several links."""
    import gc
    import weakref

    from qcc.runtime import counting_cost, session

    model = build_model('<ir_version: 8, opset_import: ["" : 17]>\ng (float[1,4] x) => (float[1,4] y) { y = Relu(x) }')
    feed = {"x": np.ones((1, 4), np.float32)}
    gc.disable()
    try:
        with counting_cost() as counter:
            created = session(model)
            assert created.run(None, feed)[0].tolist() == [[1.0] * 4]
            assert session(model).run(None, feed)[0].tolist() == [[1.0] * 4]  # a temporary session runs too
            alive = weakref.ref(created)
            del created
            assert alive() is None
        assert counter.report()["float_model_runs"] == 2
    finally:
        gc.enable()
