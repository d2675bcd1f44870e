"""magika_filetype: Google's Magika file-type classifier (standard_v3_3), on real installed files.

The model is taken as shipped. Features are the package's own (``Magika._get_result_or_features_from_path``):
up to 4096 bytes from the start (lstripped) and the end (rstripped), first 1024 + last 1024 bytes, padded with
token 256; files the package decides without the model (tiny or empty after stripping) are skipped.

Files: real files of the zoo environment's site-packages, 2 per extension over 35 extensions, 64 B to 50 MB,
drawn with a fixed seed from the sorted candidates and shuffled; the first 16 calibrate, the rest evaluate.
The draw depends on which packages are installed, so the list is stored.

Outputs in ``--out``:
    model.onnx   ``bytes`` int32 [batch, 2048] -> ``target_label`` float32 [batch, 214] (softmax).
    calib.npz    ``bytes`` (16, 1, 2048); eval.npz: ``bytes`` (E, 1, 2048), E <= 54 (extensions with fewer
                 candidates give fewer files).
    files.json   the calibration and evaluation files (relative to site-packages) and the package's labels.
    labels.json  the model's 214 target labels, in output order.
    build-info.json  sources, sha256, versions, fp32 check (argmax of this ONNX = the package's dl label).
"""

from __future__ import annotations

import json
import logging
import sysconfig
from pathlib import Path

import _build
import numpy as np

logger = logging.getLogger("magika_filetype")

MODEL_DIR = "models/standard_v3_3"
SHA256 = {
    "model.onnx": "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c",
    "config.min.json": "ae24c742205358f6ff6dfd5facb6743fb69743dbba8373e73da58ff0cbd695db",
}
EXTENSIONS = (
    "py",
    "so",
    "json",
    "txt",
    "png",
    "jpg",
    "csv",
    "gz",
    "xml",
    "yaml",
    "pyi",
    "html",
    "md",
    "tif",
    "gif",
    "npy",
    "ttf",
    "afm",
    "svg",
    "pdf",
    "cfg",
    "toml",
    "rst",
    "c",
    "h",
    "pyx",
    "pxd",
    "js",
    "css",
    "ini",
    "typed",
    "onnx",
    "zip",
    "dat",
    "npz",
)
PER_EXTENSION = 2
SIZE_RANGE = (64, 50_000_000)
CALIBRATION_FILES = 16
SEED = 0


def candidates(root: Path) -> dict[str, list[Path]]:
    """Returns the files under root in the size range, by extension (sorted, so the draw is reproducible)."""
    by_extension: dict[str, list[Path]] = {ext: [] for ext in EXTENSIONS}
    for path in sorted(root.rglob("*")):
        ext = path.name.rsplit(".", 1)[-1] if "." in path.name else ""
        if ext in by_extension and path.is_file() and not path.is_symlink():
            if SIZE_RANGE[0] <= path.stat().st_size <= SIZE_RANGE[1]:
                by_extension[ext].append(path)
    return by_extension


def main() -> None:
    args = _build.parse_args(__doc__.splitlines()[0])
    from magika import Magika

    digests = {
        name: _build.check_sha256(_build.package_file("magika", f"{MODEL_DIR}/{name}"), sha)
        for name, sha in SHA256.items()
    }
    source = _build.package_file("magika", f"{MODEL_DIR}/model.onnx")
    config = json.loads(_build.package_file("magika", f"{MODEL_DIR}/config.min.json").read_text())
    onnx_model = _build.finalize_onnx(source.read_bytes())
    model_path = args.out / "model.onnx"
    _build.write_onnx(model_path, onnx_model)

    magika = Magika()
    root = Path(sysconfig.get_paths()["purelib"])
    rng = np.random.default_rng(SEED)
    chosen: list[tuple[Path, np.ndarray]] = []
    for paths in candidates(root).values():
        picked = 0
        for index in rng.permutation(len(paths)):
            result, features = magika._get_result_or_features_from_path(paths[index])
            if features is None:  # decided without the model
                continue
            chosen.append((paths[index], np.array(features.beg + features.end, dtype=np.int32)[None]))
            picked += 1
            if picked == PER_EXTENSION:
                break
    order = rng.permutation(len(chosen))
    chosen = [chosen[i] for i in order]
    calib, evaluation = chosen[:CALIBRATION_FILES], chosen[CALIBRATION_FILES:]

    labels = config["target_labels_space"]
    package_labels = [str(r.prediction.dl.label) for r in magika.identify_paths([p for p, _ in evaluation])]
    outputs = _build.ort_run(model_path, [{"bytes": x} for _, x in evaluation])
    ours = [labels[int(out[0][0].argmax())] for out in outputs]
    if ours != package_labels:
        raise _build.RecipeError(f"ONNX argmax labels {ours} differ from the package's {package_labels}.")
    logger.info(
        "%d calibration + %d eval files; fp32 labels = package: %s", len(calib), len(evaluation), ours
    )

    relative = lambda items: [str(p.relative_to(root)) for p, _ in items]  # noqa: E731
    _build.write_npz(args.out / "calib.npz", {"bytes": np.stack([x for _, x in calib])})
    _build.write_npz(args.out / "eval.npz", {"bytes": np.stack([x for _, x in evaluation])})
    _build.write_json(args.out / "labels.json", labels)
    _build.write_json(
        args.out / "files.json",
        {
            "root": "site-packages of models/.venv",
            "calibration": relative(calib),
            "evaluation": relative(evaluation),
            "evaluation_labels": package_labels,
        },
    )
    _build.write_json(
        args.out / "build-info.json",
        {
            "model": "magika_filetype",
            "source": {"package": "magika", "dir": MODEL_DIR, "sha256": digests},
            "versions": _build.versions("onnx", "onnxruntime", "numpy", "magika"),
            "ir_version": onnx_model.ir_version,
            "inputs": {"bytes": ["batch", 2048]},
            "outputs": {"target_label": ["batch", len(labels)]},
            "calibration": {"files": len(calib)},
            "evaluation": {"files": len(evaluation), "distinct_fp32_labels": len(set(ours))},
            "fp32_check": {"argmax_labels_match_package": True},
        },
    )


if __name__ == "__main__":
    main()
