"""On-device text encoder: CLIP's byte-level BPE tokenizer in pure Python + the teacher's text tower in ONNX.

Written by `edgekd export-text`; lets an app embed new label strings without torch or open_clip:

    enc = TextEncoder.load("text/")
    pack = enc.build_label_pack(["a red car", "a bicycle"])     # LabelPack, embeddings [C, D]

The tokenizer re-implements open_clip's SimpleTokenizer (OpenAI CLIP's BPE, `clean="lower"`) exactly, without the
`regex` package: the pre-tokenizer pattern `'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+` is a
small scanner over Unicode categories. ftfy (open_clip's text fixer) is used when installed; without it, text is
NFC-normalised, which is what ftfy does to text that has no mojibake.
"""

from __future__ import annotations

import gzip
import html
import json
import logging
import os
import threading
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from edgekd import EdgekdError
from edgekd.labelpack import LabelPack
from edgekd.runtime.bundle import TEXT_ENCODER_FILE, CorruptBundleError, gate_status, refuse_ungated, verify_files

log = logging.getLogger(__name__)

TEXT_FORMAT = "edgekd.text_encoder"
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
CONTEXT_LENGTH = 77
DEFAULT_TEMPLATES = ("a photo of a {}.",)
_SPECIAL = ("<start_of_text>", "<end_of_text>")
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")


@lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible byte -> printable unicode character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def _is_letter(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "L"


def _is_number(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "N"


def pretokenize(text: str, special: Sequence[str] = _SPECIAL) -> list[str]:
    """findall of CLIP's pattern (alternatives tried in order at each position, whitespace skipped)."""
    out: list[str] = []
    i, n = 0, len(text)
    low = text.lower()
    while i < n:
        ch = text[i]
        tok = next((s for s in special if text.startswith(s, i)), None)
        if tok is None and ch == "'":
            tok = next((c for c in _CONTRACTIONS if low.startswith(c, i)), None)
            tok = text[i:i + len(tok)] if tok else None
        if tok is not None:
            out.append(tok)
            i += len(tok)
        elif _is_letter(ch):
            j = i + 1
            while j < n and _is_letter(text[j]):
                j += 1
            out.append(text[i:j])
            i = j
        elif _is_number(ch):
            out.append(ch)
            i += 1
        elif ch.isspace():
            i += 1
        else:
            j = i + 1
            while j < n and not (text[j].isspace() or _is_letter(text[j]) or _is_number(text[j])):
                j += 1
            out.append(text[i:j])
            i = j
    return out


def _fix_text(text: str) -> str:
    try:
        import ftfy
    except ImportError:
        return unicodedata.normalize("NFC", text)
    return ftfy.fix_text(text)


def clean_text(text: str) -> str:
    """open_clip's 'lower' cleaning: fix text, unescape HTML twice, collapse whitespace, lower-case."""
    text = html.unescape(html.unescape(_fix_text(text))).strip()
    return " ".join(text.split()).strip().lower()


class ClipTokenizer:
    """open_clip's SimpleTokenizer without torch: text -> int64 [N, context_length] token ids (SOT ... EOT, 0-padded,
    truncated with EOT last)."""

    def __init__(self, bpe_path: str | os.PathLike, context_length: int = CONTEXT_LENGTH):
        bpe_path = Path(bpe_path)
        try:
            lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
        except (OSError, EOFError, UnicodeDecodeError) as e:
            raise EdgekdError(f"{bpe_path}: unreadable BPE merges file ({e}); re-run `edgekd export-text`") from e
        merges = [tuple(m.split()) for m in lines[1: 49152 - 256 - 2 + 1]]
        if len(merges) < 1000 or any(len(m) != 2 for m in merges):
            raise EdgekdError(f"{bpe_path}: not a CLIP BPE merges file")
        vocab = list(bytes_to_unicode().values())
        vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + list(_SPECIAL)
        self.encoder = {t: i for i, t in enumerate(vocab)}
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.sot_token_id, self.eot_token_id = self.encoder[_SPECIAL[0]], self.encoder[_SPECIAL[1]]
        self.vocab_size = len(self.encoder)
        self.context_length = int(context_length)
        self._cache: dict[str, list[str]] = {t: [t] for t in _SPECIAL}
        self._lock = threading.Lock()

    def bpe(self, token: str) -> list[str]:
        """One pre-token (already byte-encoded) -> its BPE symbols (open_clip's greedy lowest-rank merge)."""
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            pairs = {(word[k], word[k + 1]) for k in range(len(word) - 1)}
            bigram = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new: list[str] = []
            i = 0
            while i < len(word):
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new.append(first + second)
                    i += 2
                else:
                    new.append(word[i])
                    i += 1
            word = tuple(new)
        with self._lock:
            self._cache[token] = list(word)
        return list(word)

    def encode(self, text: str) -> list[int]:
        """Text -> BPE token ids without SOT/EOT."""
        if not isinstance(text, str):
            raise ValueError(f"expected a string, got {type(text).__name__}")
        ids: list[int] = []
        for tok in pretokenize(clean_text(text)):
            if tok in _SPECIAL:
                ids.append(self.encoder[tok])
                continue
            tok = "".join(self.byte_encoder[b] for b in tok.encode("utf-8"))
            ids.extend(self.encoder[s] for s in self.bpe(tok))
        return ids

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        """str or N strings -> int64 [N, context_length]."""
        if isinstance(texts, str):
            texts = [texts]
        out = np.zeros((len(texts), self.context_length), np.int64)
        for r, text in enumerate(texts):
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.eot_token_id
            out[r, : len(ids)] = ids
        return out


class TextEncoder:
    """Tokenizer + ONNX text tower (tokens int64 [B, 77] -> unit embedding [B, D]) from an `edgekd export-text` dir."""

    def __init__(self, root: Path, meta: dict[str, Any], tokenizer: ClipTokenizer, backend: Any):
        self.root, self.meta, self.tokenizer, self.backend = root, meta, tokenizer, backend
        self.precision = str(meta.get("precision") or "fp32")  # text encoders before --precision were fp32
        self.embed_dim = int(meta["embed_dim"])
        self.logit_scale = float(meta.get("logit_scale") or 100.0)
        self.teacher_id = str(meta.get("teacher_id") or "")

    @classmethod
    def load(cls, path: str | os.PathLike, backend: str = "auto", threads: int | None = None,
             device: str | None = None, verify: bool = True, allow_ungated: bool = False) -> TextEncoder:
        """Read an `edgekd export-text` directory. A text encoder whose gate against the fp32 tower failed (or an
        fp16/int8 one without a verdict) is refused with UngatedBundleError unless `allow_ungated`; fp32 ones written
        before the gate existed carry none and load as before."""
        from edgekd.runtime.backends import create_backend

        root = Path(path)
        root = root.parent if root.name == TEXT_ENCODER_FILE else root
        meta_path = root / TEXT_ENCODER_FILE
        if not meta_path.is_file():
            raise EdgekdError(f"{root}: no {TEXT_ENCODER_FILE}; make a text encoder with "
                              "`edgekd export-text --teacher NAME --out DIR`")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("format") != TEXT_FORMAT:
                raise CorruptBundleError(f"{meta_path}: not an edgekd text encoder (format {meta.get('format')!r})")
            files, tok = meta["files"], meta["tokenizer"]
            if tok.get("type") != "clip_bpe":
                raise EdgekdError(f"{meta_path}: tokenizer type {tok.get('type')!r} is not supported on device")
            if verify:
                verify_files(root, meta.get("sha256") or {}, required=[files["model"], files["tokenizer"]])
            tokenizer = ClipTokenizer(root / files["tokenizer"], int(tok.get("context_length", CONTEXT_LENGTH)))
            if int(tok.get("vocab_size", tokenizer.vocab_size)) != tokenizer.vocab_size:
                raise CorruptBundleError(f"{meta_path}: tokenizer vocab size {tok['vocab_size']} does not match the "
                                         f"merges file ({tokenizer.vocab_size})")
            int(meta["embed_dim"])
        except (KeyError, TypeError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CorruptBundleError(f"{meta_path}: malformed text encoder metadata ({type(e).__name__}: {e})") from e
        _require_text_gate(meta_path, meta, allow_ungated)
        return cls(root, meta, tokenizer, create_backend(root / files["model"], backend, threads, device, spin=False))

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """N strings -> float32 [N, D] unit embeddings (the teacher's, without torch); batch_size: preferred model
        batch (clamped to what the model accepts, edgekd.runtime.batching)."""
        from edgekd.runtime.batching import run_batched

        if isinstance(texts, str):
            texts = [texts]
        if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
            raise ValueError("give one or more non-empty label strings")
        outs = run_batched(self.backend, self.tokenizer(list(texts)), batch_size=batch_size)
        emb = next(iter(outs.values())).astype(np.float32)
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)

    def build_label_pack(self, names: Sequence[str], templates: Sequence[str] | None = DEFAULT_TEMPLATES
                         ) -> LabelPack:
        """Class names -> LabelPack: per class the mean of its template embeddings, normalised (as `edgekd labels`).

        templates: strings with one '{}' (default "a photo of a {}."); None or () embeds the names as they are.
        """
        names = [str(n).strip() for n in names]
        if not names or any(not n for n in names):
            raise ValueError("give one or more non-empty label strings")
        templates = list(templates or ["{}"])
        if any("{}" not in t for t in templates):
            raise ValueError("every template needs a '{}' where the label goes")
        prompts = {n: [t.format(n) for t in templates] for n in names}
        flat = [p for n in names for p in prompts[n]]
        emb = self.encode(flat).reshape(len(names), len(templates), -1).mean(axis=1)
        meta = {"teacher_id": self.teacher_id, "teacher": self.meta.get("teacher"), "embed_dim": self.embed_dim,
                "logit_scale": self.logit_scale, "templates": "custom" if templates != ["{}"] else "none",
                "num_templates": len(templates), "source": "on-device text encoder"}
        return LabelPack(names, emb, prompts, meta)


def text_gate_summary(meta: dict[str, Any]) -> str:
    """One line of a text encoder's gate, e.g. 'int8 against the fp32 tower on 480 prompts: prompt cosine mean
    0.99830 / p1 0.99764 / worst 0.99745, label cosine worst 0.99839, top-1 agreement 100.0% (strict 99.0%), on
    Intel(R) Xeon(R) Processor (AVX512_CORE_AMX)'."""
    gate = meta.get("gate") or {}
    m = gate.get("metrics") or {}
    nan = float("nan")
    line = (f"{meta.get('precision') or 'fp32'} against {gate.get('reference', 'the fp32 tower')} on "
            f"{m.get('prompts', '?')} prompts: prompt cosine ")
    if "prompt_cosine_mean" in m:
        line += f"mean {m['prompt_cosine_mean']:.5f} / p1 {m.get('prompt_cosine_p01', nan):.5f} / "
    line += f"worst {m.get('prompt_cosine_min', nan):.5f}"
    if "label_cosine_min" in m:
        line += f", label cosine worst {m['label_cosine_min']:.5f}"
    if "top1_agreement" in m:
        line += f", top-1 agreement {m['top1_agreement']:.1%} (strict {m.get('top1_agreement_strict', nan):.1%})"
    cpu = (gate.get("validated_on") or {}).get("cpu_name") or gate.get("cpu")
    return line + (f", on {cpu}" if cpu else "")


def _require_text_gate(meta_path: Path, meta: dict[str, Any], allow_ungated: bool) -> None:
    """A passed gate, or an fp32 encoder from before gates (no `gate` key); else refuse_ungated."""
    status, precision = gate_status(meta, "gate"), str(meta.get("precision") or "fp32")
    if status == "passed" or (status == "missing" and precision == "fp32"):
        return
    what = {"failed": f"did not pass its gate ({text_gate_summary(meta)})",
            "skipped": "skipped its gate", "missing": "has no gate verdict"}[status]
    refuse_ungated(f"{meta_path}: this {precision} text encoder {what}; re-export it with `edgekd export-text "
                   "--precision fp32` (or a precision that passes), or pass allow_ungated=True to use it anyway",
                   allow_ungated)
