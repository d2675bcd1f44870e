"""The one exception hierarchy of qcc.

Every error a user can cause (a bad model, bad calibration data, a bad option, an output that
cannot be written) is a :class:`QccError` whose message names the offending element and says how
to fix it. The CLI prints ``str(error)`` on one line and exits with code 2 (:class:`StrictError`: 3); anything
else that escapes is a bug in qcc.
"""

from __future__ import annotations

from typing import Any


class QccError(Exception):
    """Base class of every error qcc raises on purpose.

    Args:
        problem: What is wrong, naming the model element (file, node, tensor, input).
        fix: What the user should do about it.
    """

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} Fix: {fix}" if fix else problem)


class ModelLoadError(QccError):
    """The model file or object cannot be read as a valid ONNX model."""


class UnsupportedModelError(QccError):
    """The model is valid ONNX but qcc cannot quantize it (opset, types, ops)."""


class CalibrationDataError(QccError):
    """The calibration data does not fit the model (names, ranks, dtypes, values)."""


class OptionError(QccError):
    """An option has an unknown name or an invalid value."""


class OutputError(QccError):
    """The output cannot be written where the user asked."""


class BackendError(QccError):
    """A target cannot express part of the model (the message names the node)."""


class StrictError(QccError):
    """A compile succeeded with warnings that ``strict=True`` (``--strict``) does not accept.

    Raised after compiling, so nothing is lost: ``result`` holds the artifact and its report.

    Attributes:
        result: the :class:`~qcc.driver.CompileResult`, whose ``warnings`` say what was missed.
        warnings: the refused warnings, ``{"code": ..., "message": ...}``.
        exit_code: the CLI's exit code for it, 3. The CLI's codes: 0 done; 1 ``qcc check`` found
            rule errors (or an uncaught exception: a qcc bug); 2 a usage or input error (nothing
            written); 3 this, with the artifact written.
    """

    exit_code = 3

    def __init__(self, result: Any, warnings: list[dict[str, str]]) -> None:
        self.result = result
        self.warnings = warnings
        codes = ", ".join(w["code"] for w in warnings)
        super().__init__(
            f"strict: the compile has {len(warnings)} warning(s) ({codes}): {warnings[0]['message']}",
            "follow the warning's advice, or compile without strict (--strict) to accept this artifact.",
        )


class NonFiniteActivationsError(QccError):
    """Calibration saw NaN/Inf in tensors planned as int8 (e.g. a -inf attention mask), and planning
    again with the nodes reading or writing them float (``annotations.Replan``) did not settle.

    Attributes:
        values: names of the tensors that took non-finite values.
    """

    def __init__(self, values: list[str]) -> None:
        self.values = values
        super().__init__(
            f"tensors {', '.join(map(repr, values[:5]))} took non-finite values on the calibration data.",
            "check the calibration inputs' preprocessing, or --exclude the nodes that produce them.",
        )
