"""The driver's recovery paths: non-finite tensors are kept float, with the reason reported."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import pytest

import qcc
from qcc import driver
from qcc.options import CompileOptions
from tests.conftest import build_model, fidelity, random_feeds


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


def test_tensors_that_calibrate_to_inf_are_replanned_float():
    # Log(Relu(x)) is -inf wherever x <= 0: the MatMul reading it cannot be int8.
    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[8,8] w1, float[8,8] w2, float[1,8] x) => (float[1,8] y) {
          h = MatMul(x, w1)
          r = Relu(h)
          l = Log(r)
          e = Exp(l)
          y = MatMul(l, w2)
        }
        """
    )
    result = qcc.compile(model, calibration=random_feeds(model, 8))
    by_name = {n["name"]: n for n in result.report["nodes"]}
    assert by_name["y"]["decision"] == "float" and "non-finite" in by_name["y"]["reason"]
    assert by_name["h"]["decision"] == "int8"
    assert result.report["verify"]["quantized_but_float"] == []


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


def _candidate(error: float, kept_float: int) -> SimpleNamespace:
    """A compile result as far as the rounding selection reads it: the artifact's output error
    (1 - cosine) and how many nodes mixed precision kept float."""
    return SimpleNamespace(report={
        "verify": {"fidelity": {"outputs": {"y": {"cosine_mean": 1.0 - error}}}},
        "mixed_precision": {"kept_float": [{"node": f"n{i}"} for i in range(kept_float)]},
    })


@pytest.mark.parametrize(
    ("gptq", "nearest", "chosen"),
    [
        ((0.0015, 3), (0.0010, 9), "gptq"),  # both within the bound: the faster artifact
        ((0.0015, 3), (0.0010, 3), "nearest"),  # as many float: the closer one
        ((0.0030, 3), (0.0010, 9), "nearest"),  # only nearest meets it
        ((0.0040, 3), (0.0030, 9), "nearest"),  # neither meets it: the closer one
    ],
)
def test_the_rounding_selection_prefers_fewer_float_nodes_when_both_meet_the_bound(gptq, nearest, chosen):
    options = CompileOptions(tolerance=0.002)
    candidates = {"gptq": _candidate(*gptq), "nearest": _candidate(*nearest)}
    best = driver._keep_closer(options, "rounding_selection", candidates, "test", fewer_float=True)
    assert best is candidates[chosen]
    assert best.report["rounding_selection"]["chosen"] == chosen
    assert best.report["rounding_selection"]["kept_float"] == {"gptq": gptq[1], "nearest": nearest[1]}


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
