"""Shared build steps for zoo recipes: source checks, atomic writes, ONNX export checks, feed files.

Every recipe is a script run with the zoo environment (``models/.venv/bin/python recipes/<model>.py --out
DIR``). It writes into DIR only through the ``write_*`` helpers here, each of which writes a temporary file in
the same directory and ``os.replace``-s it into place, so an interrupted build never leaves a half-written
file under a final name. ``build-info.json`` is written last; the Makefile uses it as the target that marks
a complete build.

Feed files follow qcc's calibration-data contract (``compiler/data.py``): either keys = input names holding
arrays with a leading sample axis (rank = input rank + 1, each sample one batch-1 feed), or keys
``<index>/<input name>`` when shapes differ between samples.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

MAX_IR_VERSION = 10
"""onnxruntime 1.31 rejects the IR version 14 that onnx 1.23 writes by default; models are stamped down."""


class RecipeError(RuntimeError):
    """A zoo recipe cannot build its model: a source file is missing or changed, or an export check failed."""


def parse_args(description: str) -> argparse.Namespace:
    """Parses the common recipe command line (``--out DIR``) and sets up logging.

    Returns:
        The namespace with ``out`` as a Path (created if missing).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, required=True, help="output directory, e.g. build/<model>")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args


def package_file(package: str, relative: str) -> Path:
    """Returns the path of a file shipped inside an installed package, without importing the package.

    Raises:
        RecipeError: the package is not installed or does not contain the file.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RecipeError(f"package {package!r} is not installed in the zoo env; run `make -C models venv`.")
    for root in spec.submodule_search_locations:
        path = Path(root) / relative
        if path.is_file():
            return path
    raise RecipeError(
        f"{package!r} has no file {relative!r}; check the pinned version in requirements-zoo.txt."
    )


def sha256_file(path: Path) -> str:
    """Returns the hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str) -> str:
    """Checks a source file against its pinned sha256 and returns the digest.

    Raises:
        RecipeError: the digest differs (a different package version or a modified install).
    """
    actual = sha256_file(path)
    if actual != expected:
        raise RecipeError(f"{path} has sha256 {actual}, expected {expected}; the package changed, re-pin it.")
    return actual


def versions(*distributions: str) -> dict[str, str]:
    """Returns {distribution: installed version} for the build record."""
    return {name: importlib.metadata.version(name) for name in distributions}


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    """Writes bytes atomically."""
    _atomic_write(path, lambda f: f.write(data))


def write_json(path: Path, obj: object) -> None:
    """Writes JSON (indented, keys in insertion order) atomically."""
    write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Writes an uncompressed .npz atomically (keys as given)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes(path, buffer.getvalue())


def stacked_feeds(samples: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stacks same-shaped batch-1 feeds into the sample-axis form {input: (S, *input shape)}.

    Raises:
        RecipeError: the samples disagree in names or shapes (use ``indexed_feeds`` then).
    """
    names = list(samples[0])
    out = {}
    for name in names:
        shapes = {tuple(s[name].shape) for s in samples}
        if len(shapes) != 1:
            raise RecipeError(f"input {name!r} has several shapes {sorted(shapes)}; use indexed_feeds.")
        out[name] = np.stack([s[name] for s in samples])
    return out


def indexed_feeds(samples: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Returns the ``<index>/<input name>`` form, for samples whose shapes differ."""
    return {f"{i}/{name}": array for i, sample in enumerate(samples) for name, array in sample.items()}


def finalize_onnx(model_bytes: bytes):
    """Loads exported ONNX bytes, caps the IR version at MAX_IR_VERSION and runs the ONNX checker.

    Returns:
        The onnx.ModelProto.
    """
    import onnx

    model = onnx.load_from_string(model_bytes)
    if model.ir_version > MAX_IR_VERSION:
        model.ir_version = MAX_IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def write_onnx(path: Path, model) -> None:
    """Serialises an onnx.ModelProto atomically (single file, no external data)."""
    write_bytes(path, model.SerializeToString())


def ort_run(path: Path, feeds: Sequence[Mapping[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """Runs an ONNX model on CPU with onnxruntime, one feed at a time; returns the outputs per feed."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [session.run(None, dict(feed)) for feed in feeds]


def compare(name: str, reference: np.ndarray, actual: np.ndarray, atol: float, rtol: float = 1e-3) -> float:
    """Checks an ONNX output against its reference (torch or the package pipeline).

    Returns:
        The maximum absolute difference.

    Raises:
        RecipeError: shapes differ or values differ beyond atol + rtol * |reference|.
    """
    reference = np.asarray(reference, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if reference.shape != actual.shape:
        raise RecipeError(
            f"output {name!r}: shape {actual.shape} differs from the reference {reference.shape}."
        )
    diff = np.abs(reference - actual)
    if not np.all(diff <= atol + rtol * np.abs(reference)):
        raise RecipeError(f"output {name!r}: max abs difference {diff.max():.3g} exceeds atol {atol}.")
    return float(diff.max())
