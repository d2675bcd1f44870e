"""Refit: layers fitted, in graph order, to the quantized model's own inputs bring the artifact
closer to fp32 on inputs the calibration never saw; the fit is sequential and cross-validated."""

from __future__ import annotations

import numpy as np
import pytest

import qcc
from qcc.frontend import load
from qcc.passes import refit_weights
from qcc.passes.refit_weights import _Ahead, _error, _Sums, _waves
from qcc.runtime import session
from tests.conftest import build_model, fidelity

# Four convolutions on smooth images: each rounds its input, and later layers can undo part of it.
CHAIN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[8,8,3,3] w1, float[8,1,3,3] wd, float[16,8,1,1] wp, float[8,16,3,3] w4, float[N,8,12,12] x)
  => (float[N,8,12,12] y) {
  c1 = Conv<pads=[1,1,1,1]>(x, w1)
  r1 = Relu(c1)
  d = Conv<group=8, pads=[1,1,1,1]>(r1, wd)
  p = Conv(d, wp)
  r2 = Relu(p)
  y = Conv<pads=[1,1,1,1]>(r2, w4)
}
"""
# Three projections of one input (a wave), then one of their sum (the next wave).
BRANCHES = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[16,16] wq, float[16,16] wk, float[16,16] wv, float[16,16] wo, float[N,32,16] x) => (float[N,32,16] y) {
  q = MatMul(x, wq)
  k = MatMul(x, wk)
  v = MatMul(x, wv)
  s = Add(q, k)
  t = Add(s, v)
  y = MatMul(t, wo)
}
"""


# Tokens from a 4-dimensional subspace; h's channel 0 is 20x the rest, so h's int8 steps are coarse
# for the others: refit on the rounded h, the second layer filters much of that rounding out.
LOW_RANK = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[32,32] w1, float[32,16] w2, float[N,64,32] x) => (float[N,64,16] y) {
  h = MatMul(x, w1)
  y = MatMul(h, w2)
}
"""


def _tokens(count, seed):
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(0).normal(size=(4, 32))
    return [
        {"x": (rng.normal(size=(1, 64, 4)) @ basis + 0.01 * rng.normal(size=(1, 64, 32))).astype(np.float32)}
        for _ in range(count)
    ]


@pytest.mark.parametrize("target", ["ort", "trt", "tflite"])
def test_refit_layers_are_closer_to_fp32_on_held_out_inputs(target):
    w1 = np.random.default_rng(5).normal(0, 1 / np.sqrt(32), (32, 32))
    w1[:, 0] *= 20
    model = build_model(LOW_RANK, seed=3, constants={"w1": w1})
    calibration, held_out = _tokens(16, seed=1), _tokens(8, seed=2)
    options = {"target": target, "calibration": calibration, "tolerance": None, "smoothquant": False}
    plain = qcc.compile(model, refit=False, **options)
    refit = qcc.compile(model, **options)
    section = refit.report["refit"]
    assert section["refit_layers"] == 2 and section["error_vs_kept"] < 1
    assert plain.report["refit"] is None
    assert refit.report["verify"]["ok"]
    if target == "tflite":  # the artifact runs in LiteRT: compare its verify fidelity
        cosines = [
            min(o["cosine_mean"] for o in r.report["verify"]["fidelity"]["outputs"].values()) for r in (plain, refit)
        ]
        assert 1 - cosines[1] < 0.9 * (1 - cosines[0]), cosines
    else:
        before = 1 - fidelity(model, plain.artifact.data, held_out)
        after = 1 - fidelity(model, refit.artifact.data, held_out)
        assert after < 0.9 * before, (before, after)


def test_layers_are_fitted_in_waves_of_independent_layers():
    chain = load(build_model(CHAIN, seed=3)).model
    convs = [n for n in chain.graph if n.op_type == "Conv"]
    assert [len(w) for w in _waves(chain.graph, convs)] == [1, 1, 1, 1]
    branches = load(build_model(BRANCHES, seed=3)).model
    matmuls = [n for n in branches.graph if n.op_type == "MatMul"]
    assert [[n.name or n.outputs[0].name for n in w] for w in _waves(branches.graph, matmuls)] == [
        ["q", "k", "v"],
        ["y"],
    ]


@pytest.mark.parametrize("budget", [1, 3000, 1 << 30])  # bytes: one request per run, a few, all
def test_the_float_model_fetches_the_waves_ahead_with_the_same_values(monkeypatch, budget):
    model = load(build_model(CHAIN, seed=3)).model
    requests = [["x"], ["r1"], ["d"], ["r2", "r1"]]
    feeds = [{"x": np.random.default_rng(s).normal(size=(1, 8, 12, 12)).astype(np.float32)} for s in range(3)]
    monkeypatch.setattr(refit_weights, "AHEAD_BYTES", budget)
    ahead = _Ahead(model, requests, "all", "the model", len(feeds))
    runs, run = [], ahead.session.run
    monkeypatch.setattr(ahead.session, "run", lambda names, feed: runs.append(names) or run(names, feed))
    one = session(model, extra_outputs=("x", "r1", "d", "r2"))
    for request, names in enumerate(requests):
        for sample, feed in enumerate(feeds):
            for got, expected in zip(ahead(request, feed, sample), one.run(names, feed), strict=True):
                np.testing.assert_array_equal(got, expected)
    assert not ahead.held  # nothing kept once asked
    # Each tensor is 8x12x12 float32, 4608 bytes: 3000 hold no request ahead, one run per request
    # and sample. With room for all, the first run fetches one request (nothing to size the others
    # by yet), then one run per sample fetches every request.
    assert len(runs) == {1: 12, 3000: 12, 1 << 30: 4}[budget]


def test_the_error_is_the_output_error_of_the_quantized_inputs():
    """E(Wq) from the sums equals ||Wq x~ - W x||^2 per row, computed directly."""
    rng = np.random.default_rng(0)
    w, wq = rng.normal(size=(1, 4, 6)), rng.normal(size=(1, 4, 6))
    x = rng.normal(size=(1, 6, 50)).astype(np.float32)
    x_q = (x + 0.1 * rng.normal(size=x.shape)).astype(np.float32)
    sums = _Sums(1, 6, w.astype(np.float32))
    sums.add(x, x_q)
    direct = np.sum((wq[0] @ x_q[0] - w[0] @ x[0]) ** 2) / 50
    np.testing.assert_allclose(_error(wq, w, sums), direct, rtol=1e-4)


def test_too_few_rows_keep_their_levels():
    model = build_model(
        BRANCHES.replace("float[N,32,16] x", "float[N,2,16] x").replace("float[N,32,16] y", "float[N,2,16] y"), seed=3
    )
    feeds = [{"x": np.random.default_rng(i).normal(size=(1, 2, 16)).astype(np.float32)} for i in range(8)]
    result = qcc.compile(model, calibration=feeds, tolerance=None)
    section = result.report["refit"]
    assert section["refit_layers"] == 0
    assert any("too few" in reason for reason in section["kept_reasons"])
