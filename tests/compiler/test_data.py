from __future__ import annotations

import numpy as np
import pytest

import qcc
from qcc.data import InputSpec, open_calibration

SPECS = [InputSpec("x", np.dtype(np.float32), (None, 3, 4)), InputSpec("ids", np.dtype(np.int64), (1, 5))]


def _feed(rng, batch=1):
    return {"x": rng.normal(size=(batch, 3, 4)).astype(np.float32), "ids": np.arange(5, dtype=np.int64)[None]}


def test_indexed_npz_allows_different_shapes(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for i, batch in enumerate([1, 2, 3]):
        for name, array in _feed(rng, batch).items():
            arrays[f"{i}/{name}"] = array
    np.savez(tmp_path / "c.npz", **arrays)
    samples = list(open_calibration(str(tmp_path / "c.npz"), SPECS))
    assert [s["x"].shape[0] for s in samples] == [1, 2, 3]


def test_sample_axis_form_and_batch_rows(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "c.npz", x=rng.normal(size=(6, 1, 3, 4)), ids=np.zeros((6, 1, 5), np.int64))
    samples = list(open_calibration(str(tmp_path / "c.npz"), SPECS))
    assert len(samples) == 6 and samples[0]["x"].dtype == np.float32  # float64 is cast
    rows = list(open_calibration({"x": rng.normal(size=(4, 3, 4)), "ids": np.zeros((4, 5), np.int64)}, SPECS))
    assert len(rows) == 4 and rows[0]["x"].shape == (1, 3, 4) and rows[0]["ids"].shape == (1, 5)


def test_iterable_is_streamed_and_only_a_few_samples_are_held():
    rng = np.random.default_rng(0)
    data = open_calibration((_feed(rng) for _ in range(100)), SPECS)
    assert sum(1 for _ in data) == 100
    assert len(data.head(8)) <= 8


@pytest.mark.parametrize(
    ("feed", "message"),
    [
        ({"x": np.zeros((1, 3, 4), np.float32)}, "no data for input"),
        ({"x": np.zeros((1, 3, 4), np.float32), "ids": np.zeros((1, 5), np.int64), "z": np.zeros(1)}, "'z'"),
        ({"x": np.zeros((3, 4), np.float32), "ids": np.zeros((1, 5), np.int64)}, "rank 2"),
        ({"x": np.zeros((1, 3, 5), np.float32), "ids": np.zeros((1, 5), np.int64)}, "axis 2 is 5, not 4"),
        ({"x": np.zeros((1, 3, 4), np.int32), "ids": np.zeros((1, 5), np.int64)}, "dtype int32"),
        ({"x": np.full((1, 3, 4), np.nan, np.float32), "ids": np.zeros((1, 5), np.int64)}, "NaN or Inf"),
    ],
)
def test_bad_samples_name_the_input(feed, message):
    with pytest.raises(qcc.CalibrationDataError, match=message) as info:
        list(open_calibration([feed], SPECS))
    assert "sample 0" in str(info.value)


def test_zero_samples_and_bad_files(tmp_path):
    with pytest.raises(qcc.CalibrationDataError, match="no samples"):
        list(open_calibration([], SPECS))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(qcc.CalibrationDataError, match="not a readable .npz"):
        open_calibration(str(tmp_path / "bad.npz"), SPECS)
    with pytest.raises(qcc.CalibrationDataError, match="does not exist"):
        open_calibration(str(tmp_path / "missing.npz"), SPECS)


def test_spread_samples_span_the_data_the_same_for_a_list_and_an_iterator():
    from qcc.data import SPREAD, CalibrationData

    feeds = [{"x": np.full((1, 2), i, np.float32)} for i in range(40)]
    specs = [InputSpec("x", np.dtype(np.float32), (1, 2))]
    picked = {}
    for kind, source in (("list", feeds), ("iterator", iter(feeds))):
        data = CalibrationData(source, specs)
        list(data)  # calibration reads it once
        picked[kind] = [int(f["x"][0, 0]) for f in data.spread(4)]
    assert picked["list"] == picked["iterator"]
    assert picked["list"][0] == 0 and picked["list"][-1] >= 30 and len(picked["list"]) == 4
    everything = CalibrationData(feeds, specs).spread(SPREAD)
    assert len(everything) == SPREAD and len({int(f["x"][0, 0]) for f in everything}) == SPREAD


def test_spaced_samples_are_evenly_spaced_and_an_iterator_gives_its_spread():
    from qcc.data import CalibrationData

    feeds = [{"x": np.full((1, 2), i, np.float32)} for i in range(40)]
    specs = [InputSpec("x", np.dtype(np.float32), (1, 2))]
    spaced = [(i, int(f["x"][0, 0])) for i, f in CalibrationData(feeds, specs).spaced(8)]
    assert spaced == [(i, i) for i in range(0, 40, 5)]
    once = CalibrationData(iter(feeds), specs)
    list(once)
    assert [int(f["x"][0, 0]) for _, f in once.spaced(4)] == [int(f["x"][0, 0]) for f in once.spread(4)]


def test_scalar_inputs_stay_scalars():
    from qcc.data import CalibrationData, InputSpec

    data = CalibrationData([{"rate": np.array(16000, np.int64)}], [InputSpec("rate", np.dtype(np.int64), ())])
    (feed,) = list(data)
    assert feed["rate"].shape == ()


# --- sources users already have: a CalibrationDataReader, .npy files and arrays, folders ---

SINGLE = [InputSpec("x", np.dtype(np.float32), (1, 3, 4))]


class _Reader:
    """The interface of onnxruntime.quantization.CalibrationDataReader, duck-typed; ``rewind`` optional."""

    def __init__(self, feeds, rewind=True):
        self.feeds, self.rewinds, self.reads = feeds, 0, 0
        self._it = iter(feeds)
        if rewind:
            self.rewind = self._rewind

    def get_next(self):
        feed = next(self._it, None)
        self.reads += feed is not None
        return feed

    def _rewind(self):
        self.rewinds += 1
        self._it = iter(self.feeds)


def _ones(count):
    return [{"x": np.full((1, 3, 4), i, np.float32)} for i in range(count)]


def _values(data):
    return [int(f["x"].flat[0]) for f in data]


def test_a_reader_is_streamed_and_rewound_for_every_pass():
    from qcc.data import reiterable

    reader = _Reader(_ones(5))
    data = open_calibration(reader, SINGLE)
    assert data.reiterable and reiterable(reader) and data.known_length() is None  # not known before a pass
    assert _values(data) == [0, 1, 2, 3, 4] and len(data) == 5
    assert _values(data) == [0, 1, 2, 3, 4] and reader.rewinds == 2


def test_a_reader_without_rewind_is_read_once_and_a_second_pass_says_so(caplog):
    from qcc.data import reiterable

    reader = _Reader(_ones(12), rewind=False)
    data = open_calibration(reader, SINGLE)
    assert not data.reiterable and not reiterable(reader)
    assert _values(data) == list(range(12)) and reader.reads == 12
    with caplog.at_level("WARNING", logger="qcc.data"):
        assert _values(data) == list(range(8))  # the first samples kept, not the reader again
    assert "can be read only once" in caplog.text and "rewind()" in caplog.text
    with pytest.raises(qcc.CalibrationDataError, match="holds no samples.*rewind"):
        list(open_calibration(reader, SINGLE))  # an exhausted reader opened again


def test_onnxruntime_reader_subclass_with_rewind_is_read_whole_every_pass():
    from onnxruntime.quantization import CalibrationDataReader

    from qcc.data import reiterable

    class Reader(CalibrationDataReader):  # as users of onnxruntime.quantization write them
        def __init__(self):
            self.rewind()

        def get_next(self):
            return next(self.it, None)

        def rewind(self):
            self.it = iter(_ones(10))

    data = open_calibration(Reader(), SINGLE)
    assert data.reiterable and reiterable(Reader())  # ORT's base class is an iterator, but rewind() reads again
    assert _values(data) == list(range(10)) and _values(data) == list(range(10))


def test_npy_and_bare_array_rule(tmp_path):
    stack = np.stack([f["x"] for f in _ones(4)])  # (4, 1, 3, 4): rank 4 = input rank + 1
    np.save(tmp_path / "stack.npy", stack)
    assert _values(open_calibration(str(tmp_path / "stack.npy"), SINGLE)) == [0, 1, 2, 3]
    assert len(open_calibration(str(tmp_path / "stack.npy"), SINGLE)) == 4
    assert _values(open_calibration(stack, SINGLE)) == [0, 1, 2, 3]
    one = open_calibration(stack[2], SINGLE)  # the input's own rank: one sample
    assert _values(one) == [2] and len(one) == 1
    for bad, message in (
        (stack[0, 0], r"shape \(3, 4\) \(rank 2\).*\[1, 3, 4\].*reshape it to \(samples, 1, 3, 4\)"),
        (stack[:, 0], r"shape \(4, 3, 4\).*array\[:, None\]"),
    ):
        with pytest.raises(qcc.CalibrationDataError, match=message) as info:
            open_calibration(bad, SINGLE)
        assert "\n" not in str(info.value)
    with pytest.raises(qcc.CalibrationDataError, match="single array, but the model has 2 inputs"):
        open_calibration(stack, SPECS)


def test_folder_is_read_in_name_order_one_file_at_a_time(tmp_path):
    feeds = _ones(7)
    folder = tmp_path / "calib"
    folder.mkdir()
    np.save(folder / "a0.npy", feeds[0]["x"])  # one sample
    np.savez(folder / "a1.npz", x=np.stack([f["x"] for f in feeds[1:4]]))  # three, by name
    np.savez(folder / "b.npz", **{"0/x": feeds[4]["x"], "1/x": feeds[5]["x"]})  # two, indexed
    np.save(folder / "c.npy", feeds[6]["x"][None])  # a stack of one
    (folder / "notes.txt").write_text("not a sample")
    data = open_calibration(str(folder), SINGLE)
    assert len(data) == 7 and _values(data) == list(range(7)) and _values(data) == list(range(7))
    np.save(folder / "d.npy", np.zeros((1, 3, 5), np.float32))
    with pytest.raises(qcc.CalibrationDataError, match=r"sample 7 of .*calib \(in d.npy\).*axis 2 is 5"):
        list(open_calibration(str(folder), SINGLE))
    (tmp_path / "empty").mkdir()
    with pytest.raises(qcc.CalibrationDataError, match="holds no .npz or .npy files"):
        open_calibration(str(tmp_path / "empty"), SINGLE)


def _compile(model, calibration, target="ort"):
    return qcc.compile(model, target=target, calibration=calibration, verify=False, refit=False)


@pytest.fixture(scope="module")
def conv_model():
    from tests.e2e.synthetic import synthetic_model

    return synthetic_model("residual_cnn")


@pytest.fixture(scope="module")
def from_npz(conv_model, tmp_path_factory):
    from tests.conftest import random_feeds

    stack = np.stack([f["x"] for f in random_feeds(conv_model, 6)])  # (6, 1, 3, 16, 16)
    path = tmp_path_factory.mktemp("npz") / "calib.npz"
    np.savez(path, x=stack)
    return stack, _compile(conv_model, str(path))


def _same(result, reference):
    assert result.model.SerializeToString() == reference.model.SerializeToString()
    assert result.report["tensors"] == reference.report["tensors"]


def test_compile_from_npy_array_and_folder_equals_the_npz(conv_model, from_npz, tmp_path):
    stack, reference = from_npz
    np.save(tmp_path / "calib.npy", stack)
    _same(_compile(conv_model, str(tmp_path / "calib.npy")), reference)
    _same(_compile(conv_model, stack), reference)
    folder = tmp_path / "folder"
    folder.mkdir()
    for i, sample in enumerate(stack):  # file names sort in sample order; both kinds of file
        if i % 2:
            np.savez(folder / f"{i:03d}.npz", x=sample[None])
        else:
            np.save(folder / f"{i:03d}.npy", sample)
    _same(_compile(conv_model, str(folder)), reference)


def test_compile_from_a_reader_equals_the_npz(conv_model, from_npz):
    stack, reference = from_npz
    reader = _Reader([{"x": sample} for sample in stack])
    _same(_compile(conv_model, reader), reference)
    assert reader.rewinds >= 2  # calibration and the passes after it read the whole set again


def test_compile_from_a_one_shot_reader_equals_a_one_shot_iterator(conv_model, from_npz):
    stack, _ = from_npz
    reader = _Reader([{"x": sample} for sample in stack], rewind=False)
    _same(_compile(conv_model, reader), _compile(conv_model, iter([{"x": sample} for sample in stack])))
    assert reader.reads == len(stack)  # read once


def test_one_pass_gathers_a_reader_without_iter():
    from qcc.data import one_pass

    feeds = _ones(3)
    assert [int(f["x"].flat[0]) for f in one_pass(_Reader(feeds, rewind=False))] == [0, 1, 2]
    assert list(one_pass(iter(feeds))) == feeds
