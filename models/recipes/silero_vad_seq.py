"""silero_vad_seq: Silero VAD's batched "sequence" ONNX model, on pyannote.audio's two-speaker sample.

The model ``silero_vad/data/silero_vad_16k_sequence.onnx`` is taken as shipped. Feeds are built with the
package's own ``silero_vad.sequence_vad.frame_blocks`` (512-sample frames, each prefixed with the previous
frame's last 64 samples, zeros first; last frame zero-padded), with the LSTM state ``h``, ``c`` starting at
zero. Audio: pyannote.audio's ``sample/sample.wav`` (30 s, 16 kHz mono, int16 -> float32 / 32768);
``sample.rttm`` gives the speech turns.

Outputs in ``--out``:
    model.onnx   ``input`` float32 [T, 576], ``h``, ``c`` [1, 1, 128] -> ``speech_probs`` [T], ``hn``, ``cn``.
    calib.npz    16 feeds of 62 frames: 12 two-second segments evenly spread over 0-15 s, then white noise,
                 brown-like noise, 50 Hz hum and near-silence (seed 0). Keys: input names, sample axis first.
    eval.npz     one 469-frame feed: 15-30 s.
    reference.npz   ``speech`` bool [469]: RTTM ground truth at each eval frame's centre (evaluate.py reports
                    accuracy against it for fp32 and int8).
    build-info.json  sources, sha256, versions, fp32 check (outputs equal the package's SileroVADSequence).
"""

from __future__ import annotations

import logging
import wave

import _build
import numpy as np

logger = logging.getLogger("silero_vad_seq")

MODEL = ("silero_vad", "data/silero_vad_16k_sequence.onnx")
MODEL_SHA256 = "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85"
AUDIO = {  # pyannote.audio's sample files
    "sample/sample.wav": "c319b4abca767b124e41432d364fd7df006cb26bb79d09326c487d606a134e6e",
    "sample/sample.rttm": "d78fe62c69d8e6dcbb42c26adfce83faccb374c5a1e6d987fe37f85f1c173c87",
}
RATE, FRAME, CONTEXT = 16000, 512, 64
CALIBRATION_FRAMES = 62
CALIBRATION_SPAN = (0.0, 15.0)
EVALUATION_SPAN = (15.0, 30.0)


def read_wav(path) -> np.ndarray:
    """Returns a 16 kHz mono int16 WAV as float32 in [-1, 1)."""
    with wave.open(str(path)) as wav:
        if (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) != (1, 2, RATE):
            raise _build.RecipeError(f"{path}: expected 16 kHz mono int16.")
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float32) / 32768.0


def read_rttm(path) -> list[tuple[float, float]]:
    """Returns the (start, end) seconds of every speech turn of an RTTM file."""
    turns = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "SPEAKER":
            start, duration = float(fields[3]), float(fields[4])
            turns.append((start, start + duration))
    return turns


def noise_segments(rng: np.random.Generator, samples: int) -> list[tuple[str, np.ndarray]]:
    """Returns white noise, brown-like (integrated, normalised) noise, 50 Hz hum and near-silence."""
    white = rng.normal(0, 0.05, samples)
    brown = np.cumsum(rng.normal(0, 1, samples))
    brown = 0.1 * (brown - brown.mean()) / np.abs(brown - brown.mean()).max()
    t = np.arange(samples) / RATE
    hum = (
        0.05 * np.sin(2 * np.pi * 50 * t) + 0.01 * np.sin(2 * np.pi * 150 * t) + rng.normal(0, 0.002, samples)
    )
    silence = rng.normal(0, 1e-4, samples)
    return [
        (n, a.astype(np.float32))
        for n, a in (("white", white), ("brown", brown), ("hum50", hum), ("near_silence", silence))
    ]


def feed(audio: np.ndarray) -> dict[str, np.ndarray]:
    """Returns the one-call feed of an audio span (at most 512 frames) with zero LSTM state."""
    from silero_vad.sequence_vad import frame_blocks

    (block,) = list(frame_blocks(audio, FRAME, CONTEXT, max_frames=512))
    zeros = np.zeros((1, 1, 128), np.float32)
    return {"input": block, "h": zeros, "c": zeros.copy()}


def main() -> None:
    args = _build.parse_args(__doc__.splitlines()[0])
    from silero_vad.sequence_vad import SileroVADSequence

    source = _build.package_file(*MODEL)
    digest = _build.check_sha256(source, MODEL_SHA256)
    paths = {rel: _build.package_file("pyannote.audio", rel) for rel in AUDIO}
    digests = {rel: _build.check_sha256(paths[rel], sha) for rel, sha in AUDIO.items()}
    onnx_model = _build.finalize_onnx(source.read_bytes())
    model_path = args.out / "model.onnx"
    _build.write_onnx(model_path, onnx_model)

    audio = read_wav(paths["sample/sample.wav"])
    segment = CALIBRATION_FRAMES * FRAME
    first, last = (int(s * RATE) for s in CALIBRATION_SPAN)
    starts = np.linspace(first, last - segment, 12).round().astype(int)
    calib_audio = [(f"speech@{s / RATE:.2f}s", audio[s : s + segment]) for s in starts]
    calib_audio += noise_segments(np.random.default_rng(0), segment)
    calib = [feed(a) for _, a in calib_audio]

    eval_start, eval_stop = (int(s * RATE) for s in EVALUATION_SPAN)
    evaluation = feed(audio[eval_start:eval_stop])
    frames = len(evaluation["input"])
    centres = EVALUATION_SPAN[0] + (np.arange(frames) * FRAME + FRAME / 2) / RATE
    turns = read_rttm(paths["sample/sample.rttm"])
    speech = np.array([any(a <= t < b for a, b in turns) for t in centres])

    package_probs = SileroVADSequence(str(model_path)).audio_forward(audio[eval_start:eval_stop])
    (outputs,) = _build.ort_run(model_path, [evaluation])
    max_diff = _build.compare("speech_probs", package_probs, outputs[0], atol=1e-5)
    accuracy = float(np.mean((outputs[0] > 0.5) == speech))
    logger.info(
        "fp32 ONNX = package (max |diff| %.2e); %d eval frames, fp32 accuracy vs RTTM %.3f",
        max_diff,
        frames,
        accuracy,
    )

    _build.write_npz(args.out / "calib.npz", _build.stacked_feeds(calib))
    _build.write_npz(args.out / "eval.npz", _build.stacked_feeds([evaluation]))
    _build.write_npz(args.out / "reference.npz", {"speech": speech})
    _build.write_json(
        args.out / "build-info.json",
        {
            "model": "silero_vad_seq",
            "source": {
                "package": MODEL[0],
                "file": MODEL[1],
                "sha256": digest,
                "audio": {"package": "pyannote.audio", "sha256": digests},
            },
            "versions": _build.versions("onnx", "onnxruntime", "numpy", "silero-vad", "pyannote.audio"),
            "ir_version": onnx_model.ir_version,
            "inputs": {"input": ["T", 576], "h": [1, 1, 128], "c": [1, 1, 128]},
            "outputs": {"speech_probs": ["T"], "hn": [1, 1, 128], "cn": [1, 1, 128]},
            "calibration": {"frames": CALIBRATION_FRAMES, "samples": [name for name, _ in calib_audio]},
            "evaluation": {
                "span_s": list(EVALUATION_SPAN),
                "frames": frames,
                "speech_frames": int(speech.sum()),
            },
            "fp32_check": {"max_abs_diff_vs_package": max_diff, "fp32_accuracy_vs_rttm": accuracy},
        },
    )


if __name__ == "__main__":
    main()
