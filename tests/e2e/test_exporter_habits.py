"""Models shaped like what real exporters write, none of them tuned for: every target, every shape.

Each model reproduces the habits of one exporter that broke qcc on real models outside the zoo
(issue #17): a PyTorch audio front end (Log of a power spectrum, a standalone BatchNorm1d, Conv1d,
a dynamic number of frames), a Caffe face-detector stage (PRelu, ``ceil_mode`` MaxPool, Softmax over
channels), a Paddle classifier (batch declared as ``dim_value: -1``, HardSwish, a Flatten computed
from ``Shape``), a streaming voice-activity step (an ``If`` on a run-time input) and a tf2onnx text
recognizer (NHWC input with a dynamic width, transposes, a Reshape computed from ``Shape``, LogSoftmax).

Every target must compile each from calibration samples of one shape, and its artifact must run in
its own runtime (ONNX Runtime; LiteRT with XNNPACK and with the builtin kernels) at every shape the
model accepts, within int8 error of ONNX Runtime's float outputs.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import qcc
from tests.conftest import build_model, cosine
from tests.e2e.conformance import run_onnx, run_tflite

AUDIO_FRONT_END = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[16] gamma, float[16] beta, float[16] mean, float[16] var, float[8,16,3] w1, float[8] b1,
   float[4,8] w2, float[4] b2, float[] eps, float[N,16,T] spectrum) => (float[N,4] scores) {
  shifted = Add(spectrum, eps)
  logs = Log(shifted)
  normed = BatchNormalization(logs, gamma, beta, mean, var)
  c = Conv<pads=[1,1]>(normed, w1, b1)
  r = Relu(c)
  pooled = ReduceMean<axes=[2], keepdims=0>(r)
  scores = Gemm<transB=1>(pooled, w2, b2)
}
"""

CAFFE_FACE_STAGE = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[10,3,3,3] w1, float[10] b1, float[10,1,1] slope1, float[16,10,3,3] w2, float[16] b2, float[16,1,1] slope2,
   float[2,16,1,1] w3, float[2] b3, float[1,3,25,25] data) => (float[1,2,5,5] prob) {
  c1 = Conv(data, w1, b1)
  p1 = PRelu(c1, slope1)
  m1 = MaxPool<kernel_shape=[3,3], strides=[2,2], ceil_mode=1>(p1)
  c2 = Conv(m1, w2, b2)
  p2 = PRelu(c2, slope2)
  m2 = MaxPool<kernel_shape=[3,3], strides=[2,2], ceil_mode=1>(p2)
  c3 = Conv(m2, w3, b3)
  prob = Softmax<axis=1>(c3)
}
"""

PADDLE_CLASSIFIER = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[16,3,3,3] w1, float[16] b1, float[16,1,3,3] wd, float[16] bd, float[16,6] w2, float[6] b2,
   int64[1] minus_one, int64[1] zero, int64[1] one, float[B,3,32,32] x) => (float[B,6] probs) {
  c1 = Conv<pads=[1,1,1,1], strides=[2,2]>(x, w1, b1)
  h1 = HardSwish(c1)
  d = Conv<pads=[1,1,1,1], group=16>(h1, wd, bd)
  h2 = HardSwish(d)
  gp = GlobalAveragePool(h2)
  s = Shape(gp)
  batch = Slice(s, zero, one)
  target = Concat<axis=0>(batch, minus_one)
  flat = Reshape(gp, target)
  logits = MatMul(flat, w2)
  biased = Add(logits, b2)
  probs = Softmax<axis=-1>(biased)
}
"""

STREAMING_VAD = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[32,16] w1, float[16,1] w2, int64 rate, int64 sixteen_k, float half, float quarter, float[1,32] x)
  => (float[1,1] speech) {
  is16k = Equal(rate, sixteen_k)
  y = If(is16k) <
    then_branch = then_g () => (float[1,32] scaled) { scaled = Mul(x, half) },
    else_branch = else_g () => (float[1,32] scaled2) { scaled2 = Mul(x, quarter) }
  >
  h = MatMul(y, w1)
  t = Tanh(h)
  z = MatMul(t, w2)
  speech = Sigmoid(z)
}
"""

TF_TEXT_RECOGNIZER = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[8,1,3,3] w1, float[8] b1, float[16,8,3,3] w2, float[16] b2, float[64,12] w3, float[12] b3,
   int64[1] sixty_four, int64[1] zero, int64[1] two, float[N,16,W,1] image) => (float[N,S,12] logprobs) {
  nchw = Transpose<perm=[0,3,1,2]>(image)
  c1 = Conv<pads=[1,1,1,1]>(nchw, w1, b1)
  r1 = Relu(c1)
  p1 = MaxPool<kernel_shape=[2,2], strides=[2,2]>(r1)
  c2 = Conv<pads=[1,1,1,1]>(p1, w2, b2)
  r2 = Relu(c2)
  p2 = MaxPool<kernel_shape=[2,2], strides=[2,2]>(r2)
  nwch = Transpose<perm=[0,3,1,2]>(p2)
  s = Shape(nwch)
  nw = Slice(s, zero, two)
  target = Concat<axis=0>(nw, sixty_four)
  seq = Reshape(nwch, target)
  h = MatMul(seq, w3)
  hb = Add(h, b3)
  logprobs = LogSoftmax<axis=-1>(hb)
}
"""

_SCALARS = {
    "eps": np.float32(1e-3),
    "minus_one": np.array([-1], np.int64),
    "sixty_four": np.array([64], np.int64),
    "sixteen_k": np.array(16000, np.int64),
    "zero": np.array([0], np.int64),
    "one": np.array([1], np.int64),
    "two": np.array([2], np.int64),
    "half": np.float32(0.5),
    "quarter": np.float32(0.25),
    "slope1": np.full((10, 1, 1), 0.25, np.float32),
    "slope2": np.full((16, 1, 1), 0.1, np.float32),
}


def _model(text: str, declared_minus_one: bool = False) -> onnx.ModelProto:
    names = {value.name for value in onnx.parser.parse_model(text).graph.input}
    model = build_model(text, constants={n: v for n, v in _SCALARS.items() if n in names})
    if declared_minus_one:  # Paddle writes a dynamic batch as dim_value -1
        for value in list(model.graph.input) + list(model.graph.output):
            dim = value.type.tensor_type.shape.dim[0]
            dim.Clear()
            dim.dim_value = -1
    return model


def _feeds(shapes: dict[str, tuple[int, ...]], count: int, seed: int, positive: bool = False) -> list[dict]:
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        feed = {}
        for name, shape in shapes.items():
            if name == "rate":  # a value, not a shape: the sample rate the If branches on
                feed[name] = np.array(shape if isinstance(shape, int) else 16000, np.int64)
            elif positive:
                feed[name] = rng.gamma(2.0, 1.0, shape).astype(np.float32)
            else:
                feed[name] = rng.normal(0, 1, shape).astype(np.float32)
        feeds.append(feed)
    return feeds


# name -> (model, calibration shapes, other shapes the artifact must run at, positive inputs); "rate" is a value
CASES = {
    "pytorch-audio": (lambda: _model(AUDIO_FRONT_END), {"spectrum": (1, 16, 40)}, [{"spectrum": (2, 16, 57)}], True),
    "caffe-face": (lambda: _model(CAFFE_FACE_STAGE), {"data": (1, 3, 25, 25)}, [], False),
    "paddle-classifier": (
        lambda: _model(PADDLE_CLASSIFIER, declared_minus_one=True),
        {"x": (1, 3, 32, 32)},
        [{"x": (3, 3, 32, 32)}],
        False,
    ),
    "streaming-vad": (lambda: _model(STREAMING_VAD), {"x": (1, 32), "rate": 16000}, [{"rate": 8000}], False),
    "tf-text-recognizer": (
        lambda: _model(TF_TEXT_RECOGNIZER),
        {"image": (1, 16, 48, 1)},
        [{"image": (1, 16, 96, 1)}, {"image": (2, 16, 24, 1)}],
        False,
    ),
}


def _outputs(result, target: str, feed: dict) -> dict[str, list[np.ndarray]]:
    if target == "tflite":
        return {r: run_tflite(result.artifact.data, feed, r) for r in ("xnnpack", "builtin")}
    return {"onnxruntime": run_onnx(result.artifact.runtime_model, feed)}


@pytest.mark.parametrize("target", ["ort", "trt", "tflite"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_compiles_and_runs_at_every_shape(name, target):
    build, calib_shapes, other_shapes, positive = CASES[name]
    model = build()
    calibration = _feeds(calib_shapes, 8, seed=0, positive=positive)
    result = qcc.compile(model, target=target, calibration=calibration)
    assert result.report["verify"]["ok"], result.report["verify"]
    checks = [{**calib_shapes, **shapes} for shapes in other_shapes] + [calib_shapes]
    for shapes in checks:
        for feed in _feeds(shapes, 2, seed=7, positive=positive):
            want = run_onnx(model.SerializeToString(), feed)
            for runtime, got in _outputs(result, target, feed).items():
                for g, w in zip(got, want, strict=True):
                    assert g.shape == w.shape, f"{runtime} at {shapes}: shape {g.shape}, expected {w.shape}"
                    assert cosine(g, w) > 0.99, f"{runtime} at {shapes}: cosine {cosine(g, w):.4f}"
