"""qcc.pieces: a model run request by request gives the whole model's tensors (bit for bit at the
basic optimization level)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from qcc.pieces import Pieces
from qcc.runtime import session

# A skip connection (c is read by the first and the last piece), a shape computed in one piece and
# read in another (int64 across a cut), and a tail no request needs.
MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N,4,8,8] x, float[4,4,3,3] w1, float[4,4,1,1] w2, float[4,4,3,3] w3) => (float[N,4,8,8] y) {
  a = Conv<pads=[1,1,1,1]>(x, w1)
  b = Relu(a)
  c = Conv(b, w2)
  s = Shape(c)
  d = Conv<pads=[1,1,1,1]>(c, w3)
  e = Add(d, c)
  f = Reshape(e, s)
  y = Sigmoid(f)
}
"""


def _model() -> ir.Model:
    proto = onnx.parser.parse_model(MODEL)
    rng = np.random.default_rng(0)
    for name, shape in (("w1", (4, 4, 3, 3)), ("w2", (4, 4, 1, 1)), ("w3", (4, 4, 3, 3))):
        proto.graph.initializer.append(onnx.numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name))
    proto = onnx.shape_inference.infer_shapes(proto)
    return ir.serde.deserialize_model(proto)


REQUESTS = [["x"], ["b", "a"], ["c"], ["e", "c"], ["f", "a"]]


@pytest.mark.parametrize("level", ["basic", "all"])
def test_every_request_returns_the_whole_models_tensors(level):
    model = _model()
    assert Pieces.fits(model)
    pieces = Pieces(model, REQUESTS, level=level, what="the test model")
    names = sorted({n for r in REQUESTS for n in r if n != "x"})
    whole = session(model, level=level, extra_outputs=names)
    samples = [{"x": np.random.default_rng(i).normal(size=(1 + i, 4, 8, 8)).astype(np.float32)} for i in range(3)]
    expected = [dict(zip(names, whole.run(names, feed), strict=True)) | feed for feed in samples]
    for request, wanted in enumerate(REQUESTS):
        for index, feed in enumerate(samples):
            got = pieces.run(request, feed, index)
            for name, array in zip(wanted, got, strict=True):
                if level == "basic":
                    np.testing.assert_array_equal(array, expected[index][name])
                else:  # ONNX Runtime may pick other convolution kernels for a smaller graph
                    np.testing.assert_allclose(array, expected[index][name], rtol=1e-5, atol=1e-4)
    # each node ran in one piece only, the tail (Sigmoid) in none; nothing is held once all ran
    ran = [i for piece in pieces.pieces for i in piece]
    assert len(ran) == len(set(ran)) == len(model.graph) - 1
    assert all(not held for held in pieces._held.values())


def test_a_model_with_a_subgraph_is_not_cut():
    proto = onnx.parser.parse_model("""
<ir_version: 8, opset_import: ["" : 17]>
g (bool c, float[2] x) => (float[2] y) {
  y = If(c) <then_branch = t () => (float[2] o) { o = Relu(x) }, else_branch = e () => (float[2] o) { o = Neg(x) }>
}
""")
    assert not Pieces.fits(ir.serde.deserialize_model(proto))
