"""The pass pipeline: one explicit, ordered list.

Read it top to bottom: first the float graph is simplified (and, with data, MatMul inputs are
smoothed), then the target-specific plan marks
what is quantized, then parameters are computed in dependency order (weights need nothing,
activations need calibration, biases need both); last, mixed precision measures the result
and may ask for a plan with more nodes float (the annotation passes then run again on the rewritten
model: the rewrites run once per compile); once the float nodes are settled, the int8 layers'
weights are refit to the quantized model's own inputs. With ``verify_each`` the invariant checker runs
after every pass and names the pass that broke an invariant. Each pass runs as a stage of the
compile's cost count (``qcc.runtime.cost_stage``): the sessions and model runs it makes are its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import onnx_ir as ir

from qcc.annotations import pending_replan
from qcc.context import PassContext
from qcc.invariants import check_invariants
from qcc.passes.activation_qparams import ActivationQParamsPass
from qcc.passes.bias_correction import BiasCorrectionPass
from qcc.passes.calibrate import CalibratePass
from qcc.passes.canonicalize import CanonicalizePass
from qcc.passes.equalize import CrossLayerEqualizationPass
from qcc.passes.equalize_residual import ResidualEqualizationPass
from qcc.passes.fold_batchnorm import FoldBatchNormPass
from qcc.passes.fuse_matmul_add import FuseMatMulAddPass
from qcc.passes.mixed_precision import MixedPrecisionPass
from qcc.passes.plan import PlanPass
from qcc.passes.quantize_bias import QuantizeBiasPass
from qcc.passes.quantize_weights import QuantizeWeightsPass
from qcc.passes.refit_weights import RefitWeightsPass
from qcc.passes.smooth_activations import SmoothActivationsPass
from qcc.passes.target_constraints import TargetConstraintsPass
from qcc.passes.weight_rounding import WeightRoundingPass
from qcc.runtime import cost_stage

logger = logging.getLogger(__name__)

# Graph rewrites that keep the model's float function; the plan works on their result.
FLOAT_PASSES = (CanonicalizePass, FoldBatchNormPass, CrossLayerEqualizationPass, FuseMatMulAddPass)
# SmoothQuant and residual-stream equalization: float rewrites too, but they need the calibration
# data that the float passes run without (inspect, plan). No rewrite reads the plan.
DATA_REWRITE_PASSES = (SmoothActivationsPass, ResidualEqualizationPass)
# Passes that decide and compute the quantization of one plan, as annotations: the plan again with
# more nodes float (``annotations.Replan``) runs these again, on the rewritten model.
ANNOTATION_PASSES = (
    PlanPass,
    QuantizeWeightsPass,
    CalibratePass,
    WeightRoundingPass,
    BiasCorrectionPass,
    ActivationQParamsPass,
    TargetConstraintsPass,
    QuantizeBiasPass,
    MixedPrecisionPass,
    RefitWeightsPass,
)
QUANT_PASSES = DATA_REWRITE_PASSES + ANNOTATION_PASSES


def build_passes(ctx: PassContext, *, float_only: bool = False, plan_only: bool = False) -> list[ir.passes.PassBase]:
    """Returns the pipeline's passes, constructed with ``ctx``, in the order they run: the float
    rewrites only, the annotation passes only (``plan_only``), or all."""
    if float_only:
        classes = FLOAT_PASSES
    elif plan_only:
        classes = ANNOTATION_PASSES
    else:
        classes = FLOAT_PASSES + QUANT_PASSES
    return [cls(ctx) for cls in classes]


def run_pipeline(
    model: ir.Model,
    ctx: PassContext,
    *,
    float_only: bool = False,
    plan_only: bool = False,
    rewritten: Callable[[ir.Model], None] | None = None,
) -> dict[str, float]:
    """Runs the pipeline in place on ``model``, up to the end or to the first pass that asks to plan
    again (``annotations.pending_replan``: the driver then plans again from the rewritten model).

    Args:
        float_only: only the float rewrites (``FLOAT_PASSES``).
        plan_only: only the annotation passes, on a model the rewrites already ran on.
        rewritten: called with the model once every rewrite has run, before the plan.

    Returns:
        Seconds spent in each pass, by pass name.

    Raises:
        QccError: a pass found a user-caused problem (e.g. calibration data).
        onnx_ir.passes.InvariantError: with ``verify_each``, a pass broke an invariant (a qcc bug).
    """
    timings: dict[str, float] = {}
    for pass_ in build_passes(ctx, float_only=float_only, plan_only=plan_only):
        if rewritten is not None and isinstance(pass_, ANNOTATION_PASSES[0]):
            rewritten(model)
        start = time.perf_counter()
        with cost_stage(pass_.name):
            pass_(model)
        timings[pass_.name] = time.perf_counter() - start
        logger.debug("pass %s: %.3f s", pass_.name, timings[pass_.name])
        if ctx.options.verify_each:
            check_invariants(model, after=pass_.name)
        if pending_replan(model.graph) is not None:
            logger.debug("pass %s asks to plan again; the pipeline stops here", pass_.name)
            break
    return timings
