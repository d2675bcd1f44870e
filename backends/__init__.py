"""Targets qcc compiles for, by name."""

from __future__ import annotations

from qcc.backends.base import Artifact, Backend
from qcc.errors import OptionError
from qcc.target import TargetSpec


def _registry() -> dict[str, type[Backend]]:
    from qcc.backends.onnxruntime import OrtBackend
    from qcc.backends.tensorrt import TrtBackend
    from qcc.backends.tflite import TfliteBackend

    return {"ort": OrtBackend, "trt": TrtBackend, "tflite": TfliteBackend}


def target_names() -> list[str]:
    """Returns the names of every available target."""
    return list(_registry())


def get_backend(name: str) -> Backend:
    """Returns the backend for a target name.

    Raises:
        OptionError: no target has that name.
    """
    registry = _registry()
    if name not in registry:
        raise OptionError(f"unknown target {name!r}.", f"use one of: {', '.join(registry)} (see `qcc targets`).")
    return registry[name]()


__all__ = ["Artifact", "Backend", "TargetSpec", "get_backend", "target_names"]
