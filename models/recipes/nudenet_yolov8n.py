"""nudenet_yolov8n: the YOLOv8n detector ``nudenet/320n.onnx`` (18 classes), with feeds from its pipeline.

The model is taken as shipped (IR version capped at 10 if needed). Feeds are recorded from the package's own
pre-processing, ``nudenet.nudenet._read_image`` (BGR from ``cv2.imread``, black padding bottom/right to a
square, ``cv2.dnn.blobFromImage`` 1/255, 320 x 320, swapRB), so they are exactly what ``NudeDetector.detect``
runs.

Outputs in ``--out``:
    model.onnx   ``images`` float32 [batch, 3, height, width] -> ``output0`` [batch, 22, N] (4 box + 18
                 scores).
    calib.npz    ``images`` (16, 1, 3, 320, 320): the 16 calibration photos of mobilenet_v2_imagenet.
    eval.npz     ``images`` (66, 1, 3, 320, 320): the 8 eval photos, their horizontal flips and their centre
                 squares (6 fp32 boxes), then 42 mosaics of the 100 faces of scikit-image's ``lfw_subset.npy``
                 (25 x 25 grey, cubic-upscaled) tiled 2 x 2, 3 x 3 and 4 x 4 into 320-px squares (110 boxes).
                 Ordinary photos hold few of the detector's classes; on the photos alone the box F1 moved
                 0.1-0.3 with one box, which hid a real gap on small faces.
    build-info.json  sources, sha256, versions, sample list, fp32 checks (package detections per eval image,
                     and that evaluate.py's decoder finds as many boxes).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import _build
import _images
import cv2
import numpy as np

logger = logging.getLogger("nudenet_yolov8n")

MODEL = ("nudenet", "320n.onnx")
MODEL_SHA256 = "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f"


MOSAIC_GRIDS = (2, 3, 4)  # faces per side: 160, 106 and 80 px faces in a 320-px square


def face_mosaics() -> tuple[list[np.ndarray], list[str]]:
    """Returns the LFW face mosaics (BGR uint8) and labels: for each grid, consecutive faces of the 100."""
    faces = np.load(_build.package_file("skimage", "data/lfw_subset.npy"))[:100]  # the rest are non-faces
    images, labels = [], []
    for grid in MOSAIC_GRIDS:
        tile, count = 320 // grid, grid * grid
        for start in range(0, len(faces) - count + 1, count):
            tiles = [
                cv2.resize((face * 255).round().astype(np.uint8), (tile, tile), interpolation=cv2.INTER_CUBIC)
                for face in faces[start : start + count]
            ]
            rows = [np.hstack(tiles[r * grid : (r + 1) * grid]) for r in range(grid)]
            images.append(cv2.cvtColor(np.vstack(rows), cv2.COLOR_GRAY2BGR))
            labels.append(f"lfw_faces_{start}-{start + count - 1}:{grid}x{grid}")
    return images, labels


def eval_images() -> tuple[list[np.ndarray], list[str]]:
    """Returns the 66 eval images (BGR uint8) and labels: originals, horizontal flips, centre squares, then
    the face mosaics."""
    images, labels = [], []
    for variant in ("full", "flip", "centre"):
        for name in _images.EVALUATION_PHOTOS:
            image = cv2.imread(str(_images.photo_path(name)), cv2.IMREAD_COLOR)
            if variant == "flip":
                image = np.ascontiguousarray(image[:, ::-1])
            elif variant == "centre":
                height, width = image.shape[:2]
                side = min(height, width)
                top, left = (height - side) // 2, (width - side) // 2
                image = np.ascontiguousarray(image[top : top + side, left : left + side])
            images.append(image)
            labels.append(f"{name}:{variant}")
    mosaics, mosaic_labels = face_mosaics()
    return images + mosaics, labels + mosaic_labels


def main() -> None:
    args = _build.parse_args(__doc__.splitlines()[0])
    from nudenet import nudenet as package

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import evaluate  # the zoo metric's own decoder, checked against the package's post-processing

    source = _build.package_file(*MODEL)
    digest = _build.check_sha256(source, MODEL_SHA256)
    onnx_model = _build.finalize_onnx(source.read_bytes())
    model_path = args.out / "model.onnx"
    _build.write_onnx(model_path, onnx_model)

    calib_images = [
        cv2.imread(str(_images.photo_path(n)), cv2.IMREAD_COLOR) for n in _images.CALIBRATION_PHOTOS
    ]
    calib = np.stack([package._read_image(image)[0] for image in calib_images])
    images, eval_labels = eval_images()
    evaluation = np.stack([package._read_image(image)[0] for image in images])

    detector = package.NudeDetector(model_path=str(model_path))
    package_counts = [len(detector.detect(image)) for image in images]
    outputs = _build.ort_run(model_path, [{"images": x} for x in evaluation])
    decoded_counts = [len(evaluate.yolov8_boxes(out[0][0])[0]) for out in outputs]
    if decoded_counts != package_counts:
        raise _build.RecipeError(
            f"evaluate.yolov8_boxes finds {decoded_counts} boxes, the package {package_counts}."
        )
    logger.info("fp32 boxes per eval image (package pipeline = evaluate.py decoder): %s", package_counts)

    _build.write_npz(args.out / "calib.npz", {"images": calib})
    _build.write_npz(args.out / "eval.npz", {"images": evaluation})
    _build.write_json(
        args.out / "build-info.json",
        {
            "model": "nudenet_yolov8n",
            "source": {"package": MODEL[0], "file": MODEL[1], "sha256": digest},
            "versions": _build.versions("onnx", "onnxruntime", "numpy", "opencv-python-headless", "nudenet"),
            "ir_version": onnx_model.ir_version,
            "inputs": {"images": ["batch", 3, "height", "width"]},
            "outputs": {"output0": ["batch", 22, "N"]},
            "calibration": {
                "shape": list(calib.shape),
                "samples": [f"{n}:full" for n in _images.CALIBRATION_PHOTOS],
            },
            "evaluation": {"shape": list(evaluation.shape), "samples": eval_labels},
            "fp32_check": {"boxes_per_eval_image": package_counts, "total_boxes": sum(package_counts)},
        },
    )


if __name__ == "__main__":
    main()
