"""The option parser's errors in qcc's one style: ``problem. Fix: remedy`` on one line.

typer (click) reports a bad choice, an unknown option or a missing argument in a box of its own.
:func:`usage_error` rewrites each such error as an :class:`~qcc.errors.OptionError` that names the
command and the option, and whose fix offers what the user most likely meant: the known alias of a
choice (``-t tensorrt`` -> ``trt``, ``-m kl`` -> ``entropy``), else the nearest valid spelling of
the choice, option or command. The CLI (:mod:`qcc.cli`) prints it like any other qcc error.

It imports no more than the CLI already does (difflib, the errors), so that a mistyped command line
is answered as fast as ``qcc --help``.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Mapping, Sequence
from typing import Any

from qcc.errors import OptionError

try:  # typer >= 0.17 vendors click; older versions use the click package
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import UsageError

# What users type for a choice, by what they know it as -> qcc's name (only offered where it is a
# valid choice of the option at hand). Keys are lower case with '_' written '-'.
ALIASES = {
    "tensorrt": "trt",
    "tensor-rt": "trt",
    "nvidia": "trt",
    "modelopt": "trt",
    "onnxruntime": "ort",
    "onnx-runtime": "ort",
    "onnx": "ort",
    "litert": "tflite",
    "lite-rt": "tflite",
    "lite": "tflite",
    "tf-lite": "tflite",
    "tensorflow-lite": "tflite",
    "tensorflowlite": "tflite",
    "kl": "entropy",
    "kl-divergence": "entropy",
    "kld": "entropy",
    "min-max": "minmax",
    "max": "minmax",
    "absmax": "minmax",
    "mean-max": "meanmax",
    "float8": "fp8",
    "e4m3": "fp8",
    "fp8-e4m3": "fp8",
    "i8": "int8",
    "s8": "int8",
    "qint8": "int8",
    "u8": "uint8",
    "quint8": "uint8",
    "float32": "float",
    "fp32": "float",
}

__all__ = ["ALIASES", "UsageError", "suggest", "usage_error"]


def usage_error(
    exc: UsageError, args: Sequence[str], choice_options: Mapping[str, type[enum.Enum]], commands: Sequence[str]
) -> OptionError:
    """Rewrites an option parser error (typer/click) as qcc's problem and fix.

    Args:
        exc: the parser's error.
        args: the command line arguments (without the program name): where the bad value is read.
        choice_options: the commands' enum options by parameter name, whose valid values a bad
            choice is matched against.
        commands: the app's command names, to name the command of an error that carries no context.

    Returns:
        An :class:`OptionError` whose fix names the alias or the nearest valid spelling, if any.
    """
    ctx = getattr(exc, "ctx", None)
    where = _command_path(ctx, args, commands)
    see = f"`{where} --help` lists every option."
    param = getattr(exc, "param", None)
    kind = type(exc).__name__
    if kind == "MissingParameter" and param is not None:
        label = _param_label(param)
        what = (getattr(param, "help", None) or "").rstrip(".")
        problem = f"{where} needs {label}" + (f": {what[:1].lower()}{what[1:]}." if what else ".")
        if getattr(param, "param_type_name", "") == "argument":
            return OptionError(problem, f"give it after the command, e.g. {where} {label} ...; {see}")
        return OptionError(problem, f"add {param.opts[0]} <value>; {see}")
    if kind == "BadParameter" and param is not None:
        label = _param_label(param)
        kind_of_choice = choice_options.get(getattr(param, "name", None))
        choices = [k.value for k in kind_of_choice] if kind_of_choice else []
        value = _given_value(param, args, choices)
        if choices and value is not None:
            near = suggest(value, choices)
            name = param.opts[0]
            problem = f"{name} {value!r} is not a valid choice."
            if near:
                return OptionError(problem, f"use {name} {near} (choices: {', '.join(choices)}).")
            return OptionError(problem, f"use one of: {', '.join(choices)}.")
        detail = exc.format_message().split(": ", 1)[-1].removeprefix("Value error, ")
        return OptionError(f"invalid value for {label}: {detail.rstrip('.')}.", see)
    if kind == "NoSuchOption":
        option = getattr(exc, "option_name", "") or exc.format_message()
        known = _option_names(ctx)
        near = difflib.get_close_matches(option, known, n=1, cutoff=0.6)
        fix = f"did you mean {near[0]}? {see}" if near else see
        return OptionError(f"{where} has no option {option}.", fix)
    message = exc.format_message()
    if message.startswith("No such command") and ctx is not None:
        listed = list(ctx.command.list_commands(ctx))
        typed = next((a for a in args if not a.startswith("-")), "")
        near = suggest(typed, listed)
        fix = f"did you mean {near}? " if near else ""
        return OptionError(f"qcc has no command {typed!r}.", f"{fix}Commands: {', '.join(listed)}.")
    if kind == "BadOptionUsage" and "requires an argument" in message:
        return OptionError(f"option {getattr(exc, 'option_name', '')} needs a value.", see)
    return OptionError(f"{where}: {message[:1].lower()}{message[1:].rstrip('.')}.", see)


def suggest(value: str, choices: Sequence[str]) -> str | None:
    """Returns the choice a mistyped ``value`` most likely means: itself in another case or
    spelling, its alias (``tensorrt`` -> ``trt``), or the nearest choice by spelling; None if no
    choice is near."""
    key = value.strip().lower().replace("_", "-")
    for candidate in (key, key.replace("-", ""), ALIASES.get(key), ALIASES.get(key.replace("-", ""))):
        if candidate in choices:
            return candidate
    near = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return near[0] if near else None


def _command_path(ctx: Any, args: Sequence[str], commands: Sequence[str]) -> str:
    if ctx is not None and ctx.command_path != "qcc":
        return ctx.command_path
    # Some errors (an option missing its value) carry no context: the command is the first word.
    command = next((a for a in args if not a.startswith("-")), None)
    return f"qcc {command}" if command in commands else "qcc"


def _param_label(param: Any) -> str:
    if getattr(param, "param_type_name", "") == "argument":
        return (param.name or "").upper()
    return "/".join(param.opts)


def _given_value(param: Any, args: Sequence[str], choices: Sequence[str]) -> str | None:
    """The value the user gave ``param`` on the command line (the first that is not a choice)."""
    given = []
    for i, arg in enumerate(args):
        for opt in param.opts:
            if arg == opt and i + 1 < len(args):
                given.append(args[i + 1])
            elif opt.startswith("--") and arg.startswith(opt + "="):
                given.append(arg[len(opt) + 1 :])
            elif not opt.startswith("--") and arg.startswith(opt) and len(arg) > len(opt) and arg[1] != "-":
                given.append(arg[len(opt) :])
    return next((v for v in given if v not in choices), None)


def _option_names(ctx: Any) -> list[str]:
    if ctx is None:
        return []
    return [o for p in ctx.command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")]
