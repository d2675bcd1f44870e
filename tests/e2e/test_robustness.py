"""Properties every compile must have: determinism, control flow left intact, odd inputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper as h
from onnx import numpy_helper as nh

import qcc
from tests.conftest import fidelity, random_feeds
from tests.e2e.synthetic import synthetic_model


@pytest.mark.parametrize("target", ["ort", "trt"])
def test_same_inputs_give_byte_identical_artifacts(target):
    model = synthetic_model("residual_cnn")
    first = qcc.compile(model, target=target, calibration=random_feeds(model, 8)).artifact.data
    second = qcc.compile(model, target=target, calibration=random_feeds(model, 8)).artifact.data
    assert first == second


def _if_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = nh.from_array(rng.normal(size=(32, 32)).astype(np.float32), "w")
    then_g = h.make_graph(
        [h.make_node("MatMul", ["x", "w"], ["t"])], "then", [], [h.make_tensor_value_info("t", 1, [1, 32])]
    )
    else_g = h.make_graph([h.make_node("Relu", ["x"], ["e"])], "else", [], [h.make_tensor_value_info("e", 1, [1, 32])])
    nodes = [
        h.make_node("MatMul", ["x0", "w"], ["x"], name="mm"),
        h.make_node("ReduceSum", ["x"], ["s"], keepdims=0, name="sum"),
        h.make_node("Greater", ["s", "zero"], ["c"], name="cond"),
        h.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g, name="branch"),
    ]
    graph = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x0", 1, [2, 32])],
        [h.make_tensor_value_info("y", 1, [2, 32])],
        [w, nh.from_array(np.array(0, np.float32), "zero")],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("target", ["ort", "trt"])
def test_control_flow_subgraphs_stay_float_and_the_graph_still_runs(target):
    model = _if_model()
    result = qcc.compile(model, target=target, calibration=random_feeds(model, 8))
    branch = {n["name"]: n for n in result.report["nodes"]}["branch"]
    assert branch["decision"] == "float" and "subgraphs stay float" in branch["reason"]
    assert result.report["verify"]["ok"]
    assert fidelity(model, result.model, random_feeds(model, 4, seed=7)) > 0.99


def test_all_zero_activation_does_not_produce_nan_scales():
    model = synthetic_model("mlp")
    zeros = [{"x": np.zeros((1, 64), np.float32)} for _ in range(4)]
    result = qcc.compile(model, calibration=zeros)
    scales = [np.asarray(t["scale"], dtype=np.float64) for t in result.report["tensors"].values()]
    assert all(np.all(np.isfinite(s)) and np.all(s > 0) for s in scales)
    assert result.report["verify"]["fidelity"]["finite"]
