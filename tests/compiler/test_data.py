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
