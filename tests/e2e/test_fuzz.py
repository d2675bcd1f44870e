"""Property-based fuzzing: random valid CNN graphs over the supported op set, for every target.

Each generated model either compiles into an artifact that runs in its runtime, with finite
outputs and, on the calibration inputs (where its ranges hold), outputs close to the float model,
or the compile raises a ``QccError``. Any other exception is a
failure. ``make test`` runs a bounded, derandomized set; ``make fuzz`` runs many more
(``QCC_FUZZ_EXAMPLES``); with ``QCC_FUZZ_DUMP=DIR`` the model of a failure is left in DIR.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper as h
from onnx import numpy_helper as nh

import qcc
from tests.conftest import fidelity, run

EXAMPLES = int(os.environ.get("QCC_FUZZ_EXAMPLES", "40"))
# Random weights, int8, at most ~8 layers: anything below this is a qcc bug, not quantization noise.
MIN_COSINE = 0.95


class _Builder:
    """Grows a random graph of 4-D tensors (N, C, H, W) from drawn decisions."""

    def __init__(self, draw, channels: int, size: int) -> None:
        self.draw = draw
        self.rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.tensors = [("x", channels, size, size)]

    def const(self, array: np.ndarray) -> str:
        name = f"c{len(self.inits)}"
        self.inits.append(nh.from_array(array.astype(np.float32), name))
        return name

    def out(self) -> str:
        return f"t{len(self.nodes)}"

    def step(self) -> None:
        name, c, hh, ww = self.draw(st.sampled_from(self.tensors))
        op = self.draw(st.sampled_from(["conv", "dwconv", "act", "add", "mul", "pool", "concat", "resize"]))
        out = self.out()
        if op == "conv":
            k = self.draw(st.sampled_from([1, 3]))
            co = self.draw(st.sampled_from([4, 8, 16]))
            w = self.const(self.rng.normal(0, 1 / np.sqrt(c * k * k), (co, c, k, k)))
            b = self.const(self.rng.normal(0, 0.1, co))
            self.nodes.append(h.make_node("Conv", [name, w, b], [out], pads=[k // 2] * 4))
            self.tensors.append((out, co, hh, ww))
        elif op == "dwconv":
            w = self.const(self.rng.normal(0, 1 / 3, (c, 1, 3, 3)))
            self.nodes.append(h.make_node("Conv", [name, w], [out], pads=[1] * 4, group=c))
            self.tensors.append((out, c, hh, ww))
        elif op == "act":
            kind = self.draw(st.sampled_from(["Relu", "Sigmoid", "LeakyRelu", "Clip"]))
            inputs = [name, self.const(np.array(0.0)), self.const(np.array(6.0))] if kind == "Clip" else [name]
            self.nodes.append(h.make_node(kind, inputs, [out]))
            self.tensors.append((out, c, hh, ww))
        elif op in ("add", "mul"):
            same = [t for t in self.tensors if t[1:] == (c, hh, ww) and t[0] != name]
            other = self.draw(st.sampled_from(same))[0] if same else self.const(self.rng.normal(1, 0.2, (1, c, 1, 1)))
            self.nodes.append(h.make_node("Add" if op == "add" else "Mul", [name, other], [out]))
            self.tensors.append((out, c, hh, ww))
        elif op == "pool" and hh >= 4 and ww >= 4:
            kind = self.draw(st.sampled_from(["MaxPool", "AveragePool"]))
            self.nodes.append(h.make_node(kind, [name], [out], kernel_shape=[2, 2], strides=[2, 2]))
            self.tensors.append((out, c, hh // 2, ww // 2))
        elif op == "concat":
            same = [t for t in self.tensors if t[2:] == (hh, ww)]
            other = self.draw(st.sampled_from(same))
            self.nodes.append(h.make_node("Concat", [name, other[0]], [out], axis=1))
            self.tensors.append((out, c + other[1], hh, ww))
        elif op == "resize" and hh <= 12:
            scales = self.const(np.array([1, 1, 2, 2]))
            self.nodes.append(h.make_node("Resize", [name, "", scales], [out], mode="nearest"))
            self.tensors.append((out, c, hh * 2, ww * 2))

    def model(self, head: str) -> onnx.ModelProto:
        name, c, hh, ww = self.tensors[-1]
        outputs = [h.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [1, c, hh, ww])]
        if head == "classifier":
            self.nodes.append(h.make_node("GlobalAveragePool", [name], ["gap"]))
            self.nodes.append(h.make_node("Flatten", ["gap"], ["flat"]))
            w = self.const(self.rng.normal(0, 1 / np.sqrt(c), (24, c)))
            self.nodes.append(h.make_node("Gemm", ["flat", w], ["y"], transB=1))
            outputs = [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 24])]
        c0, s0 = self.tensors[0][1], self.tensors[0][2]
        graph = h.make_graph(
            self.nodes,
            "fuzz",
            [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, c0, s0, s0])],
            outputs,
            self.inits,
        )
        model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


@st.composite
def cnn_models(draw) -> onnx.ModelProto:
    builder = _Builder(draw, draw(st.sampled_from([3, 4, 8])), draw(st.sampled_from([4, 6, 8, 12])))
    for _ in range(draw(st.integers(1, 7))):
        builder.step()
    return builder.model(draw(st.sampled_from(["classifier", "map"])))


def _feeds(model: onnx.ModelProto, count: int, seed: int) -> list[dict[str, np.ndarray]]:
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(0, 1, dims).astype(np.float32)} for _ in range(count)]


@pytest.mark.parametrize("target", ["ort", "trt", "tflite"])
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(model=cnn_models())
def test_random_graphs_compile_and_run_or_say_why(target, model):
    if os.environ.get("QCC_FUZZ_DUMP"):  # keep the last model tried, to reproduce a failure
        onnx.save(model, os.path.join(os.environ["QCC_FUZZ_DUMP"], f"fuzz_{target}.onnx"))
    try:
        result = qcc.compile(model, target=target, calibration=_feeds(model, 6, seed=1))
    except qcc.QccError as error:
        assert str(error) and "\n" not in str(error)
        return
    assert "fidelity" in result.report["verify"], result.report["verify"]
    assert result.report["verify"]["fidelity"]["finite"], result.report["verify"]
    if result.model is not None:
        # Within the calibrated ranges the error is bounded by the scales: close to float there.
        # Unseen inputs may fall outside those ranges (6 samples of noise), so they must only run.
        assert fidelity(model, result.model, _feeds(model, 6, seed=1)) >= MIN_COSINE
        unseen = run(result.model, _feeds(model, 1, seed=2)[0])
        assert all(np.all(np.isfinite(o)) for o in unseen)
    else:  # .tflite: verify() ran it in LiteRT
        cosines = [o["cosine_min"] for o in result.report["verify"]["fidelity"]["outputs"].values()]
        assert min(cosines) >= MIN_COSINE, result.report["verify"]
