"""The Python API: ``qcc.compile``.

Its option keywords are :class:`~qcc.options.CompileOptions`' fields, read by
:meth:`~qcc.options.CompileOptions.from_kwargs`: an unknown keyword is an
:class:`~qcc.errors.OptionError` naming the nearest option. The signature (``help()``,
``inspect.signature``, editors' hints) and the docstring's ``Args`` are generated from the fields'
metadata, so that they list every option as ``qcc.options`` defines it.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import os
import typing

from qcc.context import Progress, no_progress
from qcc.data import CalibrationSource
from qcc.driver import CompileResult, compile_model
from qcc.options import CompileOptions, choice_type, options_doc


def compile(  # noqa: A001 - the public name users expect
    model: object,
    target: str = "ort",
    calibration: CalibrationSource | None = None,
    *,
    strict: bool = False,
    progress: Progress = no_progress,
    **options: object,
) -> CompileResult:
    """Compiles a float ONNX model into an int8 model for one runtime.

    Args:
        model: path, bytes, ``onnx.ModelProto``, ``onnx_ir.Model`` or graphsurgeon ``Graph``;
            never modified.
        {target}
        calibration: path to an ``.npz`` or ``.npy`` file or a folder of them, a numpy array
            (single-input model), a dict ``{input: array with a sample axis}``, an iterable of feed
            dicts, or an onnxruntime ``CalibrationDataReader`` (see ``qcc.data``).
        {options}
        strict: after compiling, raise :class:`~qcc.errors.StrictError` (``exit_code`` 3, the
            result attached as ``.result``) if the compile missed ``tolerance``, quantized nothing,
            kept nodes it could quantize float, or failed verification (the warnings in
            ``qcc.report.STRICT_WARNINGS``). Without it those are only ``result.warnings``, also
            logged on the ``qcc`` logger.
        progress: ``progress(stage, done, total)`` callback.

    Returns:
        A :class:`CompileResult` with ``.model`` (int8 ``onnx.ModelProto`` for ONNX targets),
        ``.report``, ``.warnings`` and ``.save(path)``.

    Raises:
        OptionError: a keyword is not an option (with the nearest one's name), or a value is invalid.
        QccError: with a message naming the problem and the fix.
        StrictError: with ``strict``, the compile has a warning ``strict`` does not accept.
    """
    resolved = CompileOptions.from_kwargs(target=target, **options)
    result = compile_model(model, calibration, resolved, progress)
    result.inputs = tuple(os.fspath(p) for p in (model, calibration) if isinstance(p, (str, os.PathLike)))
    if strict:
        result.check_strict()
    return result


def _keyword_type(field: dataclasses.Field, hints: dict[str, object]) -> object:
    """The type ``qcc.compile`` documents for an option: its metadata's ``api_type``, else the
    field's with each enum written as ``str`` (users pass ``"int8"``, not ``Precision.INT8``)."""
    declared = field.metadata["qcc"].api_type
    if declared is not None:
        return declared
    hint = hints[field.name]
    choice = choice_type(hint)
    if choice is None:
        return hint
    return str if choice is hint else str | None  # an enum, or an enum or None


def _signature() -> inspect.Signature:
    """``compile``'s signature with every option as a keyword, defaults as users write them."""
    own = inspect.signature(compile).parameters
    hints = typing.get_type_hints(CompileOptions)
    options = []
    for field in dataclasses.fields(CompileOptions):
        if field.name == "target":  # positional too: qcc.compile(model, "trt", calib)
            continue
        # A field built by a factory (input_shapes) is documented as None, which the keyword takes for it.
        default = None if field.default is dataclasses.MISSING else field.default
        default = default.value if isinstance(default, enum.Enum) else default
        options.append(
            inspect.Parameter(
                field.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=_keyword_type(field, hints)
            )
        )
    return inspect.Signature(
        [own["model"], own["target"], own["calibration"], *options, own["strict"], own["progress"]],
        return_annotation=CompileResult,
    )


compile.__signature__ = _signature()  # type: ignore[attr-defined]
if compile.__doc__:  # None under python -OO
    compile.__doc__ = compile.__doc__.replace("        {target}", options_doc(8, only=("target",))).replace(
        "        {options}", options_doc(8, skip=("target",))
    )
