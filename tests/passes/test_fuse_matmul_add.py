from __future__ import annotations

import numpy as np
import pytest

from qcc.passes.fuse_matmul_add import FuseMatMulAddPass
from tests.conftest import build_model, float_passes, op_types, random_feeds, run, to_proto


@pytest.mark.parametrize(
    ("x_shape", "bias_shape", "fused"),
    [("3,5", "6", True), ("3,5", "1,6", True), ("3,5", "1", True), ("2,3,5", "6", False), ("3,5", "3,6", False)],
)
def test_fuses_only_where_gemm_is_equivalent(x_shape, bias_shape, fused):
    out = "2,3,6" if x_shape.count(",") == 2 else "3,6"
    model = build_model(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[5,6] w, float[{bias_shape}] b, float[{x_shape}] x) => (float[{out}] y) {{
          m = MatMul(x, w)
          y = Add(m, b)
        }}
        """
    )
    result = float_passes(model, FuseMatMulAddPass)
    assert op_types(result) == (["Gemm"] if fused else ["MatMul", "Add"])
    assert [o.name for o in result.graph.outputs] == ["y"]
    feed = random_feeds(model, 1)[0]
    np.testing.assert_allclose(run(to_proto(result), feed)[0], run(model, feed)[0], rtol=1e-5, atol=1e-5)
