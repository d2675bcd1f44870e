"""Attention, RotaryEmbedding, LinearAttention, CausalConvWithState and TensorScatter lowered to TFLite.

Each single-op model is compiled for ``tflite`` (the op runs float), run in LiteRT under both
resolvers and compared with ONNX Runtime on the float model; one case sits between int8 MatMuls
and is checked by ``verify()``.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import qcc
from qcc.backends._tflite_litert import interpreter, run, run_all
from qcc.errors import QccError
from tests.conftest import random_feeds
from tests.conftest import run as run_ort

_F, _H, _B, _I = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BOOL, TensorProto.INT64
_NUMPY = {_F: np.float32, _H: np.float16, _B: np.bool_, _I: np.int64}


def _model(op: str, opset: int, inputs, outputs, constants=None, **attributes) -> onnx.ModelProto:
    """One ``op`` node; ``inputs``/``outputs`` are ``(name, type, shape)`` ("" skips an optional one)."""
    constants = constants or {}
    node = helper.make_node(op, [i[0] for i in inputs], [o[0] for o in outputs], **attributes)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(*i) for i in inputs if i[0] and i[0] not in constants],
        [helper.make_tensor_value_info(*o) for o in outputs if o[0]],
        [onnx.numpy_helper.from_array(v, k) for k, v in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _feed(model: onnx.ModelProto, overrides: dict[str, np.ndarray], seed: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feed = {}
    for value in model.graph.input:
        if value.name in overrides:
            feed[value.name] = overrides[value.name]
            continue
        kind = value.type.tensor_type.elem_type
        shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
        feed[value.name] = rng.normal(0, 1, shape).astype(_NUMPY[kind])
    return feed


def _qkv(q, k, v, dtype=_F):
    return [("q", dtype, q), ("k", dtype, k), ("v", dtype, v)]


_CAUSAL_MASK = np.array([[True, True, False, True, True, True]] * 3 + [[False] * 6])
# name -> (op, opset, inputs, outputs, constants, feed overrides, attributes)
CASES = {
    "attention_4d_gqa_causal_bool_mask_past": (
        "Attention", 23,
        [*_qkv([2, 4, 3, 8], [2, 2, 3, 8], [2, 2, 3, 6]), ("m", _B, [3, 6]), ("pk", _F, [2, 2, 3, 8]),
         ("pv", _F, [2, 2, 3, 6])],
        [("y", _F, [2, 4, 3, 6]), ("present_k", _F, [2, 2, 6, 8]), ("present_v", _F, [2, 2, 6, 6])],
        {}, {"m": _CAUSAL_MASK[:3]}, {"is_causal": 1},
    ),
    "attention_fully_masked_row_run_time_mask": (
        "Attention", 23, [*_qkv([1, 2, 4, 8], [1, 2, 6, 8], [1, 2, 6, 8]), ("m", _B, [4, 6])],
        [("y", _F, [1, 2, 4, 8])], {}, {"m": _CAUSAL_MASK}, {},
    ),
    "attention_3d_softcap_probabilities": (
        "Attention", 23, [*_qkv([2, 4, 24], [2, 5, 12], [2, 5, 12]), ("m", _F, [4, 5])],
        [("y", _F, [2, 4, 24]), ("", _F, None), ("", _F, None), ("qk", _F, [2, 6, 4, 5])],
        {}, {}, {"q_num_heads": 6, "kv_num_heads": 3, "softcap": 1.5, "qk_matmul_output_mode": 3, "scale": 0.2},
    ),
    "attention_scores_with_constant_bias": (
        "Attention", 23, [*_qkv([1, 2, 3, 4], [1, 2, 5, 4], [1, 2, 5, 4]), ("mask", _F, [1, 2, 3, 5])],
        [("y", _F, [1, 2, 3, 4]), ("", _F, None), ("", _F, None), ("qk", _F, [1, 2, 3, 5])],
        {"mask": np.random.default_rng(0).normal(0, 1, [1, 2, 3, 5]).astype(np.float32)}, {},
        {"qk_matmul_output_mode": 2},
    ),
    "attention_run_time_nonpad_causal_window": (
        "Attention", 25, [*_qkv([2, 2, 3, 8], [2, 2, 6, 8], [2, 2, 6, 8]), ("", _F, None), ("", _F, None),
                          ("", _F, None), ("n", _I, [2])],
        [("y", _F, [2, 2, 3, 8])], {}, {"n": np.array([5, 3], np.int64)}, {"is_causal": 1, "left_window_size": 2},
    ),
    "attention_fp16": (
        "Attention", 23, _qkv([1, 2, 3, 8], [1, 2, 4, 8], [1, 2, 4, 8], _H), [("y", _H, [1, 2, 3, 8])], {}, {},
        {"is_causal": 1},
    ),
    "rotary_4d_interleaved_run_time_positions": (
        "RotaryEmbedding", 23, [("x", _F, [2, 3, 4, 8]), ("cos", _F, [10, 4]), ("sin", _F, [10, 4]),
                                ("pos", _I, [2, 4])],
        [("y", _F, [2, 3, 4, 8])], {}, {"pos": np.array([[0, 1, 2, 3], [5, 6, 7, 9]], np.int64)}, {"interleaved": 1},
    ),
    "rotary_3d_partial_constant_caches": (
        "RotaryEmbedding", 23, [("x", _F, [2, 3, 24]), ("cos", _F, [2, 3, 2]), ("sin", _F, [2, 3, 2])],
        [("y", _F, [2, 3, 24])],
        {"cos": np.cos(np.arange(12, dtype=np.float32)).reshape(2, 3, 2),
         "sin": np.sin(np.arange(12, dtype=np.float32)).reshape(2, 3, 2)}, {},
        {"num_heads": 4, "rotary_embedding_dim": 4},
    ),
    "linear_attention_gated_delta_gqa": (
        "LinearAttention", 27, [("q", _F, [2, 3, 16]), ("k", _F, [2, 3, 8]), ("v", _F, [2, 3, 6]),
                                ("s", _F, [2, 2, 4, 3]), ("g", _F, [2, 3, 2]), ("r", _F, [2, 3, 2])],
        [("y", _F, [2, 3, 12]), ("state", _F, [2, 2, 4, 3])], {},
        {"g": -np.abs(np.random.default_rng(1).normal(0, 1, [2, 3, 2])).astype(np.float32),
         "r": np.random.default_rng(2).uniform(0, 1, [2, 3, 2]).astype(np.float32)},
        {"q_num_heads": 4, "kv_num_heads": 2},
    ),
    "linear_attention_linear": (
        "LinearAttention", 27, [("q", _F, [1, 4, 8]), ("k", _F, [1, 4, 8]), ("v", _F, [1, 4, 8])],
        [("y", _F, [1, 4, 8]), ("state", _F, [1, 2, 4, 4])], {}, {},
        {"q_num_heads": 2, "kv_num_heads": 2, "update_rule": "linear"},
    ),
    "causal_conv_silu_bias_past": (
        "CausalConvWithState", 27, [("x", _F, [2, 3, 5]), ("k", _F, [3, 1, 3]), ("c", _F, [3]), ("p", _F, [2, 3, 2])],
        [("y", _F, [2, 3, 5]), ("state", _F, [2, 3, 2])], {}, {}, {"activation": "silu"},
    ),
    "causal_conv_constant_weight_short_input": (
        "CausalConvWithState", 27, [("x", _F, [1, 2, 2]), ("k", _F, [2, 1, 4])],
        [("y", _F, [1, 2, 2]), ("state", _F, [1, 2, 3])],
        {"k": np.arange(8, dtype=np.float32).reshape(2, 1, 4) / 8}, {}, {},
    ),
    "tensor_scatter_circular_run_time_indices": (
        "TensorScatter", 24, [("cache", _F, [3, 2, 5, 4]), ("u", _F, [3, 2, 2, 4]), ("at", _I, [3])],
        [("y", _F, [3, 2, 5, 4])], {}, {"at": np.array([0, 4, 2], np.int64)}, {"mode": "circular"},
    ),
    "tensor_scatter_linear_axis1_constant_indices": (
        "TensorScatter", 24, [("cache", _F, [2, 6, 3]), ("u", _F, [2, 2, 3]), ("at", _I, [2])],
        [("y", _F, [2, 6, 3])], {"at": np.array([1, 4], np.int64)}, {}, {"axis": 1},
    ),
}


def case_model(name: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The single-op model ``name`` of ``CASES`` and its feed."""
    op, opset, inputs, outputs, constants, overrides, attributes = CASES[name]
    model = _model(op, opset, inputs, outputs, constants, **attributes)
    return model, _feed(model, overrides)


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_matches_onnxruntime_on_both_resolvers(name):
    model, feed = case_model(name)
    result = qcc.compile(model, target="tflite", calibration=[feed], verify=False)
    expected = run_ort(model, feed)
    for resolver in ("xnnpack", "builtin"):
        got = run(interpreter(result.artifact.data, resolver), feed, [np.shape(e) for e in expected])
        for e, g in zip(expected, got, strict=True):
            tolerance = 2e-2 if e.dtype == np.float16 else 1e-4
            np.testing.assert_allclose(np.asarray(g, np.float64), e.astype(np.float64), rtol=tolerance,
                                       atol=tolerance, err_msg=f"{name} {resolver}")


def test_attention_between_int8_matmuls_passes_verify():
    inputs = [helper.make_tensor_value_info("x", _F, [1, 4, 16])]
    rng = np.random.default_rng(0)
    weights = [onnx.numpy_helper.from_array((rng.normal(0, 0.25, [16, 16])).astype(np.float32), f"w{i}")
               for i in range(2)]
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["h"]),
        helper.make_node("Attention", ["h", "h", "h"], ["a"], q_num_heads=2, kv_num_heads=2, is_causal=1),
        helper.make_node("MatMul", ["a", "w1"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", _F, [1, 4, 16])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    result = qcc.compile(model, target="tflite", calibration=random_feeds(model, 8))
    for resolver, entry in result.report["verify"]["resolvers"].items():
        assert entry["ok"], (resolver, entry)


def test_attention_with_heads_that_do_not_group_is_refused():
    model = _model("Attention", 23, _qkv([1, 3, 2, 4], [1, 2, 2, 4], [1, 2, 2, 4]), [("y", _F, [1, 3, 2, 4])])
    with pytest.raises(QccError, match="3 query heads over 2 KV heads"):
        qcc.compile(model, target="tflite", calibration=[_feed(model, {})], verify=False)


def test_causal_window_attention_with_run_time_lengths_stays_dynamic():
    # GQA, a past cache: the sequence and past lengths are both dynamic.
    inputs = [("q", _F, [1, 4, "s", 8]), ("k", _F, [1, 2, "s", 8]), ("v", _F, [1, 2, "s", 8]), ("", _F, None),
              ("pk", _F, [1, 2, "p", 8]), ("pv", _F, [1, 2, "p", 8])]
    outputs = [("y", _F, [1, 4, "s", 8]), ("present_k", _F, [1, 2, "t", 8]), ("present_v", _F, [1, 2, "t", 8])]
    model = _model("Attention", 25, inputs, outputs, is_causal=1, left_window_size=2)
    rng = np.random.default_rng(4)

    def sample(s: int, p: int) -> dict[str, np.ndarray]:
        sizes = {"q": (1, 4, s, 8), "k": (1, 2, s, 8), "v": (1, 2, s, 8), "pk": (1, 2, p, 8), "pv": (1, 2, p, 8)}
        return {name: rng.normal(0, 1, size).astype(np.float32) for name, size in sizes.items()}

    result = qcc.compile(model, target="tflite", calibration=[sample(3, 2), sample(5, 4)])
    assert result.report["verify"]["shapes"]["dynamic"], result.report["verify"]["shapes"]
    feed = sample(4, 7)
    expected = run_ort(model, feed)
    for resolver in ("xnnpack", "builtin"):
        (got,) = run_all(interpreter(result.artifact.data, resolver), [feed], [[e.shape for e in expected]])
        for e, g in zip(expected, got, strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4, err_msg=resolver)


def test_linear_attention_past_the_unrolling_limit_is_refused(monkeypatch):
    from qcc.backends import _tflite_ops_state

    monkeypatch.setattr(_tflite_ops_state, "MAX_STEPS", 3)
    model, feed = case_model("linear_attention_linear")
    with pytest.raises(QccError, match="4 steps"):
        qcc.compile(model, target="tflite", calibration=[feed], verify=False)


def test_causal_conv_with_run_time_length_stays_dynamic():
    inputs = [("x", _F, [1, 3, "t"]), ("k", _F, [3, 1, 4]), ("", _F, None), ("p", _F, [1, 3, 3])]
    model = _model("CausalConvWithState", 27, inputs, [("y", _F, [1, 3, "t"]), ("state", _F, [1, 3, 3])],
                   {"k": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 1, 4)}, activation="silu")
    rng = np.random.default_rng(5)

    def sample(t: int) -> dict[str, np.ndarray]:
        x, p = rng.normal(0, 1, (1, 3, t)), rng.normal(0, 1, (1, 3, 3))
        return {"x": x.astype(np.float32), "p": p.astype(np.float32)}

    result = qcc.compile(model, target="tflite", calibration=[sample(5), sample(8)])
    assert result.report["verify"]["shapes"]["dynamic"], result.report["verify"]["shapes"]
    feed = sample(2)
    expected = run_ort(model, feed)
    for resolver in ("xnnpack", "builtin"):
        (got,) = run_all(interpreter(result.artifact.data, resolver), [feed], [[e.shape for e in expected]])
        for e, g in zip(expected, got, strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4, err_msg=resolver)
