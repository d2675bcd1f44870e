"""Writing outputs atomically, and refusing to overwrite the input."""

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
