"""Base class of qcc's passes: an onnx-ir in-place pass built with a frozen context."""

from __future__ import annotations

import onnx_ir as ir

from qcc.context import PassContext


class QccPass(ir.passes.InPlacePass):
    """An in-place onnx-ir pass that reads its settings from a :class:`PassContext`.

    Subclasses implement ``call(model) -> ir.passes.PassResult`` and set ``name``, the
    kebab-case name used in logs, ``--verify-each`` messages and the docs.
    """

    name = "qcc-pass"

    def __init__(self, ctx: PassContext) -> None:
        super().__init__()
        self.ctx = ctx
