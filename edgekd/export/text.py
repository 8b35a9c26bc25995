"""Export the teacher's text tower for on-device labels: ONNX (tokens int64 [B, 77] -> unit embedding [B, D]) plus the
CLIP BPE merges file the pure-Python tokenizer (edgekd.runtime.text.ClipTokenizer) reads, plus text_encoder.json.

    DIR/text_encoder.onnx  DIR/bpe_simple_vocab_16e6.txt.gz  DIR/text_encoder.json

text_encoder.json: format "edgekd.text_encoder", version, precision ("fp32" | "fp16" | "int8"), teacher_id, teacher
(Teacher.describe()), embed_dim, logit_scale, files {model, tokenizer}, sha256 {file: hex}, input {name "tokens",
shape ["batch", 77], dtype int64}, output {name "embedding", shape ["batch", D], dtype float32}, tokenizer {type
"clip_bpe", context_length, vocab_size, sot_id, eot_id, clean "lower"}, opset, parity {tokens_equal, min_cosine,
threshold, texts} (the fp32 tower against open_clip), gate {precision, reference, passed, metrics, floors,
validated_on, ...} (edgekd.export.text_gate), compression (fp16 / int8: how), versions, created.

Precisions (COMPRESSORS; tokens stay int64 and the embedding float32 in each):
  fp32  the tower as exported; its gate is the parity with the torch teacher.
  fp16  MatMul weights and the token table in fp16 (edgekd.export.onnx.convert_fp16): half the file (not the memory
        where onnxruntime has no fp16 MatMul kernel and casts them back at load, as on the x86 CPU measured). The
        residual stream, LayerNorms, softmax and the final normalisation stay float32 (convert_fp16's float boundary
        keeps what the tokens reach without a MatMul), which keeps it within ~1e-6 of fp32.
  int8  MatMul/Gemm weights and the token table in 8 bits, onnxruntime dynamic quantization in 7-bit range
        (edgekd.export.onnx_int8.quantize_weights, where the reason is): a quarter of the file, under half the
        memory, about twice as fast on the CPU measured (benchmarks/results/text_encoder.md).
The directory is written beside `out` and moved in only when the tower passed its gate: a failure leaves `out` as it
was.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgekd import EdgekdError
from edgekd._io import atomic_path, atomic_write_json, sha256_file
from edgekd.export.text_gate import GATE_METRICS, failure_message, fp32_gate, gate_compact
from edgekd.runtime.bundle import TEXT_ENCODER_FILE
from edgekd.runtime.text import BPE_FILE, TEXT_FORMAT, ClipTokenizer, TextEncoder
from edgekd.teacher.clip import Teacher

log = logging.getLogger(__name__)

MODEL_FILE = "text_encoder.onnx"
VERSION = 1
MIN_COSINE = 0.9999  # fp32 parity gate (STYLE.md habit 8)
PRECISIONS = ("fp32", "fp16", "int8")
PARITY_TEXTS = ("a photo of a cat.", "a red car", "A Photo Of A DOG!", "zebra crossing, at night 42",
                "it's a café's menu — 3½ dishes", "")


class TextTower(nn.Module):
    """open_clip text tower with the L2 normalisation inside: tokens int64 [B, L] -> [B, D] unit rows."""

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        self.model = clip_model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)


def _check_tokenizer(teacher: Teacher) -> tuple[Path, int]:
    """Only OpenAI-CLIP BPE tokenizers (open_clip's SimpleTokenizer, 'lower' cleaning) run on device."""
    from open_clip.tokenizer import SimpleTokenizer, default_bpe

    tok = teacher.tokenizer
    if not isinstance(tok, SimpleTokenizer) or getattr(tok, "reduction_fn", None) is not None:
        raise EdgekdError(f"teacher {teacher.spec.name} uses a {type(tok).__name__} tokenizer; on-device text is only "
                          "supported for CLIP BPE (SimpleTokenizer) teachers such as ViT-B-32/ViT-B-16/MobileCLIP")
    if getattr(tok.clean_fn, "__name__", "") != "_clean_lower":
        raise EdgekdError(f"teacher {teacher.spec.name}'s tokenizer cleans text with {tok.clean_fn.__name__}; only "
                          "the default 'lower' cleaning is supported on device")
    return Path(default_bpe()), int(tok.context_length)


def export_text_encoder(teacher: Teacher, out: str | os.PathLike, opset: int = 17,
                        parity_texts: tuple[str, ...] = PARITY_TEXTS, precision: str = "fp32",
                        floors: dict[str, float] | None = None) -> dict[str, Any]:
    """Write the on-device text encoder of `teacher` into `out` in `precision` (PRECISIONS); check tokens and
    embeddings against open_clip, and a compact tower against the fp32 one (floors: entries that override
    edgekd.export.text_gate.FLOORS[precision]).

    Returns the text_encoder.json dict. Raises EdgekdError when the tokenizer is unsupported, parity fails or the
    gate fails; `out` is then left as it was.
    """
    _check_options(precision, floors)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))  # same file system: published by rename
    try:
        meta = _export_fp32(teacher, work, opset, parity_texts)
        if precision != "fp32":
            meta = _compress(work, meta, precision, floors)
        _publish(work, out, meta)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("wrote %s: %s text encoder of %s (min cosine %.6f)", out, precision, teacher.teacher_id,
             meta["parity"]["min_cosine"])
    return meta


def _check_options(precision: str, floors: dict[str, float] | None) -> None:
    if precision not in PRECISIONS:
        raise EdgekdError(f"--precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if floors and precision == "fp32":
        raise EdgekdError("floors apply to --precision fp16 / int8; fp32 is judged by its parity with the teacher")
    unknown = sorted(set(floors or {}) - set(GATE_METRICS))
    if unknown:
        raise EdgekdError(f"floors {', '.join(unknown)}: not a gate metric; use {', '.join(GATE_METRICS)}")


def _export_fp32(teacher: Teacher, out: Path, opset: int, parity_texts: tuple[str, ...]) -> dict[str, Any]:
    """The fp32 tower, tokenizer and text_encoder.json in `out`, checked against open_clip."""
    from edgekd._optional import require

    onnx = require("onnx", purpose="text encoder export")
    bpe_src, ctx = _check_tokenizer(teacher)
    model = TextTower(teacher.model).eval().cpu()
    example = teacher.tokenizer(["a photo of a cat."]).cpu()
    import warnings

    with atomic_path(out / MODEL_FILE) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings / exporter deprecation notices
        try:
            torch.onnx.export(model, (example,), str(tmp), input_names=["tokens"], output_names=["embedding"],
                              dynamic_axes={"tokens": {0: "batch"}, "embedding": {0: "batch"}}, opset_version=opset,
                              do_constant_folding=True, dynamo=False)
        except Exception as e:  # the exporter raises many unrelated types
            raise EdgekdError(f"ONNX export of the {teacher.spec.name} text tower failed: "
                              f"{str(e).splitlines()[0][:300]}") from e
        onnx.checker.check_model(onnx.load(str(tmp)), full_check=True)
    with atomic_path(out / BPE_FILE) as tmp:
        shutil.copyfile(bpe_src, tmp)
    tokenizer = ClipTokenizer(out / BPE_FILE, ctx)
    meta: dict[str, Any] = {
        "format": TEXT_FORMAT, "version": VERSION, "precision": "fp32", "teacher_id": teacher.teacher_id,
        "teacher": teacher.describe(),
        "embed_dim": teacher.embed_dim, "logit_scale": teacher.logit_scale,
        "files": {"model": MODEL_FILE, "tokenizer": BPE_FILE},
        "input": {"name": "tokens", "shape": ["batch", ctx], "dtype": "int64"},
        "output": {"name": "embedding", "shape": ["batch", teacher.embed_dim], "dtype": "float32"},
        "tokenizer": {"type": "clip_bpe", "context_length": ctx, "vocab_size": tokenizer.vocab_size,
                      "sot_id": tokenizer.sot_token_id, "eot_id": tokenizer.eot_token_id, "clean": "lower"},
        "opset": opset, "versions": _versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
    }
    meta["sha256"] = {name: sha256_file(out / name) for name in meta["files"].values()}
    meta["parity"] = _parity(teacher, tokenizer, out, meta, [t for t in parity_texts if t] or ["a photo"])
    meta["gate"] = fp32_gate(meta["parity"])
    atomic_write_json(out / TEXT_ENCODER_FILE, meta)
    return meta


def _to_fp16(src: Path, dst: Path) -> dict[str, Any]:
    """fp16 weights, float32 boundary (convert_fp16), checked with onnx's full checker."""
    from edgekd._optional import require
    from edgekd.export.onnx import convert_fp16

    info = convert_fp16(src, dst)
    require("onnx", purpose="text encoder export").checker.check_model(str(dst), full_check=True)
    return {"method": f"{info['converter']} convert_float_to_float16, keep_io_types", "fp32_nodes":
            len(info["fp32_nodes"]), "fp16_initializers": info["fp16_initializers"]}


def _to_int8(src: Path, dst: Path) -> dict[str, Any]:
    """8-bit MatMul/Gemm weights and token table (quantize_weights: dynamic, per channel, 7-bit range)."""
    from edgekd.export.onnx_int8 import quantize_weights

    return quantize_weights(src, dst, op_types=("MatMul", "Gemm", "Gather"))


COMPRESSORS = {"fp16": _to_fp16, "int8": _to_int8}  # precision -> (fp32 ONNX, out ONNX) -> "compression" metadata


def _compress(work: Path, meta: dict[str, Any], precision: str, floors: dict[str, float] | None) -> dict[str, Any]:
    """Replace the fp32 tower in `work` by its `precision` one, gated against it; EdgekdError when the gate fails."""
    fp32 = work / "text_encoder.fp32.onnx"
    os.replace(work / MODEL_FILE, fp32)
    compression = COMPRESSORS[precision](fp32, work / MODEL_FILE)
    tokenizer = ClipTokenizer(work / BPE_FILE, meta["tokenizer"]["context_length"])
    gate = gate_compact(fp32, work / MODEL_FILE, tokenizer, meta, precision, floors)
    fp32.unlink()
    if not gate["passed"]:
        raise EdgekdError(failure_message(gate))
    meta = {**meta, "precision": precision, "compression": compression, "gate": gate}
    meta["sha256"] = {name: sha256_file(work / name) for name in meta["files"].values()}
    atomic_write_json(work / TEXT_ENCODER_FILE, meta)
    return meta


def _publish(work: Path, out: Path, meta: dict[str, Any]) -> None:
    """Move the finished files from `work` into `out`, text_encoder.json last (readers never see it point at a file
    that is not there yet)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in [*meta["files"].values(), TEXT_ENCODER_FILE]:
        os.replace(work / name, out / name)


def _parity(teacher: Teacher, tokenizer: ClipTokenizer, out: Path, meta: dict[str, Any],
            texts: list[str]) -> dict[str, Any]:
    """Same token ids as open_clip, and ONNX embeddings within MIN_COSINE of the torch teacher's."""
    ref_tokens = teacher.tokenizer(texts).cpu().numpy()
    ours = tokenizer(texts)
    if not np.array_equal(ref_tokens, ours):
        bad = [t for t, a, b in zip(texts, ref_tokens, ours) if not np.array_equal(a, b)]
        raise EdgekdError(f"on-device tokenizer disagrees with open_clip's on {bad[:3]}; please report this")
    atomic_write_json(out / TEXT_ENCODER_FILE, {**meta, "parity": None})  # loadable for the check below
    enc = TextEncoder.load(out)
    got = enc.encode(texts)
    ref = teacher.encode_texts(texts).numpy()
    cos = float(np.min(np.sum(got * ref, axis=1)))
    if cos < MIN_COSINE:
        raise EdgekdError(f"text encoder parity failed: min cosine {cos:.6f} < {MIN_COSINE} against the torch teacher")
    return {"tokens_equal": True, "min_cosine": cos, "threshold": MIN_COSINE, "texts": len(texts)}


def _versions() -> dict[str, str | None]:
    import importlib.metadata as md

    out: dict[str, str | None] = {}
    for pkg in ("torch", "open_clip_torch", "onnx", "onnxruntime"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out
