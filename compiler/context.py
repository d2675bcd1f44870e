"""The frozen context every pass is constructed with."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import onnx_ir as ir

from qcc.data import CalibrationData
from qcc.options import CalibrationMethod, CompileOptions
from qcc.target import TargetSpec

# progress(stage, done, total): total is None when unknown. Library code reports; the CLI draws.
Progress = Callable[[str, int, "int | None"], None]


def no_progress(stage: str, done: int, total: int | None) -> None:
    """A progress callback that ignores every report."""


@dataclasses.dataclass(frozen=True)
class PassContext:
    """Everything a pass may read besides the model.

    Attributes:
        options: the compile options.
        target: the target's spec.
        calibration: the calibration samples (None for passes run without data, e.g. ``inspect``).
        progress: progress callback for long stages.
        keep_float: nodes the driver decided to keep float after a first attempt (name -> reason).
        statistics: calibration statistics already observed, by tensor names, shared by the
            compiles of one method selection and the re-plans of one compile (the float model's
            tensors do not change with the method or the plan); None: observe every time. Passes
            whose results depend only on those statistics may keep them here too, under a key of
            their own (``weight_rounding``).
        tensor_methods: with ``--method auto``, the clip search's choice of method per tensor
            (tensor name -> method; the rest minmax); None until the search has run.
        settled: the float nodes and clip methods are another compile's final plan (the refit
            compile of ``driver._refit_plan``, a method compiled at another's plan): mixed
            precision only measures.
        search: how the mixed-precision search that chose the float nodes ended (reported by the
            compile that only measures).
    """

    options: CompileOptions
    target: TargetSpec
    calibration: CalibrationData | None = None
    progress: Progress = no_progress
    keep_float: Mapping[str, str] = dataclasses.field(default_factory=dict)
    statistics: dict | None = None
    tensor_methods: Mapping[str, str] | None = None
    settled: bool = False
    search: Mapping[str, Any] | None = None

    @property
    def weight_dtype(self) -> ir.DataType:
        """The type of quantized weights for this target and these options."""
        return self.target.weight_dtype(self.options)

    @property
    def calibration_method(self) -> CalibrationMethod:
        """The calibration method: the user's, or the target's default."""
        return self.options.method or self.target.default_methods(self.options)[0]

    @property
    def activation_dtype(self) -> ir.DataType:
        """The integer type of quantized activations for this target and these options."""
        if self.options.dynamic:
            return ir.DataType.UINT8  # DynamicQuantizeLinear's, whatever the host
        return self.target.activation_dtype(self.options)
