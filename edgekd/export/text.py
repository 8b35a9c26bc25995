"""Export the teacher's text tower for on-device labels: ONNX (tokens int64 [B, 77] -> unit embedding [B, D]) plus the
CLIP BPE merges file the pure-Python tokenizer (edgekd.runtime.text.ClipTokenizer) reads, plus text_encoder.json.

    DIR/text_encoder.onnx  DIR/bpe_simple_vocab_16e6.txt.gz  DIR/text_encoder.json

text_encoder.json: format "edgekd.text_encoder", version, precision ("fp32" | "int8"), teacher_id, teacher
(Teacher.describe()), embed_dim, logit_scale, files {model, tokenizer}, sha256 {file: hex}, input {name "tokens",
shape ["batch", 77], dtype int64}, output {name "embedding", shape ["batch", D]}, tokenizer {type "clip_bpe",
context_length, vocab_size, sot_id, eot_id, clean "lower"}, opset, parity {tokens_equal, min_cosine, texts} (the
fp32 tower against open_clip), gate (int8: the compact tower against the fp32 one, see text_gate), versions, created.

`--precision int8` quantizes the weights of the MatMul/Gemm layers and the token embedding table (Gather) to 8 bits
with onnxruntime's dynamic quantization: a quarter of the size (ViT-B-32: 254 -> 65 MB) and of the memory. The
directory is written beside `out` and moved in only when the tower passed: a failed gate leaves `out` as it was.
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
from edgekd.export.parity import INT8_TIE_MARGIN, boundary_agreement
from edgekd.runtime.bundle import TEXT_ENCODER_FILE
from edgekd.runtime.text import BPE_FILE, TEXT_FORMAT, ClipTokenizer, TextEncoder
from edgekd.teacher.clip import Teacher

log = logging.getLogger(__name__)

MODEL_FILE = "text_encoder.onnx"
VERSION = 1
MIN_COSINE = 0.9999  # fp32 parity gate (STYLE.md habit 8)
PRECISIONS = ("fp32", "int8")
# int8 gate floors, against the fp32 tower over GATE_CLASSES x the 80 OpenAI templates. Measured with random weights
# (classes within cosine 0.986 of each other: harder than a trained tower): ViT-B-32 prompt cosine p1 0.9978, label
# cosine min 0.9986, top-1 agreement 99.8% (strict 98.0%); the tests' 32-d tower 0.9968 / 0.9984 / 97.1%.
INT8_FLOORS = {"prompt_cosine_p01": 0.99, "label_cosine_min": 0.995, "top1_agreement": 0.95}
GATE_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck", "person",
                "bicycle", "bus", "traffic light", "forklift", "pallet", "cardboard box", "a person wearing a hard hat",
                "a damaged parcel", "smoke", "an open door", "it's a café's menu — 3½ dishes", "zebra crossing, at "
                "night 42", "UPPER-case LABEL")
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
    """Write the on-device text encoder of `teacher` into `out`; check tokens and embeddings against open_clip, and
    (int8) the compact tower against the fp32 one (floors: INT8_FLOORS unless given).

    Returns the text_encoder.json dict. Raises EdgekdError when the tokenizer is unsupported, parity fails or the
    int8 gate fails; `out` is then left as it was.
    """
    if precision not in PRECISIONS:
        raise EdgekdError(f"--precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))  # same file system: published by rename
    try:
        meta = _export_fp32(teacher, work, opset, parity_texts)
        if precision == "int8":
            meta = _quantize_int8(work, meta, {**INT8_FLOORS, **(floors or {})})
        _publish(work, out, meta)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("wrote %s: %s text encoder of %s (min cosine %.6f)", out, precision, teacher.teacher_id,
             meta["parity"]["min_cosine"])
    return meta


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
    atomic_write_json(out / TEXT_ENCODER_FILE, meta)
    return meta


def _quantize_int8(work: Path, meta: dict[str, Any], floors: dict[str, float]) -> dict[str, Any]:
    """Replace the fp32 tower in `work` by its int8 one, gated against it; EdgekdError when the gate fails."""
    from edgekd._optional import require
    from edgekd.cpu import cpu_facts, describe
    from edgekd.runtime.backends import create_backend
    from edgekd.runtime.batching import run_batched
    from edgekd.teacher.prompts import builtin_templates

    onnx = require("onnx", purpose="text encoder export")
    q = require("onnxruntime.quantization", extra="onnx", purpose="int8 text encoder")
    fp32 = work / "text_encoder.fp32.onnx"
    os.replace(work / MODEL_FILE, fp32)
    with atomic_path(work / MODEL_FILE) as tmp:
        # Weights only, per channel, in 7 bits (reduce_range): u8 x s7 products summed in pairs cannot saturate the
        # 16-bit intermediate of AVX2 / AVX-512 kernels without VNNI (vpmaddubsw), so every x86 CPU computes the
        # same integers and the verdict below holds beyond this one.
        q.quantize_dynamic(str(fp32), str(tmp), weight_type=q.QuantType.QInt8, per_channel=True,
                           reduce_range=True, op_types_to_quantize=["MatMul", "Gemm", "Gather"])
        onnx.checker.check_model(str(tmp), full_check=True)
    templates = builtin_templates()["default"]
    tokens = ClipTokenizer(work / BPE_FILE, meta["tokenizer"]["context_length"])(
        [t.format(c) for c in GATE_CLASSES for t in templates])

    def embed(path: Path) -> np.ndarray:
        out = next(iter(run_batched(create_backend(path, "onnxruntime"), tokens, batch_size=64).values()))
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    gate = text_gate(embed(fp32), embed(work / MODEL_FILE), len(GATE_CLASSES), floors)
    gate.update({"precision": "int8", "classes": len(GATE_CLASSES), "templates": len(templates),
                 "method": "onnxruntime quantize_dynamic: MatMul/Gemm/Gather weights int8 per channel, reduce_range",
                 "cpu": describe(cpu_facts())})
    fp32.unlink()
    if not gate["passed"]:
        failed = ", ".join(f"{k} {gate['metrics'][k]:.5f} < {v}" for k, v in floors.items()
                           if gate["metrics"][k] < v)
        raise EdgekdError(f"int8 text encoder gate failed against the fp32 tower ({failed}); export it with "
                          "--precision fp32")
    meta = {**meta, "precision": "int8", "gate": gate}
    meta["sha256"] = {name: sha256_file(work / name) for name in meta["files"].values()}
    atomic_write_json(work / TEXT_ENCODER_FILE, meta)
    return meta


def text_gate(ref: np.ndarray, got: np.ndarray, n_classes: int, floors: dict[str, float]) -> dict[str, Any]:
    """Compact tower vs fp32 over prompts ordered class-major ([n_classes * n_templates, D] unit rows each).

    prompt_cosine_*: each prompt's embedding against the fp32 one; label_cosine_*: each class's label embedding (the
    normalised template mean, as build_label_pack makes it); top1_agreement: with every fp32 prompt embedding as a
    query (text queries stand in for images, which share the space), the best class under the compact labels equals
    the best under the fp32 ones, near-ties forgiven as the image gate forgives them (edgekd.export.parity,
    INT8_TIE_MARGIN; the strict rate is reported too). passed: every floored metric at or above its floor."""
    cos = np.sum(ref * got, axis=1)

    def labels(e: np.ndarray) -> np.ndarray:
        m = e.reshape(n_classes, -1, e.shape[1]).mean(axis=1)
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    lr, lg = labels(ref), labels(got)
    label_cos = np.sum(lr * lg, axis=1)
    agrees, boundary = boundary_agreement(ref @ lr.T, np.argmax(ref @ lg.T, axis=1), lr, INT8_TIE_MARGIN)
    metrics = {"prompts": int(len(cos)), "prompt_cosine_mean": float(cos.mean()),
               "prompt_cosine_p01": float(np.percentile(cos, 1)), "prompt_cosine_min": float(cos.min()),
               "label_cosine_mean": float(label_cos.mean()), "label_cosine_min": float(label_cos.min()),
               "top1_agreement": float(agrees.mean()), "top1_agreement_strict": float(np.mean(np.isinf(boundary))),
               "tie_margin": INT8_TIE_MARGIN}
    return {"passed": all(metrics[k] >= v for k, v in floors.items()), "metrics": metrics, "floors": dict(floors)}


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
