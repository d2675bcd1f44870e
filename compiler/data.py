"""The calibration-data contract.

qcc accepts calibration (and evaluation) data in these forms:

* an ``.npz`` file whose keys are ``<index>/<input name>``: one feed per sample, and shapes may
  differ between samples (e.g. images of different sizes);
* an ``.npz`` file (or a dict) whose keys are input names holding arrays with a leading sample
  axis (rank = input rank + 1). An array of the input's own rank is split into batch-1 samples
  along its first axis, unless its shape is exactly the input's static shape (one sample);
* for a single-input model, an ``.npy`` file or a numpy array: rank = input rank + 1 is a stack of
  samples along axis 0, rank = input rank is one sample, any other rank is an error (an ``.npy`` is
  memory-mapped, so a stack is read one sample at a time);
* a folder of ``.npz``/``.npy`` files, read in order of file name, one file at a time, each file
  as above (an ``.npz`` may hold one sample or many);
* an ONNX Runtime ``onnxruntime.quantization.CalibrationDataReader``, or any object with its
  ``get_next()`` (a feed dict, or None at the end): read again after ``rewind()`` when it has one,
  else read once (a second pass then reuses the first samples held, with a warning);
* from Python, any iterable of feed dicts ``{input name: array}``.

Every sample is checked against the model's inputs: a missing or unknown name, a wrong rank or
static dimension, a dtype of the wrong kind (float for an int input, ...) or a NaN/Inf value is a
:class:`~qcc.errors.CalibrationDataError` naming the input and the sample. Arrays of the right kind
but another width (float64 for float32) are cast.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol, Union

import numpy as np

from qcc.errors import CalibrationDataError

logger = logging.getLogger(__name__)


class CalibrationReader(Protocol):
    """ONNX Runtime's ``CalibrationDataReader`` interface: ``get_next()`` returns a feed dict, or
    None after the last sample; an optional ``rewind()`` starts over."""

    def get_next(self) -> Mapping[str, np.ndarray] | None: ...


Feed = dict[str, np.ndarray]
CalibrationSource = Union[
    str, os.PathLike, np.ndarray, Mapping[str, np.ndarray], Iterable[Mapping[str, np.ndarray]], CalibrationReader
]

SPREAD = 8  # samples evenly spaced over the source that spread() can return, for checks on a few
HEAD = 8  # first samples kept, for a second look at a one-shot source
_INDEXED_KEY = re.compile(r"^(\d+)/(.+)$")
_SAMPLE_FILES = (".npz", ".npy")


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One model input: name, numpy dtype and shape (ints for static dims, None for dynamic)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...] | None


class CalibrationData:
    """Validated calibration samples, streamed one feed dict at a time.

    Iterating yields each sample once, validated and cast. A file, folder, array or in-memory
    source can be iterated again, and so can a reader with ``rewind()``; a one-shot Python
    iterator or a reader without ``rewind()`` is read once only (qcc keeps the first few samples,
    see :meth:`head`, for verification).

    Args:
        source: any form in the module docstring.
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
        self._warned = False
        if isinstance(source, (str, os.PathLike)):
            self._origin = os.fspath(source)
            self._raw = _open_path(self._origin, self.inputs)
        elif isinstance(source, np.ndarray):
            self._origin = "the calibration array"
            self._raw = _ArraySamples(source, self.inputs, self._origin)
        elif isinstance(source, Mapping):
            self._raw = _samples_from_mapping(dict(source), self.inputs, self._origin)
        elif is_reader(source):
            self._origin = f"calibration reader {type(source).__name__}"
            self._raw = _ReaderSamples(source)
        elif isinstance(source, Iterable):
            self._raw = source
        else:
            raise CalibrationDataError(
                f"calibration data of type {type(source).__name__} is not supported.",
                "pass a path to an .npz or .npy file or a folder of them, an array, a dict of arrays, "
                "an iterable of feed dicts or a CalibrationDataReader.",
            )
        self._reiterable = reiterable(source)
        self._consumed = False

    def __len__(self) -> int:
        """Number of samples when the source knows it (files, folders, arrays, dicts, lists, and a
        reader once read to its end); TypeError otherwise."""
        n = len(self._raw)  # type: ignore[arg-type]
        return n if self.max_samples is None else min(n, self.max_samples)

    @property
    def reiterable(self) -> bool:
        """True if the samples can be read more than once (not one-shot iterators or readers
        without ``rewind()``)."""
        return self._reiterable

    def known_length(self) -> int | None:
        """Returns the number of samples, or None while the source cannot tell."""
        try:
            return len(self)
        except TypeError:
            return None

    def __iter__(self) -> Iterator[Feed]:
        if self._consumed and not self._reiterable:
            if not self._warned:
                self._warned = True
                logger.warning(
                    "%s can be read only once, and qcc reads it again here: this pass uses the first %d "
                    "samples it kept. Give a reader a rewind() method, or pass a list, to use them all.",
                    self._origin,
                    len(self._head),
                )
            yield from self._head
            return
        self._consumed = True
        count = 0
        stride, spread = 1, {}  # every stride-th sample is kept; doubled whenever more than 2 SPREAD are
        for index, raw in enumerate(self._raw):
            if self.max_samples is not None and count >= self.max_samples:
                break
            feed = self._validate(index, raw)
            if index == len(self._head) < HEAD:  # a second pass does not add the first samples again
                self._head.append(feed)
            if index % stride == 0:
                spread[index] = feed
                if len(spread) > 2 * SPREAD:
                    stride *= 2
                    spread = {i: f for i, f in spread.items() if i % stride == 0}
            count += 1
            yield feed
        if count == 0:
            fix = "provide at least one sample for every input."
            if isinstance(self._raw, _ReaderSamples) and not self._raw.rewinds:
                fix = "give the reader a rewind() method if it was read before (qcc may read it more than once)."
            raise CalibrationDataError(f"{self._origin} holds no samples.", fix)
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
        if isinstance(self._raw, _FolderSamples):
            where += f" (in {os.path.basename(self._raw.current)})"
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
        raise CalibrationDataError(f"{label} has dtype {array.dtype}, expected {spec.dtype}.", "store numeric arrays.")
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
        raise CalibrationDataError(f"{label} contains NaN or Inf values.", "remove or replace the non-finite values.")
    return np.asarray(array, dtype=spec.dtype, order="C")  # (ascontiguousarray would make a scalar 1-d)


def _kind(dtype: np.dtype) -> str:
    return {"b": "bool", "f": "float"}.get(dtype.kind, "int")


def _shape_str(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _fits(shape: tuple[int, ...], spec: tuple[int | None, ...]) -> bool:
    """True if ``shape`` has the spec's rank and matches its static dimensions."""
    return len(shape) == len(spec) and all(want is None or got == want for got, want in zip(shape, spec, strict=True))


def is_reader(source: object) -> bool:
    """True for an ONNX Runtime ``CalibrationDataReader`` or any object with its ``get_next()``."""
    return not isinstance(source, Mapping) and callable(getattr(source, "get_next", None))


class _ReaderSamples:
    """The feeds of a ``CalibrationDataReader``, streamed with ``get_next()`` until it returns None.

    Every pass starts with ``rewind()`` when the reader has one, so that each of qcc's compiles
    and passes reads the whole set; the length is known once a pass reached the end.
    """

    def __init__(self, reader: CalibrationReader):
        self.reader = reader
        self.rewinds = callable(getattr(reader, "rewind", None))
        self._length: int | None = None

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError("a reader's length is known once it was read to its end")
        return self._length

    def __iter__(self) -> Iterator[Mapping[str, np.ndarray]]:
        if self.rewinds:
            self.reader.rewind()  # type: ignore[attr-defined]
        count = 0
        while (feed := self.reader.get_next()) is not None:
            count += 1
            yield feed
        self._length = count


class _ArraySamples:
    """The samples of a single-input model in one array (a bare array or an ``.npy`` file).

    Rank = the input's rank + 1: a stack of samples along axis 0, indexed one at a time (lazily,
    for a memory-mapped ``.npy``); rank = the input's rank: one sample.
    """

    def __init__(self, array: np.ndarray, inputs: dict[str, InputSpec], origin: str):
        names = ", ".join(map(repr, inputs))
        if len(inputs) != 1:
            raise CalibrationDataError(
                f"{origin} is a single array, but the model has {len(inputs)} inputs ({names}).",
                "pass an .npz or a dict with one array per input name, or one feed dict per sample.",
            )
        (spec,) = inputs.values()
        self.name, self.array = spec.name, array
        if spec.shape is None:
            raise CalibrationDataError(
                f"{origin} is a single array, and input {spec.name!r} has no known rank to tell samples apart by.",
                f"pass one feed dict {{{spec.name!r}: array}} per sample.",
            )
        rank, shape = len(spec.shape), _shape_str(spec.shape)
        if array.ndim == rank + 1:
            self.stacked = True
        elif array.ndim == rank and (_fits(array.shape, spec.shape) or not _fits(array.shape[1:], spec.shape[1:])):
            self.stacked = False  # one sample (a wrong static dimension is then named per sample)
        elif array.ndim == rank:
            raise CalibrationDataError(
                f"{origin} has shape {array.shape}: one sample of input {spec.name!r} has shape {shape}, and a "
                f"stack of samples has rank {rank + 1} (samples first).",
                f"to use axis 0 as the sample axis, add the input's own axis: array[:, None] (shape "
                f"{(array.shape[0], 1, *array.shape[1:])}).",
            )
        else:
            raise CalibrationDataError(
                f"{origin} has shape {array.shape} (rank {array.ndim}); input {spec.name!r} has shape {shape}, so "
                f"an array must be one sample (rank {rank}) or a stack of samples (rank {rank + 1}, samples first).",
                f"reshape it to (samples, {shape[1:-1]}) for a stack, or ({shape[1:-1]}) for one sample.",
            )

    def __len__(self) -> int:
        return self.array.shape[0] if self.stacked else 1

    def __iter__(self) -> Iterator[Feed]:
        if not self.stacked:
            yield {self.name: self.array}
            return
        for i in range(self.array.shape[0]):
            yield {self.name: self.array[i]}


class _NpzSamples:
    """Re-iterable samples from an .npz in either key form; arrays are read lazily."""

    def __init__(self, path: str, npz: np.lib.npyio.NpzFile, inputs: dict[str, InputSpec]):
        self.path = path
        self.npz = npz
        self.inputs = inputs
        keys = list(npz.files)
        indexed = [_INDEXED_KEY.match(k) for k in keys]
        self._by_name: list[Feed] | None = None
        if keys and all(indexed):
            by_index: dict[int, dict[str, str]] = {}
            for m in indexed:
                assert m is not None
                by_index.setdefault(int(m.group(1)), {})[m.group(2)] = m.group(0)
            self._indexed: list[dict[str, str]] | None = [by_index[i] for i in sorted(by_index)]
        elif any(indexed):
            raise CalibrationDataError(
                f"{path} mixes '<index>/<input>' keys with plain input-name keys.",
                "use one key form for the whole file.",
            )
        else:
            self._indexed = None
            _check_names(keys, inputs, path)

    def __len__(self) -> int:
        if self._indexed is not None:
            return len(self._indexed)
        if self._by_name is not None:
            return len(self._by_name)
        shapes = {name: _npz_shape(self.npz, name) for name in self.inputs}  # the headers: no array is read
        return _sample_count(shapes, self.inputs, self.path)

    def __iter__(self) -> Iterator[Feed]:
        if self._indexed is not None:
            for keys in self._indexed:
                yield {name: self.npz[key] for name, key in keys.items()}
            return
        if self._by_name is None:
            self._by_name = _samples_from_mapping({k: self.npz[k] for k in self.npz.files}, self.inputs, self.path)
        yield from self._by_name

    def close(self) -> None:
        self.npz.close()


def _npz_shape(npz: np.lib.npyio.NpzFile, key: str) -> tuple[int, ...]:
    """The shape of one array of an .npz, from its header (the array itself is not read)."""
    with npz.zip.open(f"{key}.npy") as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(member)[0]
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(member)[0]
    return npz[key].shape  # a newer header version: read the array


class _FolderSamples:
    """The samples of every ``.npz``/``.npy`` file in a folder, in order of file name, one file
    open at a time (each file as :func:`_open_path` reads it)."""

    def __init__(self, path: str, inputs: dict[str, InputSpec]):
        self.path = path
        self.inputs = inputs
        names = sorted(f for f in os.listdir(path) if f.lower().endswith(_SAMPLE_FILES))
        if not names:
            raise CalibrationDataError(
                f"calibration folder {path} holds no .npz or .npy files.",
                "put the samples in .npz files (or, for a single-input model, .npy files) in it.",
            )
        self.files = [os.path.join(path, name) for name in names]
        self.current = self.files[0]
        self._counts: list[int] | None = None

    def __len__(self) -> int:
        if self._counts is None:
            counts = []
            for file in self.files:
                samples = _open_file(file, self.inputs)
                counts.append(len(samples))
                _close(samples)
            self._counts = counts
        return sum(self._counts)

    def __iter__(self) -> Iterator[Feed]:
        for file in self.files:
            self.current = file
            samples = _open_file(file, self.inputs)
            try:
                yield from samples
            finally:
                _close(samples)


def _close(samples: _NpzSamples | _ArraySamples) -> None:
    if isinstance(samples, _NpzSamples):
        samples.close()


def _open_path(path: str, inputs: dict[str, InputSpec]) -> _NpzSamples | _ArraySamples | _FolderSamples:
    if os.path.isdir(path):
        return _FolderSamples(path, inputs)
    if not os.path.exists(path):
        raise CalibrationDataError(f"calibration file {path} does not exist.", "check the path.")
    return _open_file(path, inputs)


def _open_file(path: str, inputs: dict[str, InputSpec]) -> _NpzSamples | _ArraySamples:
    """Opens an .npz (either key form) or an .npy (memory-mapped: a stack is read sample by sample)."""
    try:
        loaded: Any = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise CalibrationDataError(
            f"{path} is not a readable .npz or .npy file ({exc}).",
            "write it with numpy.savez(path, **{'input name': array}) (or numpy.save for one input).",
        ) from None
    if isinstance(loaded, np.ndarray):
        return _ArraySamples(loaded, inputs, path)
    return _NpzSamples(path, loaded, inputs)


def _check_names(names: Iterable[str], inputs: dict[str, InputSpec], origin: str) -> None:
    names = set(names)
    unknown = sorted(names - set(inputs))
    if unknown:
        raise CalibrationDataError(
            f"{origin} has key(s) {', '.join(map(repr, unknown))} that are not model inputs.",
            f"the model's inputs are {', '.join(map(repr, inputs))}.",
        )
    missing = [name for name in inputs if name not in names]
    if missing:
        raise CalibrationDataError(
            f"{origin} has no data for input(s) {', '.join(map(repr, missing))}.",
            "give every model input an array.",
        )


def _split(name: str, shape: tuple[int, ...], spec: InputSpec, origin: str) -> str:
    """How an input's array in the by-name form holds its samples: ``"stack"`` (a leading sample
    axis), ``"one"`` (exactly the input's static shape) or ``"rows"`` (batch-1 rows of axis 0)."""
    rank = None if spec.shape is None else len(spec.shape)
    if rank is not None and len(shape) == rank + 1:
        return "stack"
    if rank is not None and len(shape) == rank and rank > 0:
        assert spec.shape is not None
        if all(d is not None for d in spec.shape) and tuple(shape) == spec.shape:
            return "one"
        if spec.shape[0] in (None, 1):
            return "rows"
        raise CalibrationDataError(
            f"input {name!r} in {origin} has shape {tuple(shape)}; the model expects {_shape_str(spec.shape)}.",
            "add a leading sample axis: shape (samples, *input shape).",
        )
    expected = "?" if rank is None else f"{rank + 1} (a sample axis, then the input's {rank} axes)"
    raise CalibrationDataError(
        f"input {name!r} in {origin} has rank {len(shape)}; expected rank {expected}.",
        "store one array per input with shape (samples, *input shape).",
    )


def _sample_count(shapes: dict[str, tuple[int, ...]], inputs: dict[str, InputSpec], origin: str) -> int:
    """The number of samples of the by-name form, from the arrays' shapes."""
    counts = {
        name: 1 if _split(name, shape, inputs[name], origin) == "one" else shape[0] for name, shape in shapes.items()
    }
    if len(set(counts.values())) > 1:
        raise CalibrationDataError(
            f"{origin} has different sample counts per input: {counts}.",
            "give every input the same number of samples.",
        )
    return next(iter(counts.values()), 0)


def _samples_from_mapping(arrays: dict, inputs: dict[str, InputSpec], origin: str) -> list[Feed]:
    """Splits {name: array with a sample axis} into per-sample feeds (see module docstring)."""
    _check_names(arrays, inputs, origin)
    arrays = {name: np.asarray(arrays[name]) for name in inputs}
    n = _sample_count({name: array.shape for name, array in arrays.items()}, inputs, origin)
    per_input: dict[str, list[np.ndarray]] = {}
    for name, array in arrays.items():
        kind = _split(name, array.shape, inputs[name], origin)
        if kind == "one":
            per_input[name] = [array]
        elif kind == "stack":
            per_input[name] = list(array)
        else:
            per_input[name] = [array[i : i + 1] for i in range(array.shape[0])]
    return [{name: per_input[name][i] for name in per_input} for i in range(n)]


def reiterable(source: CalibrationSource | CalibrationData | None) -> bool:
    """True if the source can be read more than once: anything but a one-shot iterator or a reader
    without ``rewind()``."""
    if isinstance(source, CalibrationData):
        return source.reiterable
    if is_reader(source):
        return callable(getattr(source, "rewind", None))
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


def one_pass(source: CalibrationSource) -> Iterator[Mapping[str, np.ndarray]]:
    """The raw feeds of a source that can be read only once (see :func:`reiterable`), for gathering
    into a list: a reader's ``get_next()`` results, or the iterator itself."""
    if is_reader(source):
        return iter(_ReaderSamples(source))  # type: ignore[arg-type]
    return iter(source)  # type: ignore[arg-type]
