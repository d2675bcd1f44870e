"""qcc: a quantization compiler from float ONNX to int8 models for ONNX Runtime, TensorRT and TFLite.

Use ``qcc.compile(model, target=..., calibration=...)`` from Python or ``qcc compile`` from the
shell. Every deliberate error is a :class:`QccError` naming the problem and the fix.
"""

from __future__ import annotations

__version__ = "0.1.0"

from qcc.api import compile  # noqa: A004, E402
from qcc.backends import target_names as targets  # noqa: E402
from qcc.driver import CompileResult  # noqa: E402
from qcc.errors import (  # noqa: E402
    BackendError,
    CalibrationDataError,
    ModelLoadError,
    OptionError,
    OutputError,
    QccError,
    UnsupportedModelError,
)
from qcc.options import CompileOptions  # noqa: E402

__all__ = [
    "BackendError",
    "CalibrationDataError",
    "CompileOptions",
    "CompileResult",
    "ModelLoadError",
    "OptionError",
    "OutputError",
    "QccError",
    "UnsupportedModelError",
    "__version__",
    "compile",
    "targets",
]
