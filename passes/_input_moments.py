"""The second moment of what each weight multiplies: ``H = sum x x^T`` over the calibration data.

A layer ``y = W x`` (a Conv's patch, a MatMul/Gemm row) moves by ``dW x`` when its weights are
rounded, so the mean squared output error of a rounding is ``tr(dW H dW^T) / rows``: ``H`` is all
that GPTQ (``weight_rounding``) needs to know about the data. It is streamed and mergeable (sums of
outer products and a row count), its size is fixed by the layer (``columns^2`` per group), never
by the number of samples. Calibration (``calibrate``) observes the layers' inputs and folds each
sample in with ``InputMoments.update``.

Which layers: int8 Conv (1-D or 2-D, explicit padding), MatMul with a 2-D constant weight, and
Gemm without ``transA``, whose weight is theirs alone and rounded to an integer grid without blocks.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from qcc.annotations import Decision, Role, get_decision, get_quant
from qcc.irutils import attr_int, const_array
from qcc.optable import WEIGHT_INPUT

MAX_COLUMNS = 4096  # the largest layer input (C/g x kH x kW, or K) kept: H is columns^2 float64
MAX_ROWS_PER_SAMPLE = 2048  # a Conv's output positions sampled per calibration sample
MAX_SAMPLES = 32  # calibration samples folded in; H of the first 32 images is as good as of 500


@dataclasses.dataclass(frozen=True)
class Layer:
    """What a layer's weight multiplies: layers with equal ``Layer`` (Q, K and V reading one
    LayerNorm output) have equal input moments.

    Attributes:
        data: its data input's name (what calibration observes).
        op: ``Conv``, ``MatMul`` or ``Gemm``.
        groups: convolution groups (1 otherwise).
        kernel: the spatial kernel shape (Conv; 2-D, a 1-D conv as ``(1, k)``).
        pads, strides, dilations: the Conv's, 2-D likewise (begin/end pads as in ONNX).
        columns: inputs per group that each output row multiplies.
    """

    data: str
    op: str
    groups: int = 1
    kernel: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    strides: tuple[int, int] = (1, 1)
    dilations: tuple[int, int] = (1, 1)
    columns: int = 0

    def rows(self, array: np.ndarray, seed: int) -> np.ndarray:
        """The inputs each output row multiplies, ``(groups, columns, rows)`` float32, from one
        sample's data input (a Conv's output positions sampled down to ``MAX_ROWS_PER_SAMPLE``)."""
        if self.op != "Conv":
            return array.reshape(-1, self.columns).T[None].astype(np.float32)
        x = array if array.ndim == 4 else array[:, :, None, :]  # 1-D conv: height 1
        if self.kernel == (1, 1) and self.strides == (1, 1) and not any(self.pads):  # pointwise: no patches
            batch, channels = x.shape[:2]
            flat = x.reshape(batch, self.groups, channels // self.groups, -1).transpose(1, 2, 0, 3)
            flat = flat.reshape(self.groups, channels // self.groups, -1)
            if flat.shape[2] > MAX_ROWS_PER_SAMPLE:
                keep = np.sort(np.random.default_rng(seed).choice(flat.shape[2], MAX_ROWS_PER_SAMPLE, replace=False))
                flat = flat[:, :, keep]
            return np.ascontiguousarray(flat, dtype=np.float32)
        top, left, bottom, right = self.pads
        x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
        batch, channels, height, width = x.shape
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        out_h, out_w = (height - dh * (kh - 1) - 1) // sh + 1, (width - dw * (kw - 1) - 1) // sw + 1
        # Every step-th output row and column, from a phase that moves with the sample: plain
        # slices (no gather), and across samples every position is sampled.
        step = -(-batch * out_h * out_w // MAX_ROWS_PER_SAMPLE)
        step_h = min(step, out_h)
        step_w = -(-step // step_h)
        phase_h, phase_w = seed % step_h, (seed // step_h) % step_w
        rows_h, rows_w = len(range(phase_h, out_h, step_h)), len(range(phase_w, out_w, step_w))
        taps = [
            x[:, :, i * dh + phase_h * sh :: sh * step_h, j * dw + phase_w * sw :: sw * step_w][:, :, :rows_h, :rows_w]
            for i in range(kh)
            for j in range(kw)
        ]
        patches = np.stack(taps, axis=2)  # N, C, taps, rows_h, rows_w: the weight's (C/g, kH, kW) order
        if batch > 1:
            patches = patches.transpose(1, 2, 0, 3, 4)
        per_group = channels // self.groups
        return np.ascontiguousarray(patches.reshape(self.groups, per_group * kh * kw, -1), dtype=np.float32)


class InputMoments:
    """Streamed ``sum x x^T`` (per group) and the number of rows it summed, for one layer."""

    def __init__(self, layer: Layer) -> None:
        self.layer = layer
        self.sums = np.zeros((layer.groups, layer.columns, layer.columns), dtype=np.float64)
        self.rows = 0
        self._samples = 0

    def update(self, array: np.ndarray) -> None:
        """Folds one sample of the layer's data input in (the first ``MAX_SAMPLES`` only)."""
        if self._samples >= MAX_SAMPLES:
            return
        rows = self.layer.rows(np.asarray(array), seed=self._samples)
        self.sums += np.matmul(rows, rows.transpose(0, 2, 1))
        self.rows += rows.shape[2]
        self._samples += 1

    def merge(self, other: InputMoments) -> None:
        """Folds moments of the same layer, observed on other samples, into these."""
        self.sums += other.sums
        self.rows += other.rows
        self._samples += other._samples

    def held_bytes(self) -> int:
        """Bytes held, independent of the number of samples observed."""
        return self.sums.nbytes


def layers(graph: ir.Graph) -> dict[str, Layer]:
    """Every layer of the planned graph whose weight rounding can use input moments, by node name."""
    found = {}
    for node in graph:
        layer = _layer(node)
        if layer is not None and layer.columns <= MAX_COLUMNS:
            found[node.name] = layer
    return found


def _layer(node: ir.Node) -> Layer | None:
    if node.op_type not in ("Conv", "MatMul", "Gemm") or len(node.inputs) <= WEIGHT_INPUT:
        return None
    data, weight = node.inputs[0], node.inputs[WEIGHT_INPUT]
    if data is None or weight is None or getattr(get_decision(node), "decision", None) != Decision.INT8:
        return None
    quant, array = get_quant(weight), const_array(weight)
    if quant is None or quant.role != Role.WEIGHT or array is None or quant.block_size is not None:
        return None
    if not quant.dtype.is_integer() or len(weight.uses()) != 1 or weight.is_graph_output():
        return None
    if node.op_type == "MatMul":
        return Layer(data.name, "MatMul", columns=array.shape[0]) if array.ndim == 2 else None
    if node.op_type == "Gemm":
        if attr_int(node, "transA", 0) or array.ndim != 2:
            return None
        return Layer(data.name, "Gemm", columns=array.shape[1 if attr_int(node, "transB", 0) else 0])
    return _conv(node, data, array)


def _conv(node: ir.Node, data: ir.Value, array: np.ndarray) -> Layer | None:
    auto_pad = node.attributes.get("auto_pad")
    if array.ndim not in (3, 4) or (auto_pad is not None and auto_pad.as_string() not in ("", "NOTSET")):
        return None

    def ints(name: str, default: int, per_axis: int = 1) -> list[int]:
        attribute = node.attributes.get(name)
        return list(attribute.as_ints()) if attribute is not None else [default] * per_axis * (array.ndim - 2)

    pads, strides, dilations = ints("pads", 0, 2), ints("strides", 1), ints("dilations", 1)
    if array.ndim == 3:  # 1-D: (begin, end) pads; height 1
        pads = [0, pads[0], 0, pads[1]]
        strides, dilations = [1, *strides], [1, *dilations]
    kernel = tuple(array.shape[2:]) if array.ndim == 4 else (1, array.shape[2])
    groups = attr_int(node, "group", 1)
    return Layer(
        data.name, "Conv", groups=groups, kernel=kernel, pads=tuple(pads), strides=tuple(strides),
        dilations=tuple(dilations), columns=int(np.prod(array.shape[1:])),
    )
