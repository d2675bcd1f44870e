"""ONNX's node conformance cases, compiled for every target and run in its runtime.

The harness is ``tests/e2e/conformance.py`` (``make conformance`` runs every case and writes
``docs/operators.md``). Here a bounded sample runs: the first case of every operator, both
variants. Every case must end matched or refused by a ``QccError``; a crash, an artifact that does
not run, or wrong numbers fail the test, which lists them. ``KNOWN_GAPS`` names what is still
open, with why; a gap that starts to pass must be taken off the list.
"""

from __future__ import annotations

import pytest

from tests.e2e import conformance

# (target, operator) -> why it does not end matched or refused yet.
KNOWN_GAPS: dict[tuple[str, str], str] = {}


@pytest.fixture(scope="module")
def sample_rows() -> list[dict]:
    cases = conformance.collect()
    first = {}
    for case in cases:
        first.setdefault(case.op_type, case)
    return list(conformance.run_all(conformance.TARGETS, conformance.VARIANTS, sorted(first), jobs=2, per_op=1))


@pytest.mark.parametrize("target", conformance.TARGETS)
def test_every_case_matches_or_is_refused(sample_rows, target):
    rows = [r for r in sample_rows if r["target"] in (target, "*")]
    assert rows, "the conformance sample ran no case"
    bad = [r for r in rows if r["status"] not in ("matched", "refused") and (target, r["op_type"]) not in KNOWN_GAPS]
    assert not bad, "\n".join(f"{r['status']} {r['variant']} {r['case']}: {r['detail'][:300]}" for r in bad)
    still_open = {op for (t, op) in KNOWN_GAPS if t == target}
    fixed = still_open - {r["op_type"] for r in rows if r["status"] not in ("matched", "refused")}
    assert not fixed, f"these known gaps now pass; take them off KNOWN_GAPS: {sorted(fixed)}"


@pytest.mark.parametrize("target", conformance.TARGETS)
def test_refusals_name_the_problem(sample_rows, target):
    refused = [r for r in sample_rows if r["target"] == target and r["status"] == "refused"]
    bugs = [r for r in refused if "qcc bug" in r["detail"] or "Fix:" not in r["detail"]]
    assert not bugs, "\n".join(f"{r['case']}: {r['detail'][:300]}" for r in bugs)


def test_compare_catches_wrong_numbers():
    import numpy as np

    expected = np.linspace(-1, 1, 50, dtype=np.float32)
    assert conformance.compare(expected + 0.001, expected) is None
    assert conformance.compare(expected[::-1].copy(), expected) is not None
    assert conformance.compare(np.array([1, 2]), np.array([1, 3])) is not None
    assert conformance.compare(np.array([np.inf, 1.0]), np.array([1.0, 1.0])) is not None
