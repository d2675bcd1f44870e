"""A Split that undoes a Concat is pushed up until the two cancel (passes/_split_concat.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qcc
from qcc.passes.canonicalize import CanonicalizePass
from tests.conftest import build_model, float_passes, op_types, run, to_proto

# The YOLOv8 head as the Ultralytics exporter writes it with dynamic axes: per scale, box and class
# logits concatenated on channels and flattened; the scales concatenated on positions; then split
# back into box and class parts. The batch dim of each Reshape comes from Shape(concat).
YOLO_HEAD = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N,8,H,W] p3, float[N,8,h,w] p4, float[4,8,1,1] wb3, float[2,8,1,1] wc3, float[4,8,1,1] wb4, float[2,8,1,1] wc4,
   int64[1] zero, int64[2] rest, int64[2] sizes) => (float[N,6,M] y) {
  b3 = Conv<kernel_shape=[1,1]>(p3, wb3)
  c3 = Conv<kernel_shape=[1,1]>(p3, wc3)
  b4 = Conv<kernel_shape=[1,1]>(p4, wb4)
  c4 = Conv<kernel_shape=[1,1]>(p4, wc4)
  x3 = Concat<axis=1>(b3, c3)
  x4 = Concat<axis=1>(b4, c4)
  s3 = Shape(x3)
  n3 = Gather<axis=0>(s3, zero)
  t3 = Concat<axis=0>(n3, rest)
  r3 = Reshape(x3, t3)
  s4 = Shape(x4)
  n4 = Gather<axis=0>(s4, zero)
  t4 = Concat<axis=0>(n4, rest)
  r4 = Reshape(x4, t4)
  both = Concat<axis=2>(r3, r4)
  box, cls = Split<axis=1>(both, sizes)
  prob = Sigmoid(cls)
  y = Concat<axis=1>(box, prob)
}
"""
YOLO_CONSTANTS = {
    "zero": np.array([0], np.int64),
    "rest": np.array([6, -1], np.int64),
    "sizes": np.array([4, 2], np.int64),
}


def _yolo_head() -> onnx.ModelProto:
    model = build_model(YOLO_HEAD, constants=YOLO_CONSTANTS)
    for name, (out_channels, scale) in {"wb3": (4, 10.0), "wc3": (2, 1.0), "wb4": (4, 10.0), "wc4": (2, 1.0)}.items():
        weight = np.random.default_rng(len(name) + out_channels).normal(0, scale, (out_channels, 8, 1, 1))
        init = next(i for i in model.graph.initializer if i.name == name)
        init.CopyFrom(onnx.numpy_helper.from_array(weight.astype(np.float32), name))
    return model


def _feed(n: int, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "p3": rng.normal(size=(n, 8, 2 * size, 2 * size)).astype(np.float32),
        "p4": rng.normal(size=(n, 8, size, size)).astype(np.float32),
    }


def test_yolo_head_split_cancels_and_keeps_every_shape():
    model = _yolo_head()
    result = float_passes(model, CanonicalizePass)
    assert "Split" not in op_types(result)
    # Each Conv output reaches its part under its own name; the class part is no longer concatenated with the boxes.
    sigmoid = next(n for n in result.graph if n.op_type == "Sigmoid")
    assert {n.op_type for n in _producers_upstream(sigmoid)} >= {"Conv"}
    assert not any("b3" == v.name or "b4" == v.name for v in _values_upstream(sigmoid))
    for n, size in ((1, 4), (3, 5)):
        feed = _feed(n, size)
        np.testing.assert_allclose(run(to_proto(result), feed)[0], run(model, feed)[0], rtol=0, atol=0)


def test_a_shape_read_from_the_end_is_not_rewired():
    """Gather(Shape(t), -3) names dim 0 of the 3-D reshape output but would name dim 1 of its 4-D
    input: the Reshape stays (the Concat under it still cancels with a Split of its own)."""
    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N,2,3,4] p, float[N,3,3,4] q, int64[3] shape, int64[2] sizes, int64[1] back) => (float[?,?,?] y0,
           float[?,?,?] y1, int64[1] n) {
          s = Concat<axis=1>(p, q)
          t = Reshape(s, shape)
          y0, y1 = Split<axis=1>(t, sizes)
          d = Shape(t)
          n = Gather<axis=0>(d, back)
        }
        """,
        constants={
            "shape": np.array([0, 5, -1], np.int64),
            "sizes": np.array([2, 3], np.int64),
            "back": np.array([-3], np.int64),
        },
    )
    result = float_passes(model, CanonicalizePass)
    assert "Reshape" in op_types(result)
    feed = {"p": np.ones((2, 2, 3, 4), np.float32), "q": np.zeros((2, 3, 3, 4), np.float32)}
    for got, want in zip(run(to_proto(result), feed), run(model, feed), strict=True):
        np.testing.assert_array_equal(got, want)


def _values_upstream(node):
    seen, stack = [], list(node.inputs)
    while stack:
        value = stack.pop()
        if value is None or value in seen:
            continue
        seen.append(value)
        if value.producer() is not None:
            stack.extend(value.producer().inputs)
    return seen


def _producers_upstream(node):
    return [v.producer() for v in _values_upstream(node) if v.producer() is not None]


@pytest.mark.parametrize(
    ("sizes", "left"),
    [
        ([3, 5], []),  # pieces fall on input boundaries: 3 | 2+3
        ([2, 6], ["Split"]),  # 2 cuts input a: left alone
    ],
)
def test_split_on_the_concat_axis(sizes, left):
    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1,3,4] p, float[1,2,4] q, float[1,3,4] k, int64[2] sizes) => (float[1,?,4] y0, float[1,?,4] y1) {
          r = Relu(p)
          s = Concat<axis=1>(r, q, k)
          y0, y1 = Split<axis=1>(s, sizes)
        }
        """,
        constants={"sizes": np.array(sizes, np.int64)},
    )
    result = float_passes(model, CanonicalizePass)
    assert [t for t in op_types(result) if t == "Split"] == left
    assert [o.name for o in result.graph.outputs] == ["y0", "y1"]
    feed = {
        k: np.random.default_rng(1).normal(size=s).astype(np.float32)
        for k, s in (("p", (1, 3, 4)), ("q", (1, 2, 4)), ("k", (1, 3, 4)))
    }
    for got, want in zip(run(to_proto(result), feed), run(model, feed), strict=True):
        np.testing.assert_array_equal(got, want)


def test_graph_input_piece_becomes_a_copy_under_the_output_name():
    model = build_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1,3] p, float[1,2] q, int64[2] sizes) => (float[1,3] y0, float[1,2] y1) {
          s = Concat<axis=1>(p, q)
          y0, y1 = Split<axis=1>(s, sizes)
        }
        """,
        constants={"sizes": np.array([3, 2], np.int64)},
    )
    result = float_passes(model, CanonicalizePass)
    assert op_types(result) == ["Identity", "Identity"]
    feed = {"p": np.ones((1, 3), np.float32), "q": np.full((1, 2), 2, np.float32)}
    for got, want in zip(run(to_proto(result), feed), run(model, feed), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    ("body", "sizes", "shape"),
    [
        # the Concat feeds something else too
        ("s = Concat<axis=1>(p, q)\n y0, y1 = Split<axis=1>(s, sizes)\n z = Relu(s)", [4, 6], [0]),
        # the Reshape moves data across the split axis: (1, 5, 4) -> (1, 4, 5)
        (
            "s = Concat<axis=2>(p, q)\n t = Reshape(s, shape)\n y0, y1 = Split<axis=1>(t, sizes)\n z = Relu(p)",
            [2, 2],
            [1, 4, 5],
        ),
    ],
)
def test_left_alone_when_the_rewrite_would_not_be_exact(body, sizes, shape):
    model = build_model(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1,5,2] p, float[1,5,2] q, int64[2] sizes, int64[{len(shape)}] shape)
          => (float[1,?,?] y0, float[1,?,?] y1, float[?,?,?] z) {{
          {body}
        }}
        """,
        constants={"sizes": np.array(sizes, np.int64), "shape": np.array(shape, np.int64)},
    )
    result = float_passes(model, CanonicalizePass)
    assert "Split" in op_types(result)
    feed = {k: np.random.default_rng(2).normal(size=(1, 5, 2)).astype(np.float32) for k in "pq"}
    for got, want in zip(run(to_proto(result), feed), run(model, feed), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("target", ["ort", "trt", "tflite"])
def test_class_logits_get_their_own_scale(target):
    """Box and class logits no longer share one int8 scale; every target's artifact still matches float."""
    model = _yolo_head()
    calibration = [_feed(1, 4, seed) for seed in range(4)]
    result = qcc.compile(model, target=target, calibration=calibration)
    if target != "trt":  # TensorRT quantizes a Conv's inputs, not its output
        tensors = result.report["tensors"]
        box = {tensors[name]["scale"] for name in ("b3", "b4")}
        cls = {tensors[name]["scale"] for name in ("c3", "c4")}
        assert not box & cls
    assert result.report["verify"]["fidelity"]["outputs"]["y"]["cosine_min"] > 0.99


@st.composite
def _split_of_concats(draw):
    """A random head: k inputs (N, c_i, H, W) concatenated on channels, optionally flattened to
    (N, C, H*W) and concatenated with a second such branch on the last axis, then split on channels
    at the input widths or at random cuts; N, H, W are symbolic or static."""
    widths = draw(st.lists(st.integers(1, 4), min_size=2, max_size=4))
    flatten = draw(st.booleans())
    second = flatten and draw(st.booleans())
    total = sum(widths)
    if draw(st.booleans()):
        sizes = list(widths)
    else:
        cuts = sorted(draw(st.sets(st.integers(1, total - 1), min_size=1, max_size=3)))
        sizes = [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]
    symbolic = draw(st.booleans())
    dims = "N,{c},H,W" if symbolic else "2,{c},3,4"
    inputs = [f"float[{dims.format(c=c)}] x{i}" for i, c in enumerate(widths)]
    body = [f"s = Concat<axis=1>({', '.join(f'x{i}' for i in range(len(widths)))})"]
    last = "s"
    if flatten:
        body.append("t = Reshape(s, shape)")
        last = "t"
        if second:
            inputs.append(f"float[{dims.format(c=total).rsplit(',', 2)[0]},5] z")
            body.append("u = Concat<axis=2>(t, z)")
            last = "u"
    outs = [f"y{j}" for j in range(len(sizes))]
    body.append(f"{', '.join(outs)} = Split<axis=1>({last}, sizes)")
    text = (
        '<ir_version: 8, opset_import: ["" : 17]>\n'
        f"g ({', '.join(inputs)}, int64[{len(sizes)}] sizes, int64[3] shape)"
        f" => ({', '.join(f'float[?,?,?] {o}' for o in outs)})" + " {\n  " + "\n  ".join(body) + "\n}\n"
    )
    constants = {"sizes": np.array(sizes, np.int64), "shape": np.array([0, total, -1], np.int64)}
    return build_model(text, constants=constants), widths, second


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(_split_of_concats())
def test_random_heads_compute_the_same(case):
    """Whatever the rules rewrite, every output is bit-identical in ONNX Runtime."""
    model, widths, second = case
    result = to_proto(float_passes(model, CanonicalizePass))
    rng = np.random.default_rng(0)
    feed = {}
    for value in model.graph.input:
        dims = [
            d.dim_value if d.HasField("dim_value") else {"N": 2, "H": 3, "W": 4}[d.dim_param]
            for d in value.type.tensor_type.shape.dim
        ]
        feed[value.name] = rng.normal(size=dims).astype(np.float32)
    for got, want in zip(run(result, feed), run(model, feed), strict=True):
        np.testing.assert_array_equal(got, want)
