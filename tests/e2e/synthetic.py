"""Synthetic models with random weights, in ONNX text, used by the end-to-end tests."""

from __future__ import annotations

import numpy as np

from tests.conftest import build_model

RESIDUAL_CNN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[16,3,3,3] w1, float[16] b1, float[16] gamma1, float[16] beta1, float[16] mean1, float[16] var1,
   float[16,16,3,3] w2, float[16] b2, float[16,16,3,3] w3, float[16] b3,
   float[32,16,3,3] w4, float[32] b4, float[10,32] w5, float[10] b5,
   float[N,3,16,16] x) => (float[N,10] logits) {
  c1 = Conv<pads=[1,1,1,1]>(x, w1, b1)
  n1 = BatchNormalization(c1, gamma1, beta1, mean1, var1)
  r1 = Relu(n1)
  c2 = Conv<pads=[1,1,1,1]>(r1, w2, b2)
  r2 = Relu(c2)
  c3 = Conv<pads=[1,1,1,1]>(r2, w3, b3)
  a = Add(c3, r1)
  r3 = Relu(a)
  p = MaxPool<kernel_shape=[2,2], strides=[2,2]>(r3)
  c4 = Conv<pads=[1,1,1,1], strides=[2,2]>(p, w4, b4)
  r4 = Relu(c4)
  gp = GlobalAveragePool(r4)
  f = Flatten(gp)
  logits = Gemm<transB=1>(f, w5, b5)
}
"""

DEPTHWISE_CNN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[16,3,3,3] w1, float[16] b1, float[16,1,3,3] wd, float[16] bd, float[16,16,1,1] wp, float[16] bp,
   float[64,1,3,3] wd2, float[64] bd2, float[64,16,1,1] we, float[64] be, float[16,64,1,1] wq, float[16] bq,
   float[16,10] w5, float[10] b5, float[] lo, float[] hi,
   float[1,3,32,32] x) => (float[1,10] logits) {
  c1 = Conv<pads=[1,1,1,1], strides=[2,2]>(x, w1, b1)
  r1 = Clip(c1, lo, hi)
  d = Conv<pads=[1,1,1,1], group=16>(r1, wd, bd)
  r2 = Clip(d, lo, hi)
  p = Conv(r2, wp, bp)
  e = Conv(p, we, be)
  r3 = Clip(e, lo, hi)
  d2 = Conv<pads=[1,1,1,1], group=64>(r3, wd2, bd2)
  r4 = Clip(d2, lo, hi)
  q = Conv(r4, wq, bq)
  a = Add(q, p)
  m = ReduceMean<axes=[2,3], keepdims=0>(a)
  logits = Gemm(m, w5, b5)
}
"""

MLP = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[64,128] w1, float[128] b1, float[128,128] w2, float[128] b2, float[128,10] w3, float[10] b3,
   float[N,64] x) => (float[N,10] y) {
  m1 = MatMul(x, w1)
  a1 = Add(m1, b1)
  r1 = Relu(a1)
  m2 = MatMul(r1, w2)
  a2 = Add(m2, b2)
  r2 = Relu(a2)
  m3 = MatMul(r2, w3)
  y = Add(m3, b3)
}
"""

TRANSFORMER_BLOCK = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[64,64] wq, float[64] bq, float[64,64] wk, float[64] bk, float[64,64] wv, float[64] bv,
   float[64,64] wo, float[64] bo, float[64] gamma1, float[64] beta1, float[64,256] wf1, float[256] bf1,
   float[256,64] wf2, float[64] bf2, float[64] gamma2, float[64] beta2,
   int64[4] heads, int64[3] merged, float[] scale, float[] half, float[] one, float[] sqrt2,
   float[1,32,64] x) => (float[1,32,64] y) {
  q0 = MatMul(x, wq)
  q1 = Add(q0, bq)
  k0 = MatMul(x, wk)
  k1 = Add(k0, bk)
  v0 = MatMul(x, wv)
  v1 = Add(v0, bv)
  q2 = Reshape(q1, heads)
  k2 = Reshape(k1, heads)
  v2 = Reshape(v1, heads)
  q = Transpose<perm=[0,2,1,3]>(q2)
  kt = Transpose<perm=[0,2,3,1]>(k2)
  v = Transpose<perm=[0,2,1,3]>(v2)
  s0 = MatMul(q, kt)
  s1 = Mul(s0, scale)
  p = Softmax<axis=-1>(s1)
  o0 = MatMul(p, v)
  o1 = Transpose<perm=[0,2,1,3]>(o0)
  o2 = Reshape(o1, merged)
  o3 = MatMul(o2, wo)
  o4 = Add(o3, bo)
  r1 = Add(o4, x)
  n1 = LayerNormalization<axis=-1>(r1, gamma1, beta1)
  f0 = MatMul(n1, wf1)
  f1 = Add(f0, bf1)
  g0 = Div(f1, sqrt2)
  g1 = Erf(g0)
  g2 = Add(g1, one)
  g3 = Mul(f1, g2)
  g4 = Mul(g3, half)
  f2 = MatMul(g4, wf2)
  f3 = Add(f2, bf2)
  r2 = Add(f3, n1)
  y = LayerNormalization<axis=-1>(r2, gamma2, beta2)
}
"""

YOLO_BLOCK = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[32,3,3,3] w1, float[32] b1, float[32,32,3,3] w2, float[32] b2, float[32,32,1,1] w3, float[32] b3,
   float[32,64,1,1] w4, float[32] b4, float[16,64,3,3] w5, float[16] b5, float[4] scales,
   float[1,3,32,32] x) => (float[1,16,16,16] y) {
  c1 = Conv<pads=[1,1,1,1], strides=[2,2]>(x, w1, b1)
  s1 = Sigmoid(c1)
  a1 = Mul(c1, s1)
  c2 = Conv<pads=[1,1,1,1], strides=[2,2]>(a1, w2, b2)
  s2 = Sigmoid(c2)
  a2 = Mul(c2, s2)
  u = Resize<mode="nearest">(a2, , scales)
  c3 = Conv(a1, w3, b3)
  s3 = Sigmoid(c3)
  a3 = Mul(c3, s3)
  cat = Concat<axis=1>(u, a3)
  c4 = Conv(cat, w4, b4)
  m = MaxPool<kernel_shape=[3,3], pads=[1,1,1,1]>(c4)
  cat2 = Concat<axis=1>(m, c4)
  y = Conv<pads=[1,1,1,1]>(cat2, w5, b5)
}
"""

_CONSTANTS = {
    "lo": np.array(0.0, np.float32),
    "hi": np.array(6.0, np.float32),
    "heads": np.array([1, 32, 4, 16], np.int64),
    "merged": np.array([1, 32, 64], np.int64),
    "scale": np.array(0.25, np.float32),
    "half": np.array(0.5, np.float32),
    "one": np.array(1.0, np.float32),
    "sqrt2": np.array(np.sqrt(2.0), np.float32),
    "scales": np.array([1, 1, 2, 2], np.float32),
}

MODELS = {
    "residual_cnn": RESIDUAL_CNN,
    "depthwise_cnn": DEPTHWISE_CNN,
    "mlp": MLP,
    "transformer_block": TRANSFORMER_BLOCK,
    "yolo_block": YOLO_BLOCK,
}


def synthetic_model(name: str, seed: int = 0):
    """Returns one of the synthetic models with random weights (fixed seed)."""
    text = MODELS[name]
    constants = {k: v for k, v in _CONSTANTS.items() if f" {k}," in text or f" {k})" in text}
    return build_model(text, seed=seed, constants=constants)
