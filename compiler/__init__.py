"""qcc: a quantization compiler from float ONNX to int8 models for ONNX Runtime, TensorRT and TFLite.

Use ``qcc.compile(model, target=..., calibration=...)`` from Python or ``qcc compile`` from the
shell. Every deliberate error is a :class:`QccError` naming the problem and the fix.

The heavy names (``compile``, ``CompileResult``, ``CompileOptions``, ``targets``) load on first
use (PEP 562): importing them pulls in onnx, onnx-ir, ONNX Runtime and numpy, about 1 s, which
``qcc --help``, ``qcc --version`` and every early CLI error would otherwise pay. The error classes
(``QccError`` and its subclasses, ``StrictError`` among them) are light and load at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from qcc.errors import (
    BackendError,
    CalibrationDataError,
    ModelLoadError,
    OptionError,
    OutputError,
    QccError,
    StrictError,
    UnsupportedModelError,
)

if TYPE_CHECKING:
    from qcc.api import compile  # noqa: A004
    from qcc.backends import target_names as targets
    from qcc.driver import CompileResult
    from qcc.options import CompileOptions

__version__ = "0.1.0"

# Public name -> (module, attribute) it is loaded from on first access.
_LAZY = {
    "compile": ("qcc.api", "compile"),
    "CompileOptions": ("qcc.options", "CompileOptions"),
    "CompileResult": ("qcc.driver", "CompileResult"),
    "targets": ("qcc.backends", "target_names"),
}


def __getattr__(name: str) -> object:
    """Loads a heavy public name on first access and caches it in the module.

    Raises:
        AttributeError: ``name`` is not a public name of qcc (nor a submodule already imported).
    """
    if name not in _LAZY:
        raise AttributeError(f"module 'qcc' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "BackendError",
    "CalibrationDataError",
    "CompileOptions",
    "CompileResult",
    "ModelLoadError",
    "OptionError",
    "OutputError",
    "QccError",
    "StrictError",
    "UnsupportedModelError",
    "__version__",
    "compile",
    "targets",
]
