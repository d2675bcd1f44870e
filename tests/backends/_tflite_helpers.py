"""Helpers shared by the TFLite backend's op tests: a model from one graph body, an artifact's builtins."""

from __future__ import annotations

import onnx
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from tests.conftest import build_model


def body_model(inputs: str, out: str, body: str, opset: int, constants=None) -> onnx.ModelProto:
    """A one-graph model in ONNX's text syntax.

    Args:
        inputs: the graph inputs, e.g. ``"float[2,3] x"``.
        out: the graph outputs, e.g. ``"float[2,3] y"``.
        body: the graph's nodes.
        opset: the default domain's opset.
        constants: initializers by name, as ``build_model`` takes them.
    """
    text = f'<ir_version: 10, opset_import: ["" : {opset}]>\ng ({inputs}) => ({out}) {{\n {body}\n}}\n'
    return build_model(text, constants=constants)


def builtin_ops(data: bytes) -> set[str]:
    """The builtin op names a .tflite artifact runs (under the builtin resolver, no delegate)."""
    resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = Interpreter(model_content=data, experimental_op_resolver_type=resolver)
    return {op["op_name"] for op in interp._get_ops_details()}  # noqa: SLF001 - no public op listing
