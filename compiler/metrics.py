"""Output fidelity of an artifact against the float model, in the one shape every verify() reports.

Core, like annotations and Q/DQ materialization: the mixed-precision pass scores its simulations
with it and every backend's verify() reports with it, so it imports no pass and no backend.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two flattened arrays (1.0 when both are all zero)."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def relative_error(expected: np.ndarray, got: np.ndarray) -> float:
    """``||got - expected|| / ||expected||`` of flattened arrays (0 or 1 when expected is all zero)."""
    norm = float(np.linalg.norm(expected))
    return float(np.linalg.norm(got - expected)) / norm if norm else float(np.linalg.norm(got) > 0)


class OutputFidelity:
    """Accumulates, per output, cosine and error of artifact outputs against float outputs."""

    def __init__(self) -> None:
        self._stats: dict[str, dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
        self.finite = True
        self.samples = 0

    def add(self, name: str, expected: np.ndarray, got: np.ndarray) -> None:
        """Adds one output of one sample.

        Where the float model itself is non-finite (masks), the artifact must match it exactly;
        cosine and error are taken over the finite positions.
        """
        e = np.asarray(expected, dtype=np.float64).ravel()
        g = np.asarray(got, dtype=np.float64).ravel()
        keep = np.isfinite(e)
        self.finite &= bool(np.all(np.isfinite(g[keep]))) and bool(np.array_equal(e[~keep], g[~keep], equal_nan=True))
        e, g = e[keep], g[keep]
        stats = self._stats[name]
        stats["cosine"].append(cosine(e, g))
        stats["max_abs_error"].append(float(np.max(np.abs(e - g))) if e.size else 0.0)
        stats["ref_absmax"].append(float(np.max(np.abs(e))) if e.size else 0.0)
        stats["relative"].append(relative_error(e, g))

    def result(self) -> dict[str, Any]:
        """Returns {samples, finite, outputs: {name: cosine_mean, cosine_min, relative_error_mean,
        max_abs_error, reference_absmax}}; relative error is ||got - expected|| / ||expected||."""
        outputs = {
            name: {
                "cosine_mean": float(np.mean(s["cosine"])),
                "cosine_min": float(np.min(s["cosine"])),
                "relative_error_mean": float(np.mean(s["relative"])),
                "max_abs_error": float(np.max(s["max_abs_error"])),
                "reference_absmax": float(np.max(s["ref_absmax"])),
            }
            for name, s in self._stats.items()
        }
        return {"samples": self.samples, "finite": self.finite, "outputs": outputs}
