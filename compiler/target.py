"""What a target can run, as data: the :class:`TargetSpec` every pass plans against.

A spec is data (after torch.ao's BackendConfig): which ops carry weights and are quantized first,
which ops have int8 kernels and join a quantized region when a neighbour is quantized, which ops
must reuse their input's parameters, which activations fold into their producer's output
quantization, and the integer schemes. It lives in the core so that passes read it without
importing a backend; each backend subclasses it with its own rules (``backends/``), and only the
backend's emitter turns the annotations into an artifact.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import onnx_ir as ir

from qcc.annotations import Decision
from qcc.errors import OptionError
from qcc.options import ActivationType, CalibrationMethod, CompileOptions, Precision, WeightStorage, field_default


@dataclasses.dataclass(frozen=True)
class TargetSpec:
    """Capabilities of one runtime, as data.

    Attributes:
        name: target name used on the CLI (``ort``).
        description: one line for ``qcc targets``.
        compute_ops: weighted ops quantized whenever their inputs are float (Conv, MatMul, Gemm).
        int8_ops: ops with integer kernels, quantized when a neighbour is quantized.
        shared_scale_ops: ops whose output must carry exactly their input's parameters.
        fused_activations: activations absorbed into the quantized output of their producer.
        keep_fused_activation_nodes: keep absorbed activations as nodes (TensorRT fuses them
            itself) instead of removing them (their clamp is then done by the quantizer).
        symmetric_activations: zero point 0 for activations.
        bias_int32: biases of Conv/Gemm become int32 with scale = input scale x weight scale.
        artifact_suffix: file suffix of the artifact.
        fixed_output_params: ops whose int8 output parameters the runtime fixes, as
            op type -> (scale, zero point) for int8 activations (TFLite Softmax: 1/256, -128).
        quantize_all_outputs: every output of an int8 node is quantized (ONNX Runtime fuses the
            output Q into the kernel). When False, a tensor is quantized only where an int8 node
            reads it, or when its producer is in ``output_quantized_ops`` (TensorRT: weighted ops
            never carry an output Q of their own; the next layer's input Q does the job).
        output_quantized_ops: with ``quantize_all_outputs`` False, ops whose output is quantized
            anyway (pooling).
        shared_group_ops: int8 ops whose quantized inputs and output must all carry one set of
            parameters, computed over the union of their ranges (Concat on TensorRT, which
            otherwise inserts requantize layers).
        rule_ops: ops that only the target's ``decide()`` rule may quantize or fuse (TensorRT's
            residual Add); when the rule declines, they stay float with the rule's reason.
        precisions: number formats the target accepts (``--precision``).
        dynamic: the target runs ``--dynamic`` models (activations quantized at run time).
        int8_chains_only: an ``int8_ops`` node stays int8 only inside an int8 chain: every data
            input written by an int8 node and its output read by one. Elsewhere (a decomposed
            GELU or LayerNorm next to float Tanh/Sqrt) it would add roundings and save nothing.
        meanmax_candidate: with ``--precision int8`` and no ``--method``, compile with ``meanmax`` too
            and keep the artifact closer to fp32 (``default_methods``).
        priced_in_onnxruntime: the target's runtime is ONNX Runtime's CPU provider, whose float and
            int8 kernel speeds ``qcc.latency`` models: mixed precision chooses by cost there.
    """

    name: str
    description: str
    compute_ops: frozenset[str]
    int8_ops: frozenset[str]
    shared_scale_ops: frozenset[str]
    fused_activations: frozenset[str]
    keep_fused_activation_nodes: bool
    symmetric_activations: bool
    bias_int32: bool
    artifact_suffix: str
    fixed_output_params: Mapping[str, tuple[float, int]] = dataclasses.field(default_factory=dict)
    quantize_all_outputs: bool = True
    output_quantized_ops: frozenset[str] = frozenset()
    shared_group_ops: frozenset[str] = frozenset()
    rule_ops: frozenset[str] = frozenset()
    precisions: frozenset[str] = frozenset({"int8"})
    dynamic: bool = False
    int8_chains_only: bool = False
    meanmax_candidate: bool = False
    priced_in_onnxruntime: bool = False

    @functools.cached_property
    def int8_capable_ops(self) -> frozenset[str]:
        """Every op this target can run int8 in some role (compute, int8, shared-scale, fused activation,
        rule op); any other op has no int8 kernel here. Cached: the spec is frozen."""
        return self.compute_ops | self.int8_ops | self.shared_scale_ops | self.fused_activations | self.rule_ops

    def activation_dtype(self, options: CompileOptions) -> ir.DataType:
        """Returns the type of quantized activations for these options (resolves ``auto``)."""
        if options.precision == Precision.FP8:
            return ir.DataType.FLOAT8E4M3FN
        if options.activation_type == ActivationType.UINT8:
            return ir.DataType.UINT8
        if options.activation_type == ActivationType.INT8:
            return ir.DataType.INT8
        return self.default_activation_dtype()

    def weight_dtype(self, options: CompileOptions) -> ir.DataType:
        """Returns the type of quantized weights for these options."""
        return ir.DataType.FLOAT8E4M3FN if options.precision == Precision.FP8 else ir.DataType.INT8

    def float_after_calibration(
        self, graph: ir.Graph, rows: dict[str, int], ranges: dict[str, tuple[float, float]]
    ) -> dict[str, str]:
        """Target rule that needs data: nodes to keep float given each calibrated tensor's largest
        leading dimension seen (``rows``) and its calibrated ``(low, high)`` range (``ranges``; a
        tensor that shares another's parameters is absent), as node name -> reason. Empty by
        default."""
        return {}

    def default_methods(self, options: CompileOptions) -> tuple[CalibrationMethod, ...]:
        """The calibration methods tried when the user names none (the driver keeps the one closest
        to fp32 on the calibration samples, the first unless another is clearly better): minmax,
        whose ranges never clip. (``auto``, a method per tensor by its measured effect, is not the
        default: on 4 calibration samples its gains are within the rounding noise of the error it
        measures; ``passes/_clip_search.py``.) With ``meanmax_candidate`` and int8, meanmax
        too: one outlier in one calibration sample then stretches the step less (``passes/_clip_range.py``
        measures both on the zoo; graph outputs keep minmax, ``passes/calibrate.py``). fp8's wide
        range, and int4 weight-only compiles, keep minmax."""
        if self.meanmax_candidate and options.precision == Precision.INT8:
            return (CalibrationMethod.MINMAX, CalibrationMethod.MEANMAX)
        return (CalibrationMethod.MINMAX,)

    def min_opset(self, options: CompileOptions) -> int:
        """The default-domain opset the artifact needs for these options (the frontend upgrades to it)."""
        return 13

    def check_options(self, options: CompileOptions) -> None:
        """Raises OptionError for options this target cannot honour."""
        if options.precision.value not in self.precisions:
            raise OptionError(
                f"target {self.name} does not support precision {options.precision.value}.",
                f"use one of {', '.join(sorted(self.precisions))}.",
            )
        if options.dynamic and not self.dynamic:
            raise OptionError(
                f"target {self.name} has no dynamic (run-time) activation quantization.",
                "drop --dynamic, or use --target ort.",
            )
        if options.dynamic and options.precision != Precision.INT8:
            raise OptionError("--dynamic quantizes to int8.", "drop --precision or --dynamic.")
        if not options.needs_calibration:
            mode = "--dynamic" if options.dynamic else "--precision int4"
            if options.method is not None:
                raise OptionError(f"--method has no effect with {mode}: no activation is calibrated.", "drop --method.")
            if options.activation_type != ActivationType.AUTO:
                raise OptionError(
                    f"--activation-type has no effect with {mode}: activations are "
                    + ("quantized to uint8 at run time." if options.dynamic else "float."),
                    "drop --activation-type.",
                )
            if options.dynamic and options.weights == WeightStorage.QDQ:
                raise OptionError("--dynamic stores int8 weights; --weights qdq has no effect.", "drop --weights.")
        self._check_target_only_options(options)

    def _check_target_only_options(self, options: CompileOptions) -> None:
        """An option that acts on other targets only (its metadata's ``targets``) is refused when set:
        this target would ignore it, and a user who sets ``--io int8`` on ``ort`` expects int8 I/O."""
        for field in dataclasses.fields(options):
            info = field.metadata.get("qcc")
            if info is None or not info.targets or self.name in info.targets:
                continue
            if getattr(options, field.name) != field_default(field.name):
                flag = info.cli.flags[0].split("/")[0] if info.cli is not None and info.cli.flags else field.name
                raise OptionError(
                    f"{flag} ({field.name}=) acts on {', '.join(info.targets)} only; "
                    f"target {self.name} would ignore it.",
                    f"drop it, or compile with --target {info.targets[0]}.",
                )

    def default_activation_dtype(self) -> ir.DataType:
        """The activation type ``auto`` resolves to on this host."""
        return ir.DataType.INT8

    def smoothing_mul_runs_float(self, producer: ir.Node | None, options: CompileOptions) -> bool:
        """True if a Mul inserted on ``producer``'s output (None: a graph input) would run float,
        ahead of the quantizer of the MatMul/Gemm reading it: SmoothQuant may then divide the
        tensor's channels there (``passes/smooth_activations.py``). False where the Mul would run
        int8 on the unsmoothed tensor, which gains nothing."""
        return False

    def float_reason(self, node: ir.Node) -> str | None:
        """Target rule: why this otherwise quantizable node should stay float, or None."""
        return None

    def weight_only_reason(self, node: ir.Node) -> str | None:
        """Target rule for ``--precision int4``: why this MatMul/Gemm should stay float, or None."""
        return None

    def decide(self, node: ir.Node) -> tuple[Decision, str] | None:
        """Target rule: a decision for a pending node that the generic rules would not make, or None.

        Called while the plan grows quantized regions, before the generic rules. For ops in
        ``rule_ops`` a FLOAT decision here is final.
        """
        return None
