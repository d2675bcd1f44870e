"""Output fidelity of an artifact against the float model, in the one shape every verify() reports.

Core, like annotations and Q/DQ materialization: the mixed-precision pass scores its simulations
with it and every backend's verify() reports with it, so it imports no pass and no backend.

An output the float model writes with a Concat (a detector's ``[boxes | class scores]``) is also
scored per part (:func:`concat_parts`): one cosine over the whole output is dominated by its widest
part (box coordinates in pixels) and can read 0.9994 while the class scores are off by 0.2.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

# (the part's tensor in the float model, concat axis, start, stop)
Part = tuple[str, int, int, int]


def concat_parts(model: ir.Model | object) -> dict[str, list[Part]]:
    """The parts of each graph output that a Concat writes from inputs of static width on its axis
    (a model that is not an onnx_ir Model, e.g. serialized bytes, has none found)."""
    found: dict[str, list[Part]] = {}
    if isinstance(model, onnx.ModelProto):
        model = ir.serde.deserialize_model(model)
    if not isinstance(model, ir.Model):
        return found
    for out in model.graph.outputs:
        node = out.producer()
        if node is None or node.op_type != "Concat" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
            continue
        rank = len(out.shape) if out.shape is not None else None
        axis = node.attributes["axis"].as_int() if "axis" in node.attributes else None
        if rank is None or axis is None:
            continue
        axis %= rank
        parts, start = [], 0
        for value in node.inputs:
            width = value.shape[axis] if value is not None and value.shape is not None else None
            if not isinstance(width, int) or not value.name:
                break
            parts.append((value.name, axis, start, start + width))
            start += width
        else:
            found[out.name] = parts
    return found


def cosine(a: np.ndarray, b: np.ndarray, norm_a: float | None = None) -> float:
    """Cosine similarity of two flattened arrays (1.0 when both are all zero); ``norm_a``: ``a``'s
    norm, when known."""
    na = float(np.linalg.norm(a)) if norm_a is None else norm_a
    nb = float(np.linalg.norm(b))
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

    def __init__(self, parts: Mapping[str, list[Part]] | None = None) -> None:
        self._stats: dict[str, dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
        self._parts = dict(parts or {})
        self.finite = True
        self.samples = 0

    def add(self, name: str, expected: np.ndarray, got: np.ndarray) -> None:
        """Adds one output of one sample.

        Where the float model itself is non-finite (masks), the artifact must match it exactly;
        cosine and error are taken over the finite positions.
        """
        for tensor, axis, start, stop in self._parts.get(name, ()):
            if np.ndim(expected) > axis and np.shape(expected) == np.shape(got):
                index = (slice(None),) * axis + (slice(start, stop),)
                e, g, _keep = finite_values(np.asarray(expected)[index], np.asarray(got)[index])
                self._add((name, tensor, axis, start, stop), e, g)
        e, g, keep = finite_values(expected, got)
        self.finite &= bool(np.all(np.isfinite(g))) and bool(
            np.array_equal(np.ravel(expected)[~keep], np.ravel(got)[~keep], equal_nan=True)
        )
        self._add(name, e, g)

    def _add(self, key: object, e: np.ndarray, g: np.ndarray) -> None:
        """Adds the finite pairs of one output (or part) of one sample."""
        stats = self._stats[key]
        stats["cosine"].append(cosine(e, g))
        stats["max_abs_error"].append(float(np.max(np.abs(e - g))) if e.size else 0.0)
        stats["ref_absmax"].append(float(np.max(np.abs(e))) if e.size else 0.0)
        stats["relative"].append(relative_error(e, g))

    def result(self) -> dict[str, Any]:
        """Returns {samples, finite, outputs: {name: cosine_mean, cosine_min, relative_error_mean,
        max_abs_error, reference_absmax[, parts]}}; relative error is ||got - expected|| / ||expected||.
        ``parts`` (outputs a Concat writes): the same numbers per part, with its float-model
        ``tensor`` and ``axis``, ``start``, ``stop``."""
        outputs = {name: _summary(s) for name, s in self._stats.items() if isinstance(name, str)}
        for key, s in self._stats.items():
            if isinstance(key, tuple):
                name, tensor, axis, start, stop = key
                part = {"tensor": tensor, "axis": axis, "start": start, "stop": stop, **_summary(s)}
                outputs[name].setdefault("parts", []).append(part)
        return {"samples": self.samples, "finite": self.finite, "outputs": outputs}


def finite_values(expected: np.ndarray, got: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flattened float64 values at the positions where the float model is finite, and that mask."""
    e = np.asarray(expected, dtype=np.float64).ravel()
    g = np.asarray(got, dtype=np.float64).ravel()
    keep = np.isfinite(e)
    return e[keep], g[keep], keep


def _summary(stats: Mapping[str, list[float]]) -> dict[str, float]:
    return {
        "cosine_mean": float(np.mean(stats["cosine"])),
        "cosine_min": float(np.min(stats["cosine"])),
        "relative_error_mean": float(np.mean(stats["relative"])),
        "max_abs_error": float(np.max(stats["max_abs_error"])),
        "reference_absmax": float(np.max(stats["ref_absmax"])),
    }
