"""Mixed precision (``--tolerance``) and the simulation it measures with, against real runs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import qcc
from qcc.annotations import MIXED_REASON
from qcc.backends import get_backend
from qcc.context import PassContext
from qcc.data import open_calibration
from qcc.errors import OptionError
from qcc.frontend import load
from qcc.options import CompileOptions, ToleranceMetric, parse_tolerance
from qcc.passes import _simulation
from qcc.passes._simulation import Simulation
from qcc.pipeline import run_pipeline
from tests.conftest import build_model, cosine, random_feeds, run

# h2's channel 0 is 400x larger than the others and h3 scales it back: in float the channel is
# ordinary, but a per-tensor int8 range over h2 leaves the other 31 channels about two steps.
SENSITIVE = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[16,32] w1, float[32,32] w2, float[32,16] w3, float[16,8] w4, float[N,16] x) => (float[N,8] y) {
  h1 = MatMul(x, w1)
  r1 = Relu(h1)
  h2 = MatMul(r1, w2)
  h3 = MatMul(h2, w3)
  r3 = Relu(h3)
  y = MatMul(r3, w4)
}
"""
BOUND = 0.002


def _compile(*args, **kwargs):
    """qcc.compile without SmoothQuant, which divides h2's channel 0 into w3 by itself (on trt and
    with --dynamic; tests/passes/test_smooth_activations.py): these tests are about the search."""
    return qcc.compile(*args, smoothquant=False, **kwargs)


def _sensitive_model():
    rng = np.random.default_rng(0)
    w2 = rng.normal(0, 1 / np.sqrt(32), (32, 32))
    w3 = rng.normal(0, 1 / np.sqrt(32), (32, 16))
    w2[:, 0] *= 400.0
    w3[0, :] /= 400.0
    return build_model(SENSITIVE, seed=1, constants={"w2": w2, "w3": w3})


def _calibration(model, count=16):
    return {"x": np.stack([f["x"] for f in random_feeds(model, count, seed=2, batch=4)])}


def _names(model):
    return {n.output[0]: n.name or n.output[0] for n in model.graph.node}


TWO_SENSITIVE = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[16,32] w1, float[32,32] w2, float[32,32] w3, float[32,32] w4, float[32,16] w5, float[16,8] w6,
   float[N,16] x) => (float[N,8] y) {
  h1 = MatMul(x, w1)
  r1 = Relu(h1)
  h2 = MatMul(r1, w2)
  h3 = MatMul(h2, w3)
  r3 = Relu(h3)
  h4 = MatMul(r3, w4)
  h5 = MatMul(h4, w5)
  r5 = Relu(h5)
  y = MatMul(r5, w6)
}
"""


def test_the_search_measures_again_after_each_choice(monkeypatch):
    import qcc.passes.mixed_precision as mixed_precision

    rng = np.random.default_rng(0)
    weights = {name: rng.normal(0, 1 / np.sqrt(32), (32, 32)) for name in ("w2", "w3", "w4")}
    weights["w5"] = rng.normal(0, 1 / np.sqrt(32), (32, 16))
    for writer, reader in (("w2", "w3"), ("w4", "w5")):  # two tensors with a 400x channel (SENSITIVE)
        weights[writer][:, 0] *= 400.0
        weights[reader][0, :] /= 400.0
    model = build_model(TWO_SENSITIVE, seed=1, constants=weights)
    calibration = _calibration(model)
    monkeypatch.setattr(mixed_precision, "MAX_FLOAT_SHARE", 1.0)  # 6 layers: the budget would allow 2 nodes
    section = _compile(model, target="ort", calibration=calibration, tolerance=BOUND, method="minmax").report[
        "mixed_precision"
    ]  # minmax: no --dynamic selection
    assert section["met"] and section["artifact_error"] <= BOUND
    assert section["artifact_samples"] == 4  # the verify samples the artifact ran
    producers = {n.name: n.output[0] for n in load(model).proto.graph.node}
    touched = {producers.get(k["node"], k["node"]) for k in section["kept_float"]}
    # Both spots: either alone leaves the output broken by the other, so measured only against the
    # all-int8 model the second looks useless.
    assert touched & {"h2", "h3"} and touched & {"h4", "h5"}


def test_the_sensitive_layers_are_kept_float_until_the_bound_holds():
    model = _sensitive_model()
    calibration = _calibration(model)
    plain = _compile(model, target="ort", calibration=calibration, tolerance=None)
    mixed = _compile(model, target="ort", calibration=calibration, tolerance=BOUND)
    assert plain.report["mixed_precision"] is None
    plain_error = 1 - min(o["cosine_mean"] for o in plain.report["verify"]["fidelity"]["outputs"].values())
    assert plain_error > BOUND  # the model does need it
    section = mixed.report["mixed_precision"]
    assert section["met"] and section["artifact_error"] <= BOUND
    kept = {k["node"] for k in section["kept_float"]}
    assert kept and len(kept) <= 2  # the fewest: h2's writer and reader at most
    producers = {n.name: list(n.output) for n in load(model).proto.graph.node}
    touched = {t for name in kept for t in producers.get(name, [])} | {"h2", "h3"}
    assert "h2" in touched or "h3" in touched
    assert all(k["reason"].startswith(MIXED_REASON) for k in section["kept_float"])
    # On held-out inputs the mixed artifact is closer to float, run in ONNX Runtime.
    held_out = random_feeds(model, 8, seed=9, batch=4)
    gain = []
    for feed in held_out:
        expected = run(model, feed)[0]
        mixed_cosine = cosine(expected, run(mixed.artifact.data, feed)[0])
        gain.append(mixed_cosine - cosine(expected, run(plain.artifact.data, feed)[0]))
    assert min(gain) > 0


def test_within_the_bound_nothing_changes():
    model = _sensitive_model()
    calibration = _calibration(model)
    loose = _compile(model, target="ort", calibration=calibration, tolerance=0.5)
    plain = _compile(model, target="ort", calibration=calibration, tolerance=None)
    assert loose.report["mixed_precision"]["met"] and not loose.report["mixed_precision"]["kept_float"]
    assert loose.artifact.data == plain.artifact.data


def test_exclude_still_wins_and_relative_metric():
    model = _sensitive_model()
    calibration = _calibration(model)
    first = next(n.name for n in load(model).model.graph if n.op_type == "MatMul")
    result = _compile(
        model, target="ort", calibration=calibration, exclude=[first], tolerance=0.05, tolerance_metric="relative"
    )
    section = result.report["mixed_precision"]
    assert section["metric"] == "relative" and section["met"]
    decisions = {n["name"]: n["reason"] for n in result.report["nodes"]}
    assert decisions[first] == "excluded by the user (--exclude)"
    rel = result.report["verify"]["fidelity"]["outputs"]["y"]["relative_error_mean"]
    assert rel == pytest.approx(section["artifact_error"]) and rel <= 0.05


@pytest.mark.parametrize("target", ["ort", "trt", "tflite"])
def test_every_target_meets_the_bound(target):
    model = _sensitive_model()
    result = _compile(model, target=target, calibration=_calibration(model), tolerance=BOUND)
    section = result.report["mixed_precision"]
    assert section["met"], section
    assert section["kept_float"]


def test_simulation_matches_the_artifact_and_the_float_model():
    model = _sensitive_model()
    loaded = load(model)
    backend = get_backend("ort")
    data = open_calibration(_calibration(model), loaded.input_specs())
    ctx = PassContext(CompileOptions(method="minmax", tolerance=None), backend.spec, data)
    run_pipeline(loaded.model, ctx)
    feeds = random_feeds(model, 4, seed=5, batch=4)
    sim = Simulation(loaded.model, feeds)
    artifact = backend.emit(loaded.model, ctx)
    for feed, quantized, floating in zip(feeds, sim.run(), sim.run(quantized=()), strict=True):
        expected, got = run(model, feed)[0], run(artifact.data, feed)[0]
        np.testing.assert_allclose(floating[0], expected, rtol=1e-4, atol=1e-5)  # gates off: the float model
        # Fake-quantized float kernels vs integer kernels: the same within a rounding step or so.
        assert cosine(quantized[0], got) > 0.9999
        assert cosine(quantized[0], expected) == pytest.approx(cosine(got, expected), abs=2e-3)


CONV1D = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[16,8,3] w1, float[16] b1, float[16,16,3] w2, float[16] b2, float[N,8,16] x) => (float[N,16,4] y) {
  a = Conv<pads=[1,1], strides=[2]>(x, w1, b1)
  r = Relu(a)
  c = Conv<pads=[1,1], strides=[2]>(r, w2, b2)
  y = Relu(c)
}
"""


@pytest.mark.parametrize("target", ["ort", "trt"])
def test_the_simulation_with_fed_scales_computes_what_the_gated_one_does(target):
    # ONNX Runtime's basic level would quantize the fake-quantized float weights again where a Conv
    # reads its input straight from a DQ (WeightBiasQuantization), as the fed-scale simulation's do.
    model, feeds = _planned_conv1d(4, target)
    gated = Simulation(model, feeds).run()
    fed = Simulation(model, feeds, tunable="params").run()
    for one, other in zip(gated, fed, strict=True):
        np.testing.assert_allclose(other[0], one[0], rtol=1e-5, atol=1e-5)


def test_parse_tolerance():
    assert parse_tolerance("0.01") == {"tolerance": 0.01, "tolerance_metric": ToleranceMetric.COSINE}
    assert parse_tolerance("relative:0.05") == {"tolerance": 0.05, "tolerance_metric": ToleranceMetric.RELATIVE}
    assert parse_tolerance("off") == {"tolerance": None}
    for bad in ("abc", "l2:0.1", ""):
        with pytest.raises(OptionError):
            parse_tolerance(bad)
    with pytest.raises(OptionError):
        CompileOptions(tolerance=-1.0)


def test_a_model_without_convolutions_that_misses_the_bound_tries_dynamic():
    model = _sensitive_model()
    calibration = _calibration(model)
    result = _compile(model, target="ort", calibration=calibration, tolerance=1e-7)
    selection = result.report["mode_selection"]
    errors = selection["artifact_error"]
    assert selection["chosen"] == min(errors, key=errors.get)
    assert result.report["options"]["dynamic"] == (selection["chosen"] == "dynamic")
    # Not for convolutional models, nor when the user chose a calibration method.
    from tests.e2e.synthetic import synthetic_model

    cnn = synthetic_model("residual_cnn")
    assert "mode_selection" not in _compile(cnn, calibration=random_feeds(cnn, 8), tolerance=1e-7).report
    assert "mode_selection" not in _compile(model, calibration=calibration, tolerance=1e-7, method="minmax").report


def test_a_model_without_convolutions_that_needs_float_nodes_for_the_bound_tries_dynamic_too():
    model = _sensitive_model()
    result = _compile(model, target="ort", calibration=_calibration(model), tolerance=BOUND)
    selection = result.report["mode_selection"]
    assert "only with nodes kept float" in selection["why"]
    errors = selection["artifact_error"]
    assert selection["chosen"] == min(errors, key=errors.get) and errors["static"] <= BOUND


def test_no_dynamic_compile_when_the_static_one_is_already_all_float():
    model = build_model("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[32,64] w1, float[64,16] w2, float[N,32] x) => (float[N,16] y) {
  a = MatMul(x, w1)
  y = MatMul(a, w2)
}
""")
    result = _compile(model, target="ort", calibration=random_feeds(model, 8, batch=4), tolerance=1e-7)
    assert result.report["mixed_precision"]["artifact_error"] == 0.0  # every node kept float
    assert "mode_selection" not in result.report  # so --dynamic could not be closer: not tried


def test_the_dynamic_fallback_reads_a_one_shot_iterator_once():
    model = _sensitive_model()
    feeds = [{"x": x} for x in _calibration(model)["x"]]
    from_list = _compile(model, target="ort", calibration=feeds, tolerance=1e-7)
    from_iterator = _compile(model, target="ort", calibration=iter(feeds), tolerance=1e-7)
    selection = dict(from_list.report["mode_selection"])
    assert selection.pop("compared") == "without the refit"  # an iterator is read once: no second compile
    assert from_iterator.report["mode_selection"] == selection


def test_a_stale_declared_output_shape_skips_the_search_but_compiles():
    # y is declared 4x4 but the unpadded 3x3 conv of an 8x8 map is 6x6: ONNX Runtime runs the
    # model; the gated twin cannot be loaded, so mixed precision steps aside.
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[8,3,3,3] w1, float[8] b1, float[8,8,3,3] w2, float[8] b2, float[N,3,8,8] x) => (float[N,8,4,4] y) {
      c = Conv<pads=[1,1,1,1]>(x, w1, b1)
      r = Relu(c)
      y = Conv(r, w2, b2)
    }
    """
    model = build_model(text, seed=1)
    feeds = random_feeds(model, 6, batch=2)
    for feed in feeds:
        feed["x"][..., 0] *= 30
    result = _compile(model, target="ort", calibration=feeds)
    assert result.report["verify"]["fidelity"]["outputs"]["y"]["cosine_mean"] > 0.9


def test_units_that_close_little_of_the_gap_stay_int8(monkeypatch):
    """40 orthogonal MatMuls share the error evenly: once few are left, each closes about 1/40 of
    what remains, less and less of the gap to a bound only an all-float model meets. Floating such
    units costs speed and barely moves the error (PP-OCRv5 det floated 15 nodes of 1e-5 each)."""
    import qcc.passes.mixed_precision as mixed_precision

    layers = 40
    text = (
        '<ir_version: 8, opset_import: ["" : 17]>\ng ('
        + ", ".join(f"float[16,16] w{i}" for i in range(layers))
        + f", float[N,16] x) => (float[N,16] h{layers}) {{\n  h0 = Identity(x)\n  "
        + "\n  ".join(f"h{i + 1} = MatMul(h{i}, w{i})" for i in range(layers))
        + "\n}\n"
    )
    rng = np.random.default_rng(0)
    model = build_model(text, constants={f"w{i}": np.linalg.qr(rng.normal(size=(16, 16)))[0] for i in range(layers)})
    calibration = _calibration(model, count=8)
    monkeypatch.setattr(mixed_precision, "MAX_FLOAT_SHARE", 1.0)
    min_gain_default = mixed_precision.MIN_GAIN

    def kept(min_gain):
        monkeypatch.setattr(mixed_precision, "MIN_GAIN", min_gain)
        return _compile(model, target="ort", calibration=calibration, tolerance=1e-6, method="minmax").report[
            "mixed_precision"
        ]

    every = kept(0.0)
    assert every["met"] and len(every["kept_float"]) == layers  # every small gain taken: all float
    default = kept(min_gain_default)
    assert 0 < len(default["kept_float"]) < layers and default["met"] is False
    # The report says why the search stopped and names the best units it left int8.
    assert default["search"]["stopped"] == "no_gain"
    assert all(0 < u["effect"] < default["simulated_error"] and u["nodes"] for u in default["search"]["left"])


# One expensive branch and two cheap ones, each with an outlier channel in its middle tensor (the
# SENSITIVE pattern, 30x): floating branch a (two 3x3 Convs, most of the model's time) removes
# about as much output error as floating branches b and c (four 1x1 Convs) together.
COSTLY = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[64,16,3,3] wa1, float[16,64,3,3] wa2, float[16,16,1,1] wb1, float[16,16,1,1] wb2,
   float[16,16,1,1] wc1, float[16,16,1,1] wc2, float[1,16,96,96] x) => (float[1,16,96,96] y) {
  a1 = Conv <pads = [1, 1, 1, 1]> (x, wa1)
  a2 = Conv <pads = [1, 1, 1, 1]> (a1, wa2)
  b1 = Conv (x, wb1)
  b2 = Conv (b1, wb2)
  c1 = Conv (x, wc1)
  c2 = Conv (c1, wc2)
  s = Add(a2, b2)
  y = Add(s, c2)
}
"""


def _costly_model():
    rng = np.random.default_rng(0)
    shapes = {"wa1": (64, 16, 3), "wa2": (16, 64, 3), "wb1": (16, 16, 1), "wb2": (16, 16, 1)}
    shapes |= {"wc1": (16, 16, 1), "wc2": (16, 16, 1)}
    weights = {
        name: rng.normal(0, 1 / np.sqrt(ci * k * k), (co, ci, k, k)).astype(np.float32)
        for name, (co, ci, k) in shapes.items()
    }
    for writer, reader in (("wa1", "wa2"), ("wb1", "wb2"), ("wc1", "wc2")):
        weights[writer][0] *= 30.0
        weights[reader][:, 0] /= 30.0
    return build_model(COSTLY, seed=1, constants=weights)


def test_with_a_latency_budget_the_search_buys_the_error_where_it_costs_least_time():
    """With ``latency_budget`` on ``ort`` the nodes are priced: the two cheap branches are floated,
    not the expensive one. Without it, the same search floats the expensive branch (its effect alone
    is the largest)."""
    model = _costly_model()
    feeds = random_feeds(model, 8)
    options = dict(target="ort", calibration=feeds, tolerance=0.02, method="minmax", refit=False)
    options |= dict(weight_rounding="nearest")
    result = _compile(model, latency_budget=1.0, **options)
    section = result.report["mixed_precision"]
    assert section["met"] and section["artifact_error"] <= 0.02  # measured on the artifact in ORT
    floated = {k["node"] for k in section["kept_float"]}
    assert {"b1", "b2", "c1", "c2"} <= floated and not floated & {"a1", "a2"}, floated
    latency = section["search"]["latency"]
    assert latency["predicted_ms"] < latency["fp32_ms"]
    assert set(latency["nodes"]) == floated and all(v["float_ms"] > 0 for v in latency["nodes"].values())
    assert "predicted" in next(w["message"] for w in result.report["warnings"] if w["code"] == "kept_float")

    unpriced = _compile(model, **options).report["mixed_precision"]
    assert unpriced["met"] and {"a1", "a2"} <= {k["node"] for k in unpriced["kept_float"]}
    assert "latency" not in unpriced["search"]


def test_a_latency_budget_the_bound_would_break_leaves_the_bound_missed():
    """A budget below what the cheap branches cost: nothing the bound needs fits, the report says the
    budget stopped the search, and what floating the best unit left would cost."""
    model = _costly_model()
    options = dict(target="ort", calibration=random_feeds(model, 8), tolerance=0.02, method="minmax")
    result = _compile(model, latency_budget=0.3, refit=False, weight_rounding="nearest", **options)
    section = result.report["mixed_precision"]
    assert section["met"] is False and section["search"]["stopped"] == "latency"
    latency = section["search"]["latency"]
    assert latency["predicted_ms"] <= 0.3 * latency["fp32_ms"] or not section["kept_float"]
    assert all("cost_ms" in unit for unit in section["search"]["left"])
    missed = next(w["message"] for w in result.report["warnings"] if w["code"] == "tolerance_missed")
    assert "--latency-budget" in missed and " ms)" in missed


@pytest.mark.parametrize("budget", [0, 1.5, -0.2, "fast", True])
def test_a_latency_budget_is_a_fraction_of_the_float_time(budget):
    with pytest.raises(OptionError, match="latency_budget"):
        CompileOptions(target="ort", latency_budget=budget)


@pytest.mark.parametrize(
    ("options", "named"),
    [({"tolerance": None}, "--tolerance off"), ({"dynamic": True}, "--dynamic"), ({"verify": False}, "--no-verify")],
)
def test_a_latency_budget_with_nothing_to_choose_is_refused_not_ignored(options, named):
    with pytest.raises(OptionError, match=named):
        CompileOptions(target="ort", latency_budget=0.6, **options)


def test_a_budget_the_int8_plan_alone_breaks_is_named():
    model = _costly_model()
    options = dict(target="ort", calibration=random_feeds(model, 8), tolerance=0.02, method="minmax")
    result = _compile(model, latency_budget=0.05, refit=False, weight_rounding="nearest", **options)
    section = result.report["mixed_precision"]
    assert section["met"] is False and not section["kept_float"]
    latency = section["search"]["latency"]
    assert latency["budget"] == 0.05 and latency["int8_ms"] > 0.05 * latency["fp32_ms"]
    missed = next(w["message"] for w in result.report["warnings"] if w["code"] == "tolerance_missed")
    assert "the all-int8 plan alone is predicted at" in missed


def _log_mel_front_end(frames: int = 48, n_fft: int = 128, hop: int = 64, mels: int = 16) -> onnx.ModelProto:
    """An audio front end as exporters write it: the STFT as two Conv1d (a windowed DFT basis),
    power, a mel filterbank as a 1x1 Conv, Log of it plus a 1e-6 guard (folded into the mel
    Conv's bias), per-clip mean subtraction, then three Conv1d."""
    rng = np.random.default_rng(0)
    t = np.arange(n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * t / n_fft)
    bins = n_fft // 2 + 1
    k = np.arange(bins)[:, None]
    mel = np.zeros((mels, bins, 1), np.float32)
    edges = np.linspace(1, bins - 1, mels + 2).astype(int)
    for m in range(mels):
        lo, mid, hi = edges[m : m + 3]
        mel[m, lo:mid, 0] = np.linspace(0, 1, mid - lo, endpoint=False)
        mel[m, mid:hi, 0] = np.linspace(1, 0, hi - mid, endpoint=False)
    arrays = {
        "real": (np.cos(2 * np.pi * k * t / n_fft) * window)[:, None, :],
        "imag": (-np.sin(2 * np.pi * k * t / n_fft) * window)[:, None, :],
        "mel": mel,
        "w1": rng.normal(size=(32, mels, 3)) / np.sqrt(mels * 3),
        "w2": rng.normal(size=(32, 32, 3)) / np.sqrt(32 * 3),
        "w3": rng.normal(size=(8, 32, 1)) / np.sqrt(32),
        "eps": np.array(1e-6),
    }
    inits = [onnx.numpy_helper.from_array(np.asarray(a, np.float32), name) for name, a in arrays.items()]
    inits.append(onnx.numpy_helper.from_array(np.array([2], np.int64), "time"))
    node = onnx.helper.make_node
    nodes = [
        node("Conv", ["audio", "real"], ["re"], strides=[hop], name="stft_re"),
        node("Conv", ["audio", "imag"], ["im"], strides=[hop], name="stft_im"),
        node("Mul", ["re", "re"], ["re2"], name="re2"),
        node("Mul", ["im", "im"], ["im2"], name="im2"),
        node("Add", ["re2", "im2"], ["power"], name="power"),
        node("Conv", ["power", "mel"], ["melspec"], name="mel"),
        node("Add", ["melspec", "eps"], ["floored"], name="floor"),
        node("Log", ["floored"], ["logmel"], name="log"),
        node("ReduceMean", ["logmel", "time"], ["mean"], keepdims=1, name="mean"),
        node("Sub", ["logmel", "mean"], ["centred"], name="centre"),
        node("Conv", ["centred", "w1"], ["c1"], pads=[1, 1], name="conv1"),
        node("Relu", ["c1"], ["r1"], name="relu1"),
        node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1], name="conv2"),
        node("Relu", ["c2"], ["r2"], name="relu2"),
        node("Conv", ["r2", "w3"], ["logits"], name="conv3"),
    ]
    audio = onnx.helper.make_tensor_value_info("audio", onnx.TensorProto.FLOAT, [1, 1, (frames - 1) * hop + n_fft])
    logits = onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 8, frames])
    graph = onnx.helper.make_graph(nodes, "log_mel", [audio], [logits], inits)
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)], ir_version=9)


def _clips(model: onnx.ModelProto, count: int) -> list[dict[str, np.ndarray]]:
    """Tones at random pitches and levels over a little noise, loud clips and quiet ones."""
    rng = np.random.default_rng(1)
    samples = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    t = np.arange(samples) / 16000
    clips = []
    for _ in range(count):
        x = sum(rng.uniform(0.001, 1) * np.sin(2 * np.pi * rng.uniform(80, 4000) * t) for _ in range(3))
        x = (x + rng.normal(0, 5e-4, samples)) * 10 ** rng.uniform(-2, 0)
        clips.append({"audio": x[None, None].astype(np.float32)})
    return clips


def test_a_log_front_end_the_quantized_model_breaks_is_searched_not_skipped():
    """The 1e-6 guard before Log is folded into the mel Conv's bias, which int8 rounds to 0: Log(0)
    is -inf in the quantized model and its simulation was NaN, which compared as neither worse nor
    better, so the search kept nothing float and the compile reported 0 nodes for a 1 - cosine of
    0.4. Non-finite outputs now count as the worst error and a floated Conv keeps its float bias:
    the search floats the Log's input writers (the mel Conv and the power Add)."""
    model = _log_mel_front_end()
    result = _compile(model, target="ort", calibration=_clips(model, 16))
    section = result.report["mixed_precision"]
    floated = {k["node"] for k in section["kept_float"]}
    assert {"mel", "power"} <= floated, floated
    assert np.isfinite(section["simulated_error"]) and section["simulated_error"] < 1.0
    assert np.isfinite(section["artifact_error"])
    if not section["met"]:  # what is left must be named, with why the search stopped
        assert section["search"]["stopped"] in ("no_gain", "budget", "exhausted")


def test_a_latency_budget_survives_the_static_or_dynamic_choice():
    """A MatMul model that needs float nodes is compiled with ``--dynamic`` too, which runs no
    mixed precision: the budget must not make that candidate an invalid option."""
    model = _sensitive_model()
    result = _compile(model, target="ort", calibration=_calibration(model), tolerance=BOUND, latency_budget=1.0)
    assert "mode_selection" in result.report
    assert result.report["options"]["latency_budget"] == 1.0 or result.report["options"].get("dynamic")


def test_every_gate_has_its_tensors_rank_and_weights_are_fed_whole():
    # ONNX Runtime multiplies a tensor ending in 1-sized dimensions by a lower-rank gate through
    # its general broadcast, tens of times slower: half of MobileNetV2's simulated run. A weight
    # is fed its gated values instead, computed once.
    model, feeds = _planned_conv1d(2)
    sim = Simulation(model, feeds)
    graph = model.graph
    values = [*graph.inputs, *graph.initializers.values(), *(out for node in graph for out in node.outputs)]
    shapes = {v.name: list(v.shape) for v in values if v.shape is not None}
    fed = {i.name: i.shape for i in sim._session.get_inputs()}
    assert {"w1", "w2", "r"} <= set(sim.gates)
    for tensor, gate in sim.gates.items():
        weight = tensor in graph.initializers
        assert fed[gate] == (shapes[tensor] if weight else [1] * len(shapes[tensor])), tensor
    assert {t for t in sim.gates if t in graph.initializers} >= {"w1", "w2"}


def test_fed_weights_simulate_what_the_gate_nodes_computed():
    """A weight fed its gated values gives the outputs the Sub/Mul/Add gate gave, bit for bit."""
    model, feeds = _planned_conv1d(2)
    fed = Simulation(model, feeds)
    original = _simulation._fed_constant
    try:
        _simulation._fed_constant = lambda *args: None  # every quantizer gated by nodes
        gated = Simulation(model, feeds)
    finally:
        _simulation._fed_constant = original
    for choice in (None, set(), {"w1"}, {"r", "w2"}):
        for a, b in zip(fed.run(choice), gated.run(choice), strict=True):
            for x, y in zip(a, b, strict=True):
                np.testing.assert_array_equal(x, y)


def test_runs_side_by_side_give_what_runs_one_by_one_give():
    model, feeds = _planned_conv1d(3)
    sim = Simulation(model, feeds)
    choices = [None, set(), {"r"}, {"w1", "w2"}]
    for together, alone in zip(sim.run_each(choices), [sim.run(c) for c in choices], strict=True):
        assert len(together) == len(alone) == len(feeds)
        for a, b in zip(together, alone, strict=True):
            np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(sim.run_each([None])[0][0][0], sim.run_each([set()])[0][0][0])  # gates switch
    assert sim.evaluations == 2 * len(choices) + 2


def test_fed_gate_values_are_onnxruntimes_sub_mul_add_bit_for_bit():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(4096).astype(np.float32)
    q = (np.round(x / np.float32(0.037)) * np.float32(0.037)).astype(np.float32)
    x[:3], q[:3] = (3.0, -2.5, 1e-3), (1e-8, 7e-9, 5.0)  # q far from x: q - x is rounded
    assert np.any(x + (q - x) != q)  # where feeding q itself would change the simulation
    graph = helper.make_graph(
        [
            helper.make_node("Sub", ["q", "x"], ["d"]),
            helper.make_node("Mul", ["d", "g"], ["m"]),
            helper.make_node("Add", ["x", "m"], ["y"]),
        ],
        "gate",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in (("x", [4096]), ("q", [4096]), ("g", [1]))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4096])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for gate in (0.0, 1.0):
        (expected,) = sess.run(None, {"x": x, "q": q, "g": np.array([gate], np.float32)})
        np.testing.assert_array_equal(_simulation.gated(x, q, gate), expected)


def _planned_conv1d(samples: int, target: str = "ort"):
    """CONV1D planned and calibrated for ``target`` on ``samples`` random feeds (no mixed
    precision), with the feeds."""
    model = build_model(CONV1D, seed=3)
    feeds = random_feeds(model, samples, seed=2, batch=2)
    loaded = load(model)
    data = open_calibration(feeds, loaded.input_specs())
    ctx = PassContext(CompileOptions(target=target, method="minmax", tolerance=None), get_backend(target).spec, data)
    run_pipeline(loaded.model, ctx)
    return loaded.model, feeds
