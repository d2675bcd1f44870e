"""The driver's recovery paths: non-finite tensors are kept float, with the reason reported."""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from types import SimpleNamespace

import numpy as np
import onnx
import onnx.numpy_helper
import pytest

import qcc
from qcc import driver
from qcc.backends import get_backend
from qcc.context import PassContext
from qcc.errors import StrictError
from qcc.frontend import load
from qcc.options import CompileOptions
from qcc.report import compile_warnings
from tests.bad_inputs import ort_quantized
from tests.conftest import build_model, fidelity, random_feeds, run


def test_constant_mask_stays_float_with_reason():
    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[8,8] w, float[1,8] mask, float[1,2,8] x) => (float[1,2,8] y) {
          s = MatMul(x, w)
          y = Add(s, mask)
        }
        """,
        constants={"mask": np.array([[0, 0, 0, 0, -np.inf, -np.inf, 0, 0]], np.float32)},
    )
    result = qcc.compile(model, calibration=random_feeds(model, 4))
    add = next(n for n in result.report["nodes"] if n["op_type"] == "Add")
    assert add["decision"] == "float" and "cannot represent" in add["reason"]
    assert result.report["verify"]["ok"]


def test_weighted_op_with_non_finite_bias_stays_float():
    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[8,8] w, float[8] b, float[1,8] x) => (float[1,8] y) {
          y = Gemm(x, w, b)
        }
        """,
        constants={"b": np.array([0, 0, 0, -np.inf, 0, 0, 0, 0], np.float32)},
    )
    result = qcc.compile(model, calibration=random_feeds(model, 4))
    gemm = result.report["nodes"][0]
    assert gemm["decision"] == "float" and "NaN or Inf" in gemm["reason"]


# Log(Relu(x)) is -inf wherever x <= 0: the MatMul reading it is replanned float.
LOG_OF_RELU = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[8,8] w1, float[8,8] w2, float[1,8] x) => (float[1,8] y) {
  h = MatMul(x, w1)
  r = Relu(h)
  l = Log(r)
  y = MatMul(l, w2)
}
"""


def test_tensors_that_calibrate_to_inf_are_replanned_float():
    # Log(Relu(x)) is -inf wherever x <= 0: the MatMul reading it cannot be int8.
    model = build_model(LOG_OF_RELU)
    result = qcc.compile(model, calibration=random_feeds(model, 8))
    by_name = {n["name"]: n for n in result.report["nodes"]}
    assert by_name["y"]["decision"] == "float" and "non-finite" in by_name["y"]["reason"]
    assert by_name["h"]["decision"] == "int8"
    assert result.report["verify"]["quantized_but_float"] == []


def test_a_replan_is_data_the_pipeline_stops_at_the_pass_that_asks(monkeypatch):
    """calibrate asks for a re-plan (annotations.Replan) instead of raising: the passes after it do
    not run, and the driver plans again from the rewritten model (the annotation passes only)."""
    from qcc import pipeline
    from qcc.annotations import pending_replan

    model = build_model(LOG_OF_RELU)
    ran, stopped = [], []
    real = pipeline.run_pipeline

    def recording(ir_model, ctx, **kwargs):
        timings = real(ir_model, ctx, **kwargs)
        ran.append(list(timings))
        stopped.append(pending_replan(ir_model.graph))
        return timings

    monkeypatch.setattr(driver, "run_pipeline", recording)
    result = qcc.compile(model, calibration=random_feeds(model, 8), tolerance=None)
    assert result.report["cost"]["pipeline_runs"] == 1 and result.report["cost"]["replans"] == 1
    assert ran[0][-1] == "calibrate" and "quantize-bias" in ran[1]
    assert "canonicalize" in ran[0] and "canonicalize" not in ran[1]  # the plan again, not the rewrites
    assert "l" in stopped[0].nonfinite and "y" in stopped[0].keep_float and stopped[1] is None


def test_planning_that_does_not_settle_names_the_non_finite_tensors(monkeypatch):
    monkeypatch.setattr(driver, "MAX_REPLANS", 0)
    model = build_model(LOG_OF_RELU)
    with pytest.raises(qcc.QccError, match=r"tensors 'l'.* took non-finite values"):
        qcc.compile(model, calibration=random_feeds(model, 8), tolerance=None)


def test_auto_method_chooses_a_clip_range_per_tensor_by_its_effect_on_the_outputs():
    from tests.e2e.synthetic import synthetic_model

    model = synthetic_model("mlp")
    feeds = random_feeds(model, 16, batch=4)
    feeds[11]["x"][0, 0] = 60.0  # one outlier, in a sample the search does not measure on (spread: 0, 5, 10, 15)
    # (SmoothQuant would divide x's outlier channel instead: this test is about the clip search.)
    minmax = qcc.compile(model, calibration=feeds, method="minmax", tolerance=None, smoothquant=False)
    auto = qcc.compile(model, calibration=feeds, method="auto", tolerance=0.0005, smoothquant=False)
    assert "clip_search" not in minmax.report
    assert auto.report["clip_search"].get("x") in ("meanmax", "percentile", "mse", "entropy")
    assert "y" not in auto.report["clip_search"]  # a graph output is never clipped
    held_out = random_feeds(model, 8, seed=7, batch=4)
    assert fidelity(model, auto.artifact.data, held_out) > fidelity(model, minmax.artifact.data, held_out)


def test_trt_method_selection_reads_a_one_shot_iterator_once_for_every_compile():
    from tests.e2e.synthetic import synthetic_model

    model = synthetic_model("mlp")
    feeds = random_feeds(model, 4)
    from_iterator = qcc.compile(model, target="trt", calibration=iter(feeds))
    from_list = qcc.compile(model, target="trt", calibration=feeds)
    assert set(from_list.report["method_selection"]["output_cosine"]) == {"minmax", "meanmax"}
    assert from_iterator.report["method_selection"] == from_list.report["method_selection"]
    assert from_iterator.artifact.data == from_list.artifact.data


class _ReadOnceReader:
    """A duck-typed calibration reader: ``get_next()`` only, no ``rewind()`` and no ``__iter__``."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


@pytest.mark.parametrize("target", ["trt", "tflite"])
def test_method_selection_reads_a_reader_without_rewind_once_for_every_compile(target):
    from tests.e2e.synthetic import synthetic_model

    model = synthetic_model("mlp")
    feeds = random_feeds(model, 4)
    from_reader = qcc.compile(model, target=target, calibration=_ReadOnceReader(feeds))
    from_list = qcc.compile(model, target=target, calibration=feeds)
    assert set(from_list.report["method_selection"]["output_cosine"]) == {"minmax", "meanmax"}
    assert from_reader.report["method_selection"] == from_list.report["method_selection"]
    assert from_reader.artifact.data == from_list.artifact.data


def _candidate(error: float, kept_float: int) -> SimpleNamespace:
    """A compile result as far as a selection reads it: the artifact's output error
    (1 - cosine) and how many nodes mixed precision kept float."""
    return SimpleNamespace(
        report={
            "verify": {"fidelity": {"outputs": {"y": {"cosine_mean": 1.0 - error}}}},
            "mixed_precision": {"kept_float": [{"node": f"n{i}"} for i in range(kept_float)]},
        }
    )


@pytest.mark.parametrize(
    ("static", "dynamic", "chosen"),
    [
        ((0.0015, 3), (0.0010, 0), "dynamic"),  # the closer one, whatever it keeps float
        ((0.0010, 3), (0.0010, 0), "static"),  # a tie keeps the first
        ((0.0010, 0), (0.0030, 9), "static"),
    ],
)
def test_a_selection_keeps_the_compile_closer_to_fp32(static, dynamic, chosen):
    options = CompileOptions(tolerance=0.002)
    candidates = {"static": _candidate(*static), "dynamic": _candidate(*dynamic)}
    best = driver._keep_closer(options, "mode_selection", candidates, "test")
    assert best is candidates[chosen]
    assert best.report["mode_selection"]["chosen"] == chosen
    assert best.report["mode_selection"]["kept_float"] == {"static": static[1], "dynamic": dynamic[1]}


# -- API mistakes that used to pass silently (issue #18) -----------------------------------------

API_MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[8,3,3,3] w, float[8] b, float[4,8] w2, float[1,3,8,8] x) => (float[1,4] y) {
  c = Conv<pads=[1,1,1,1]>(x, w, b)
  r = Relu(c)
  p = GlobalAveragePool(r)
  f = Flatten(p)
  y = Gemm<transB=1>(f, w2)
}
"""


def test_exclude_string_is_one_name_and_unknown_names_are_refused():
    model = build_model(API_MODEL)
    feeds = random_feeds(model, 4)
    result = qcc.compile(model, calibration=feeds, exclude="Conv", tolerance=None)
    assert {n["op_type"]: n["decision"] for n in result.report["nodes"]}["Conv"] == "float"
    with pytest.raises(qcc.QccError, match="'Cnv' matches no node.*did you mean 'Conv'"):
        qcc.compile(model, calibration=feeds, exclude=["Cnv"])


def test_tolerance_takes_the_cli_text_form():
    model = build_model(API_MODEL)
    result = qcc.compile(model, calibration=random_feeds(model, 4), tolerance="relative:0.05")
    assert result.report["mixed_precision"]["metric"] == "relative"
    assert result.report["mixed_precision"]["bound"] == 0.05


def test_save_never_overwrites_the_input_model(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(build_model(API_MODEL), path)
    before = path.read_bytes()
    result = qcc.compile(str(path), calibration=random_feeds(onnx.load(path), 4))
    with pytest.raises(qcc.QccError, match="is an input file"):
        result.save(str(path))
    assert path.read_bytes() == before
    result.save(tmp_path / "out.onnx")
    assert (tmp_path / "out.onnx").stat().st_size > 0


# -- Mistakes that passed silently: warnings, strict, already-quantized models (issue #18) -------

CHAIN_MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[16,16] w1, float[16,16] w2, float[16,16] w3, float[16,16] w4, float[1,16] x) => (float[1,16] y) {
  a = MatMul(x, w1)
  b = MatMul(a, w2)
  c = MatMul(b, w3)
  y = MatMul(c, w4)
}
"""


def _codes(result) -> list[str]:
    return [w["code"] for w in result.warnings]


def test_the_report_states_its_schema_version():
    model = build_model(API_MODEL)
    report = qcc.compile(model, calibration=random_feeds(model, 4)).report
    assert report["schema_version"] == 1 and isinstance(report["schema_version"], int)
    assert report["warnings"] == []  # a clean compile raises no false alarm
    json.dumps(report)  # still plain JSON


def test_a_missed_tolerance_is_a_logged_warning_and_strict_raises(caplog):
    model = build_model(CHAIN_MODEL)
    feeds = random_feeds(model, 4)
    # A bound of 0 is out of reach: mixed precision floats at most 40% of the nodes, and misses it.
    with caplog.at_level(logging.WARNING, logger="qcc"):
        result = qcc.compile(model, target="ort", calibration=feeds, tolerance=0.0)
    assert result.report["mixed_precision"]["met"] is False
    assert _codes(result) == ["tolerance_missed", "kept_float"]
    missed = result.warnings[0]["message"]
    assert "misses --tolerance" in missed and "> bound 0" in missed and "looser --tolerance" in missed
    # ... and says why the float search stopped (a bound of 0: the float budget ran out).
    search = result.report["mixed_precision"]["search"]
    assert search["stopped"] in ("budget", "no_gain") and "The float search stopped: " in missed
    assert "2 node(s) qcc could quantize stay float" in result.warnings[1]["message"]
    logged = [r for r in caplog.records if r.name == "qcc" and r.levelno == logging.WARNING]
    assert [r.getMessage().split(":")[0] for r in logged] == ["tolerance_missed", "kept_float"]
    with pytest.raises(StrictError) as error:
        qcc.compile(model, target="ort", calibration=feeds, tolerance=0.0, strict=True)
    assert isinstance(error.value, qcc.QccError) and error.value.exit_code == 3
    assert error.value.result.report["mixed_precision"]["met"] is False  # the compile is not lost
    assert "tolerance_missed" in str(error.value) and "Fix:" in str(error.value)
    qcc.compile(model, target="ort", calibration=feeds, strict=True)  # within the default bound: no error


NO_INT8_KERNEL_MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,8] x) => (float[1,8] y) {
  s = Sin(x)
  y = Exp(s)
}
"""


@pytest.mark.parametrize("target", ["ort", "trt", "tflite"])
def test_a_compile_that_quantizes_nothing_says_why(target):
    model = build_model(NO_INT8_KERNEL_MODEL)
    feeds = random_feeds(model, 4)
    result = qcc.compile(model, target=target, calibration=feeds)
    assert result.warnings == [
        {
            "code": "nothing_quantized",
            "message": f"nothing runs int8 on {target}: none of the model's operators (Exp, Sin) has an int8 kernel "
            f"on {target}; the artifact is the float model. `qcc inspect <model>` shows what each target would "
            "quantize.",
        }
    ]
    with pytest.raises(StrictError, match="nothing_quantized"):
        qcc.compile(model, target=target, calibration=feeds, strict=True)


def test_inspect_hints_name_the_model_file_when_there_is_one(tmp_path):
    model = build_model(NO_INT8_KERNEL_MODEL)
    path = tmp_path / "sin exp.onnx"
    onnx.save(model, path)
    feeds = random_feeds(model, 4)
    command = f"`qcc inspect '{path}'`"  # quoted for the shell: the name has a space
    (warning,) = qcc.compile(path, target="ort", calibration=feeds).warnings
    assert warning["code"] == "nothing_quantized" and command in warning["message"]
    with pytest.raises(qcc.QccError, match="'Sine' matches no node") as error:
        qcc.compile(path, calibration=feeds, exclude=["Sine"])
    assert command in str(error.value)
    with pytest.raises(qcc.QccError, match="'Sine' matches no node") as error:
        qcc.compile(model, calibration=feeds, exclude=["Sine"])  # in memory: no file to name
    assert "`qcc inspect <model>`" in str(error.value)


def test_nodes_kept_float_after_calibration_are_a_warning():
    model = build_model(LOG_OF_RELU)
    result = qcc.compile(model, calibration=random_feeds(model, 8), tolerance=None)
    assert _codes(result) == ["kept_float"]
    assert "1 node(s) qcc could quantize stay float: x1 reads or writes 'l'" in result.warnings[0]["message"]


def test_a_failed_verification_is_a_warning():
    model = build_model(API_MODEL)
    result = qcc.compile(model, calibration=random_feeds(model, 4))
    report = {**result.report, "verify": {**result.report["verify"], "ok": False, "error": "outputs differ"}}
    assert compile_warnings(report, {}) == [
        {
            "code": "verify_failed",
            "message": "the artifact did not pass verification in onnxruntime CPUExecutionProvider: outputs differ.",
        }
    ]


def _float_cnn() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = onnx.numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w")
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 8, 8, 8])
    conv = onnx.helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv")
    model = onnx.helper.make_model(
        onnx.helper.make_graph([conv], "g", [x], [y], [w]), opset_imports=[onnx.helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    return model


def _qdq_params(model: onnx.ModelProto) -> list[tuple[str, list, list]]:
    """Every Q/DQ node's op type with its scale and zero point values, in graph order."""
    values = {t.name: onnx.numpy_helper.to_array(t).tolist() for t in model.graph.initializer}
    return [
        (n.op_type, values[n.input[1]], values.get(n.input[2]) if len(n.input) > 2 else None)
        for n in model.graph.node
        if n.op_type in ("QuantizeLinear", "DequantizeLinear")
    ]


@pytest.mark.parametrize("target", ["ort", "trt"])
def test_a_qdq_model_keeps_its_own_scales_on_onnx_targets(target):
    quantized = ort_quantized(_float_cnn(), symmetric=True)  # symmetric int8: TensorRT's rules hold
    feeds = random_feeds(quantized, 4)
    result = qcc.compile(quantized, target=target, calibration=feeds)
    # Not quantized twice: the artifact has exactly the model's own Q/DQ, with the same parameters.
    assert _qdq_params(result.model) == _qdq_params(quantized)
    for feed in feeds:
        np.testing.assert_array_equal(run(result.model, feed)[0], run(quantized, feed)[0])
    assert result.report["already_quantized"]["tensors"] == 3  # the weight, the input and the output
    assert _codes(result) == ["already_quantized"]
    assert result.warnings[0]["message"].startswith("already quantized: 3 tensors keep the model's own scales")
    qcc.compile(quantized, target=target, calibration=feeds, strict=True)  # nothing strict refuses


def test_a_partly_quantized_model_gets_the_rest_quantized_by_qcc():
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    model = build_model(API_MODEL)
    feeds = random_feeds(model, 8)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter(feeds)

        def get_next(self):
            return next(self.feeds, None)

    path = f"{tempfile.mkdtemp()}/partly.onnx"
    quantize_static(model, path, Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"])
    partly = onnx.load(path)
    result = qcc.compile(partly, target="ort", calibration=feeds)
    decisions = {n["op_type"]: n["decision"] for n in result.report["nodes"]}
    assert decisions["Conv"] == "float" and decisions["Gemm"] == "int8"
    own = result.report["already_quantized"]
    dq_outputs = {n.output[0] for n in result.model.graph.node if n.op_type == "DequantizeLinear"}
    assert all(n.input[0] not in dq_outputs for n in result.model.graph.node if n.op_type == "QuantizeLinear"), (
        "a tensor between the model's own Q/DQ was quantized again"
    )
    assert "qcc quantized 2 other node(s)" in result.warnings[0]["message"] and own["tensors"] == 4


def test_a_qdq_model_is_refused_on_tflite_with_the_reason_and_the_fix():
    quantized = ort_quantized(_float_cnn())
    with pytest.raises(
        qcc.UnsupportedModelError,
        match=r"already quantized \(QDQ: 3 tensors.*Fix: pass the float "
        r"model it came from .*or compile this one for ort or trt",
    ):
        qcc.compile(quantized, target="tflite", calibration=random_feeds(quantized, 2))


@pytest.mark.parametrize("target", ["ort", "trt", "tflite"])
def test_a_qoperator_model_is_refused_on_every_target(target):
    quantized = ort_quantized(build_model(API_MODEL), "qoperator")
    with pytest.raises(
        qcc.UnsupportedModelError,
        match=r"already quantized \(QOperator: .*QLinearConv x1.*QGemm x1.*"
        "Fix: pass the float model it came from",
    ):
        qcc.compile(quantized, target=target, calibration=random_feeds(quantized, 2))


@pytest.mark.parametrize(
    ("target", "wrong", "right"), [("tflite", "m.onnx", "m.tflite"), ("ort", "m.tflite", "m.onnx")]
)
def test_save_refuses_another_targets_suffix(tmp_path, target, wrong, right):
    model = build_model(API_MODEL)
    result = qcc.compile(model, target=target, calibration=random_feeds(model, 4), tolerance=None)
    with pytest.raises(qcc.OutputError, match=f"ends in {wrong[1:]} but target {target}"):
        result.save(tmp_path / wrong)
    assert not (tmp_path / wrong).exists()
    result.save(tmp_path / right)
    assert (tmp_path / right).stat().st_size > 0


@pytest.mark.parametrize(
    ("body", "cut"),
    [
        ("y = com.microsoft.Gelu(x)", "cut the graph after node 'y'"),  # nothing before it to keep
        ("r = Relu(x)\n y = com.microsoft.Gelu(r)", "cut the graph before node 'y'"),
    ],
)
def test_an_operator_without_a_tflite_lowering_says_what_to_do(body, cut):
    model = onnx.parser.parse_model(
        f"""
        <ir_version: 8, opset_import: ["" : 17, "com.microsoft" : 1]>
        g (float[1,8] x) => (float[1,8] y) {{
          {body}
        }}
        """
    )
    with pytest.raises(qcc.BackendError, match=r"'y' \(Gelu\) has no TFLite lowering") as error:
        qcc.compile(model, target="tflite", calibration=random_feeds(model, 2))
    fix = error.value.fix
    assert fix.startswith(cut), fix
    assert "onnx.utils.extract_model" in fix and "ort or trt" in fix, fix
    assert "backends/" not in fix and ".py" not in fix, fix  # not a pointer into qcc's sources


def test_an_operator_without_a_lowering_in_a_run_time_if_says_to_make_the_condition_constant():
    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 17, "com.microsoft" : 1]>
        g (bool[1] c, float[1,8] x) => (float[1,8] y) {
          y = If(c) <then_branch = g1 () => (float[1,8] a) { a = com.microsoft.Gelu(x) },
                     else_branch = g2 () => (float[1,8] b) { b = Relu(x) }>
        }
        """
    )
    feeds = [{"c": np.array([i % 2 == 0]), "x": np.full((1, 8), i, np.float32)} for i in range(2)]
    with pytest.raises(qcc.BackendError, match=r"\(Gelu\) in 'y' then_branch \(If, run-time condition\)") as error:
        qcc.compile(model, target="tflite", calibration=feeds)
    fix = error.value.fix
    assert fix.startswith("make the If's condition a constant (an initializer)"), fix
    assert "onnx.utils.extract_model" in fix and "ort or trt" in fix, fix
    assert "backends/" not in fix and ".py" not in fix, fix


def test_method_recheck_ranks_meeting_the_bound_then_int8_nodes_then_error():
    """After mixed precision: an artifact that meets the bound beats one that misses it; among those
    that meet it, more int8 nodes win (speed); among those that miss it, the smaller error wins."""
    from types import SimpleNamespace

    from qcc.driver import _after_mixed_precision

    def result(met, int8, error):
        return SimpleNamespace(
            report={"mixed_precision": {"met": met, "artifact_error": error}, "totals": {"int8": int8, "fused": 0}}
        )

    ranked = sorted(
        [result(False, 90, 0.02), result(True, 5, 1e-9), result(True, 13, 8e-4), result(False, 40, 0.015)],
        key=_after_mixed_precision,
        reverse=True,
    )
    assert [(r.report["totals"]["int8"], r.report["mixed_precision"]["met"]) for r in ranked] == [
        (13, True),
        (5, True),
        (40, False),
        (90, False),
    ]


class _Reading(CompileOptions):
    """Options that record which fields are read."""

    def __getattribute__(self, name: str):
        read = object.__getattribute__(self, "__dict__").get("_read")
        if read is not None and name in {f.name for f in dataclasses.fields(CompileOptions)}:
            read.add(name)
        return object.__getattribute__(self, name)


@pytest.mark.parametrize(
    ("text", "target"),
    [("post_ln", "ort"), ("post_ln", "trt"), ("block", "ort"), ("block", "trt"), ("block", "tflite")],
)
def test_no_float_rewrite_reads_an_option_the_compiles_of_a_call_may_differ_in(text, target):
    """The compiles of one call share the rewritten model when they differ only in
    driver.PLAN_ONLY_OPTIONS, so no rewrite may read one (each rewrite here changes the model)."""
    from qcc.data import CalibrationData
    from qcc.pipeline import DATA_REWRITE_PASSES, FLOAT_PASSES
    from tests.passes.test_equalize_residual import _block
    from tests.passes.test_smooth_activations import POST_LN, _model

    model = _model(POST_LN) if text == "post_ln" else _block()
    loaded = load(model)
    options = _Reading(target=target)
    object.__setattr__(options, "_read", set())
    data = CalibrationData(random_feeds(model, 8), loaded.input_specs())
    ctx = PassContext(options, get_backend(target).spec, data, statistics={})
    changed = [cls.name for cls in (*FLOAT_PASSES, *DATA_REWRITE_PASSES) if cls(ctx)(loaded.model).modified]
    assert changed  # the rewrites did something, reading options as they went
    assert options._read and not options._read & driver.PLAN_ONLY_OPTIONS
