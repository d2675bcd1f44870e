"""The gated simulation re-runs only the graph after the first switched gate (passes/_simulation.py)."""

from __future__ import annotations

import numpy as np

from qcc.backends import get_backend
from qcc.context import PassContext
from qcc.data import open_calibration
from qcc.frontend import load
from qcc.options import CompileOptions
from qcc.passes import _simulation
from qcc.passes._simulation import Simulation
from qcc.pipeline import run_pipeline
from tests.conftest import random_feeds
from tests.e2e.synthetic import synthetic_model


def _simulation_of(name: str) -> tuple[Simulation, Simulation]:
    """Two simulations of one annotated model: with cut points, and with full runs only."""
    model = synthetic_model(name)
    loaded = load(model)
    data = open_calibration(random_feeds(model, 8), loaded.input_specs())
    spec = get_backend("ort").spec
    run_pipeline(loaded.model, PassContext(CompileOptions(method="minmax", tolerance=None), spec, data))
    feeds = random_feeds(model, 3, seed=4)
    cut = Simulation(loaded.model, feeds)
    full = Simulation(loaded.model, feeds)
    full._suffixes.cuts = []  # noqa: SLF001 - the reference: every run in full
    return cut, full


def test_suffix_runs_are_the_full_runs_bit_for_bit():
    cut, full = _simulation_of("residual_cnn")
    assert cut._suffixes.cuts  # noqa: SLF001
    gates = sorted(cut.gates)
    rng = np.random.default_rng(0)
    configs = [set(gates)]  # the anchor, then one or a few quantizers off at a time, as the search does
    configs += [set(gates) - {g} for g in gates]
    configs += [set(rng.choice(gates, size=len(gates) - 3, replace=False)) for _ in range(5)]
    suffix_runs = 0
    for samples in (1, None):
        for config in configs:
            before = cut._suffixes._anchor  # noqa: SLF001
            got = cut.run(config, samples=samples)
            suffix_runs += cut._suffixes._anchor is before  # noqa: SLF001 - no new anchor: a suffix ran
            want = full.run(config, samples=samples)
            for a, b in zip(got, want, strict=True):
                for x, y in zip(a, b, strict=True):
                    np.testing.assert_array_equal(x, y)
    assert suffix_runs > len(configs)


def test_without_cuts_every_run_is_full(monkeypatch):
    monkeypatch.setattr(_simulation, "CUTS", 0)
    cut, _full = _simulation_of("residual_cnn")
    assert not cut._suffixes.cuts  # noqa: SLF001
    assert len(cut.run(samples=2)) == 2
