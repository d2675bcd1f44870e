"""Writing outputs atomically, refusing to overwrite the input, and naming artifacts by what they hold.

Light on purpose (the standard library and ``qcc.errors`` only): the CLI runs these checks before it
imports onnx, so a bad output path fails in a fraction of a second.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import BinaryIO

from qcc.errors import OutputError


def check_output_path(path: str | os.PathLike, *, inputs: tuple[str | os.PathLike, ...] = ()) -> str:
    """Checks that ``path`` can be written and is not one of the inputs.

    Returns:
        The path as a string.

    Raises:
        OutputError: the folder is missing or not writable, the path is a folder, or it would
            overwrite an input file.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    for source in inputs:
        same = os.path.abspath(os.fspath(source)) == os.path.abspath(path) or (
            os.path.exists(source) and os.path.exists(path) and os.path.samefile(source, path)
        )
        if same:
            raise OutputError(
                f"output {path} is an input file; qcc never overwrites its inputs.", "choose another output path."
            )
    if not os.path.isdir(folder):
        raise OutputError(f"output folder {folder} does not exist.", f"create it first (mkdir -p {folder}).")
    if os.path.isdir(path):
        raise OutputError(f"output {path} is a folder.", "give a file path, e.g. model.int8.onnx.")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"output folder {folder} is not writable.", "choose a folder you can write to.")
    return path


# The file suffix of each target's artifact: ONNX Runtime and TensorRT read ONNX, LiteRT a flatbuffer.
ARTIFACT_SUFFIXES = {"ort": ".onnx", "trt": ".onnx", "tflite": ".tflite"}


def check_output_suffix(path: str | os.PathLike, target: str) -> None:
    """Checks that ``path`` does not name the artifact as another target's kind of file.

    A ``.tflite`` flatbuffer named ``.onnx`` (or an ONNX model named ``.tflite``) would fail later, in
    whatever tool opens it, far from the mistake. Only the known artifact suffixes are compared: an
    output with any other suffix (``model.int8``, ``model.bin``) is the user's choice.

    Args:
        path: the artifact's output path.
        target: the target name (``ort``, ``trt``, ``tflite``); an unknown name is not checked here.

    Raises:
        OutputError: the suffix is another target's artifact suffix (case-insensitive).
    """
    wanted = ARTIFACT_SUFFIXES.get(target)
    path = os.fspath(path)
    stem, suffix = os.path.splitext(path)
    if wanted is None or suffix.lower() == wanted or suffix.lower() not in set(ARTIFACT_SUFFIXES.values()):
        return
    kind = "a TFLite flatbuffer" if wanted == ".tflite" else "an ONNX model"
    raise OutputError(
        f"output {path} ends in {suffix} but target {target} writes {kind}.", f"name the output {stem}{wanted}."
    )


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file in the same folder and a rename.

    Either the complete file appears or nothing does; a failure leaves no partial file.

    Raises:
        OutputError: the file cannot be written.
    """
    write_files_atomic([(path, lambda f: f.write(data))])


def copy_from(source: str | os.PathLike) -> Callable[[BinaryIO], object]:
    """A writer for :func:`write_files_atomic` that copies the file ``source``."""

    def copy(f: BinaryIO) -> None:
        with open(source, "rb") as src:
            shutil.copyfileobj(src, f, 16 << 20)

    return copy


def write_files_atomic(files: list[tuple[str | os.PathLike, Callable[[BinaryIO], object]]]) -> None:
    """Writes several files (``(path, writer)``) that belong together: every one goes to a
    temporary file in its folder first, and only when all are complete are they renamed, in order.

    Raises:
        OutputError: a file cannot be written; no temporary file is left.
    """
    staged: list[tuple[str, str]] = []
    try:
        for path, write in files:
            path = check_output_path(path)
            staged.append((_write_temporary(path, write), path))
        for tmp, path in staged:
            os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}.", "check free space and permissions.") from None
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _write_temporary(path: str, write: Callable[[BinaryIO], object]) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write to {folder}: {exc.strerror}.", "choose a folder you can write to.") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp
