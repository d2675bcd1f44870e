"""Shared test helpers: tiny models from ONNX text, random feeds, and ONNX Runtime runs."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import qcc.frontend
from qcc.backends import get_backend
from qcc.context import PassContext
from qcc.options import CompileOptions
from qcc.runtime import session


def build_model(text: str, seed: int = 0, constants: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """Parses ONNX text and turns graph inputs into random initializers by name.

    Inputs named in ``constants`` get those values; inputs whose name starts with ``w`` get
    N(0, 1/fan_in), ``b``/``beta``/``mean`` N(0, 0.1), ``gamma``/``var`` U(0.5, 1.5). The rest stay
    graph inputs.
    """
    rng = np.random.default_rng(seed)
    model = onnx.parser.parse_model(text)
    constants = dict(constants or {})
    keep = []
    for value in model.graph.input:
        name = value.name
        shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
        if name in constants:
            array = np.asarray(constants[name])
        elif name.startswith(("gamma", "var")):
            array = rng.uniform(0.5, 1.5, shape)
        elif name.startswith(("beta", "mean", "b")):
            array = rng.normal(0, 0.1, shape)
        elif name.startswith("w"):
            fan_in = int(np.prod(shape[1:])) if len(shape) > 2 else (shape[0] if shape else 1)
            array = rng.normal(0, 1 / np.sqrt(max(fan_in, 1)), shape)
        else:
            keep.append(value)
            continue
        if array.dtype.kind == "f":
            array = array.astype(np.float32)
        model.graph.initializer.append(onnx.numpy_helper.from_array(array, name))
    del model.graph.input[:]
    model.graph.input.extend(keep)
    onnx.checker.check_model(model)
    return model


def random_feeds(model: onnx.ModelProto, count: int, seed: int = 1, batch: int = 1) -> list[dict[str, np.ndarray]]:
    """Returns ``count`` feeds of N(0, 1) data for the model's inputs (dynamic dims -> ``batch``)."""
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        feed = {}
        for value in model.graph.input:
            dims = [d.dim_value if d.HasField("dim_value") else batch for d in value.type.tensor_type.shape.dim]
            feed[value.name] = rng.normal(0, 1, dims).astype(np.float32)
        feeds.append(feed)
    return feeds


def run(model: onnx.ModelProto | bytes, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Runs a model once in ONNX Runtime (CPU, all optimizations) and returns its outputs."""
    return session(model).run(None, feed)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two arrays, flattened."""
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def fidelity(reference: onnx.ModelProto, quantized: onnx.ModelProto | bytes, feeds) -> float:
    """Smallest output cosine between the float and quantized models over the feeds."""
    worst = 1.0
    for feed in feeds:
        for e, g in zip(run(reference, feed), run(quantized, feed), strict=True):
            worst = min(worst, cosine(e, g))
    return worst


def float_passes(proto: onnx.ModelProto, *pass_classes, target: str = "ort") -> ir.Model:
    """Applies the given passes (classes) to a copy of the model, in order, and returns the IR."""
    model = qcc.frontend.load(proto).model
    ctx = PassContext(options=CompileOptions(target=target), target=get_backend(target).spec)
    for cls in pass_classes:
        cls(ctx)(model)
    return model


def to_proto(model: ir.Model) -> onnx.ModelProto:
    """Serializes an IR model for ONNX Runtime."""
    proto = ir.serde.serialize_model(model)
    proto.ir_version = min(proto.ir_version, 10)
    return proto


def op_types(model: onnx.ModelProto | ir.Model) -> list[str]:
    """The op types of the model's top-level nodes, in order."""
    nodes = model.graph.node if isinstance(model, onnx.ModelProto) else model.graph
    return [n.op_type for n in nodes]


@pytest.fixture
def tmp_model(tmp_path):
    """Saves a ModelProto under tmp_path and returns the path."""

    def save(proto: onnx.ModelProto, name: str = "model.onnx") -> str:
        path = tmp_path / name
        onnx.save(proto, path)
        return str(path)

    return save
