"""The calibration-data contract.

qcc accepts calibration (and evaluation) data in three forms:

* an ``.npz`` file whose keys are ``<index>/<input name>``: one feed per sample, and shapes may
  differ between samples (e.g. images of different sizes);
* an ``.npz`` file (or a dict) whose keys are input names holding arrays with a leading sample
  axis (rank = input rank + 1). An array of the input's own rank is split into batch-1 samples
  along its first axis, unless its shape is exactly the input's static shape (one sample);
* from Python, any iterable of feed dicts ``{input name: array}``.

Every sample is checked against the model's inputs: a missing or unknown name, a wrong rank or
static dimension, a dtype of the wrong kind (float for an int input, ...) or a NaN/Inf value is a
:class:`~qcc.errors.CalibrationDataError` naming the input and the sample. Arrays of the right kind
but another width (float64 for float32) are cast.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from typing import Union

import numpy as np

from qcc.errors import CalibrationDataError

Feed = dict[str, np.ndarray]
CalibrationSource = Union[str, os.PathLike, Mapping[str, np.ndarray], Iterable[Mapping[str, np.ndarray]]]

SPREAD = 8  # samples evenly spaced over the source that spread() can return, for checks on a few
_INDEXED_KEY = re.compile(r"^(\d+)/(.+)$")


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One model input: name, numpy dtype and shape (ints for static dims, None for dynamic)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...] | None


class CalibrationData:
    """Validated calibration samples, streamed one feed dict at a time.

    Iterating yields each sample once, validated and cast. A file or in-memory source can be
    iterated again; a one-shot Python iterator can be iterated once only (qcc keeps the first few
    samples, see :meth:`head`, for verification).

    Args:
        source: path to an ``.npz``, a dict of arrays with a sample axis, or an iterable of feeds.
        inputs: the model inputs the feeds must match.
        max_samples: stop after this many samples.

    Raises:
        CalibrationDataError: the source cannot be opened or is not in one of the forms above.
    """

    def __init__(self, source: CalibrationSource, inputs: list[InputSpec], max_samples: int | None = None):
        self.inputs = {spec.name: spec for spec in inputs}
        self.max_samples = max_samples
        self._origin = "calibration data"
        self._head: list[Feed] = []
        self._spread: dict[int, Feed] = {}  # SPREAD samples evenly spaced over a source of known length
        if isinstance(source, (str, os.PathLike)):
            self._origin = os.fspath(source)
            self._raw = _open_npz(self._origin)
            self._raw.bind(self.inputs)
        elif isinstance(source, Mapping):
            self._raw = _samples_from_mapping(dict(source), self.inputs, self._origin)
        elif isinstance(source, Iterable):
            self._raw = source
        else:
            raise CalibrationDataError(
                f"calibration data of type {type(source).__name__} is not supported.",
                "pass a path to an .npz file, a dict of arrays, or an iterable of feed dicts.",
            )
        self._reiterable = not isinstance(self._raw, Iterator)
        self._consumed = False

    def __len__(self) -> int:
        """Number of samples when the source knows it (files, dicts, lists)."""
        n = len(self._raw)  # type: ignore[arg-type]
        return n if self.max_samples is None else min(n, self.max_samples)

    @property
    def reiterable(self) -> bool:
        """True if the samples can be read more than once (files, dicts, lists; not iterators)."""
        return self._reiterable

    def known_length(self) -> int | None:
        """Returns the number of samples, or None for a one-shot iterator."""
        try:
            return len(self)
        except TypeError:
            return None

    def __iter__(self) -> Iterator[Feed]:
        if self._consumed and not self._reiterable:
            yield from self._head
            return
        self._consumed = True
        count = 0
        stride, spread = 1, {}  # every stride-th sample is kept; doubled whenever more than 2 SPREAD are
        for index, raw in enumerate(self._raw):
            if self.max_samples is not None and count >= self.max_samples:
                break
            feed = self._validate(index, raw)
            if index == len(self._head) < 8:  # a second pass does not add the first samples again
                self._head.append(feed)
            if index % stride == 0:
                spread[index] = feed
                if len(spread) > 2 * SPREAD:
                    stride *= 2
                    spread = {i: f for i, f in spread.items() if i % stride == 0}
            count += 1
            yield feed
        if count == 0:
            raise CalibrationDataError(
                f"{self._origin} holds no samples.", "provide at least one sample for every input."
            )
        self._spread = spread  # only once the whole source was read

    def spread(self, n: int) -> list[Feed]:
        """Returns up to ``n`` (at most ``SPREAD``) samples evenly spaced over the source (from
        every 2^k-th sample, kept while reading it; at most 2 SPREAD held), so that a check on a
        few samples sees the data's variety, not only its first samples; the same for a list and
        a one-shot iterator."""
        if not self._spread:
            if self._consumed and not self._reiterable:
                return self.head(n)  # read part way once (not by qcc's passes, which read it whole)
            for _ in self:
                pass
        chosen = sorted(self._spread)
        if len(chosen) > n:
            chosen = [chosen[round(i * (len(chosen) - 1) / (n - 1))] for i in range(n)] if n > 1 else chosen[:1]
        return [self._spread[i] for i in chosen]

    def spaced(self, n: int) -> Iterator[tuple[int, Feed]]:
        """Yields up to ``n`` (index, sample) pairs evenly spaced over the source: every
        ``ceil(len / n)``-th sample of a reiterable source (read again; at most ``n`` held at a
        time: one), or, for a one-shot iterator read already, its ``spread(n)`` samples."""
        if not self._reiterable:
            yield from enumerate(self.spread(n))
            return
        step = -(-(self.known_length() or n) // n)
        yield from itertools.islice(enumerate(self), 0, None, step)

    def head(self, n: int) -> list[Feed]:
        """Returns up to ``n`` (at most 8) samples, reading the source if it was not read yet."""
        if not self._head:
            for _ in zip(range(n), self, strict=False):
                pass
        return self._head[:n]

    def _validate(self, index: int, raw: Mapping[str, np.ndarray]) -> Feed:
        where = f"sample {index} of {self._origin}"
        if not isinstance(raw, Mapping):
            raise CalibrationDataError(
                f"{where} is a {type(raw).__name__}, not a dict of input name to array.",
                "yield one {input name: array} dict per sample.",
            )
        unknown = sorted(set(raw) - set(self.inputs))
        if unknown:
            raise CalibrationDataError(
                f"{where} has input(s) {', '.join(map(repr, unknown))} that the model does not have.",
                f"the model's inputs are {', '.join(map(repr, self.inputs))}.",
            )
        missing = [name for name in self.inputs if name not in raw]
        if missing:
            raise CalibrationDataError(
                f"{where} has no data for input(s) {', '.join(map(repr, missing))}.",
                "give every model input a value in every sample.",
            )
        return {name: _check_array(np.asarray(raw[name]), self.inputs[name], where) for name in self.inputs}


def _check_array(array: np.ndarray, spec: InputSpec, where: str) -> np.ndarray:
    label = f"input {spec.name!r} in {where}"
    if array.dtype.kind not in "biuf":
        raise CalibrationDataError(
            f"{label} has dtype {array.dtype}, expected {spec.dtype}.", "store numeric arrays."
        )
    if _kind(array.dtype) != _kind(spec.dtype):
        raise CalibrationDataError(
            f"{label} has dtype {array.dtype}, but the model expects {spec.dtype}.",
            f"convert it, e.g. array.astype(np.{spec.dtype}).",
        )
    if spec.shape is not None:
        if array.ndim != len(spec.shape):
            raise CalibrationDataError(
                f"{label} has rank {array.ndim} (shape {array.shape}), the model expects rank "
                f"{len(spec.shape)} {_shape_str(spec.shape)}.",
                "give each sample the model input's full shape, batch axis included.",
            )
        for axis, (got, want) in enumerate(zip(array.shape, spec.shape, strict=True)):
            if want is not None and got != want:
                raise CalibrationDataError(
                    f"{label} has shape {array.shape}, the model expects {_shape_str(spec.shape)} "
                    f"(axis {axis} is {got}, not {want}).",
                    "resize or reshape the data to the model's input shape.",
                )
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise CalibrationDataError(
            f"{label} contains NaN or Inf values.", "remove or replace the non-finite values."
        )
    return np.asarray(array, dtype=spec.dtype, order="C")  # (ascontiguousarray would make a scalar 1-d)


def _kind(dtype: np.dtype) -> str:
    return {"b": "bool", "f": "float"}.get(dtype.kind, "int")


def _shape_str(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


class _NpzSamples:
    """Re-iterable samples from an .npz in either key form; arrays are read lazily."""

    def __init__(self, path: str, npz: np.lib.npyio.NpzFile):
        self.path = path
        self.npz = npz
        keys = list(npz.files)
        indexed = [_INDEXED_KEY.match(k) for k in keys]
        if keys and all(indexed):
            by_index: dict[int, dict[str, str]] = {}
            for m in indexed:
                assert m is not None
                by_index.setdefault(int(m.group(1)), {})[m.group(2)] = m.group(0)
            self._indexed = [by_index[i] for i in sorted(by_index)]
        elif any(indexed):
            raise CalibrationDataError(
                f"{path} mixes '<index>/<input>' keys with plain input-name keys.",
                "use one key form for the whole file.",
            )
        else:
            self._indexed = None

    def bind(self, inputs: dict[str, InputSpec]) -> None:
        if self._indexed is None:
            self._by_name = _samples_from_mapping(
                {k: self.npz[k] for k in self.npz.files}, inputs, self.path
            )

    def __len__(self) -> int:
        return len(self._indexed) if self._indexed is not None else len(self._by_name)

    def __iter__(self) -> Iterator[Feed]:
        if self._indexed is not None:
            for keys in self._indexed:
                yield {name: self.npz[key] for name, key in keys.items()}
        else:
            yield from self._by_name


def _open_npz(path: str) -> _NpzSamples:
    if not os.path.exists(path):
        raise CalibrationDataError(f"calibration file {path} does not exist.", "check the path.")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise CalibrationDataError(
            f"{path} is not a readable .npz file ({exc}).",
            "write it with numpy.savez(path, **{'input name': array}).",
        ) from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise CalibrationDataError(
            f"{path} holds a single array, not an .npz archive.",
            "write it with numpy.savez(path, **{'input name': array}).",
        )
    return _NpzSamples(path, npz)


def _samples_from_mapping(arrays: dict, inputs: dict[str, InputSpec], origin: str) -> list[Feed]:
    """Splits {name: array with a sample axis} into per-sample feeds (see module docstring)."""
    unknown = sorted(set(arrays) - set(inputs))
    if unknown:
        raise CalibrationDataError(
            f"{origin} has key(s) {', '.join(map(repr, unknown))} that are not model inputs.",
            f"the model's inputs are {', '.join(map(repr, inputs))}.",
        )
    missing = [name for name in inputs if name not in arrays]
    if missing:
        raise CalibrationDataError(
            f"{origin} has no data for input(s) {', '.join(map(repr, missing))}.",
            "give every model input an array.",
        )
    per_input: dict[str, list[np.ndarray]] = {}
    for name, spec in inputs.items():
        array = np.asarray(arrays[name])
        rank = None if spec.shape is None else len(spec.shape)
        if rank is not None and array.ndim == rank + 1:
            per_input[name] = list(array)
        elif rank is not None and array.ndim == rank and rank > 0:
            if spec.shape is not None and all(d is not None for d in spec.shape) and array.shape == spec.shape:
                per_input[name] = [array]
            elif spec.shape[0] in (None, 1):
                per_input[name] = [array[i : i + 1] for i in range(array.shape[0])]
            else:
                raise CalibrationDataError(
                    f"input {name!r} in {origin} has shape {array.shape}; the model expects "
                    f"{_shape_str(spec.shape)}.",
                    "add a leading sample axis: shape (samples, *input shape).",
                )
        else:
            expected = "?" if rank is None else f"{rank + 1} (a sample axis, then the input's {rank} axes)"
            raise CalibrationDataError(
                f"input {name!r} in {origin} has rank {array.ndim}; expected rank {expected}.",
                "store one array per input with shape (samples, *input shape).",
            )
    counts = {name: len(samples) for name, samples in per_input.items()}
    if len(set(counts.values())) > 1:
        raise CalibrationDataError(
            f"{origin} has different sample counts per input: {counts}.",
            "give every input the same number of samples.",
        )
    n = next(iter(counts.values()), 0)
    return [{name: per_input[name][i] for name in per_input} for i in range(n)]


def reiterable(source: CalibrationSource | CalibrationData | None) -> bool:
    """True if the source can be read more than once: anything but a one-shot iterator."""
    if isinstance(source, CalibrationData):
        return source.reiterable
    return source is not None and not isinstance(source, Iterator)


def open_calibration(
    source: CalibrationSource | CalibrationData, inputs: list[InputSpec], max_samples: int | None = None
) -> CalibrationData:
    """Wraps any accepted source in a :class:`CalibrationData` bound to the model inputs.

    Raises:
        CalibrationDataError: the source is missing, unreadable or does not fit the inputs.
    """
    if isinstance(source, CalibrationData):
        return source
    return CalibrationData(source, inputs, max_samples)
