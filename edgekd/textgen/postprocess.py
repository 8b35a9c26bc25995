"""Clean what a model wrote into caption/description text: no boilerplate, no refusals, no duplicates, and short
enough for the teacher's text tower (CLIP's 77-token context, counted with open_clip's tokenizer when available)."""

from __future__ import annotations

import functools
import logging
import re
import unicodedata
from collections.abc import Callable, Iterable

from edgekd._optional import is_available

log = logging.getLogger(__name__)

CONTEXT_LENGTH = 77  # CLIP text context, start and end tokens included

_CHATTER = re.compile(
    r"^\s*(?:(?:sure|certainly|of course|okay|ok)\b[!,.]?\s*)?(?:here(?:'s| is| are)\b[^:\n]{0,60}:\s*)?", re.I)
_PICTURE = r"(?:image|picture|photo(?:graph)?|scene)"
_BOILERPLATE = re.compile(
    rf"^\s*(?:(?:the|this)\s+{_PICTURE}\s+(?:shows|depicts|features|displays|contains|presents|captures|is\s+of)\b:?\s*"
    rf"|in\s+(?:the|this)\s+{_PICTURE}\s*,?\s*"
    rf"|(?:this|it)\s+is\s+(?:an?\s+)?{_PICTURE}\s+(?:of|showing)\s+)", re.I)
_REFUSAL = re.compile(
    r"^\s*(?:i'?\s*a?m\s+(?:sorry|unable|not able)|i\s+am\s+(?:sorry|unable|not able)|sorry\b|i\s+can(?:no|')t\b"
    r"|i\s+cannot\b|as an ai\b|i'?m an ai\b|unfortunately,?\s+i\b)", re.I)
_MARKUP = re.compile(r"[*#`_]{2,}|^\s*(?:[-*•]|\d+[.)])\s+", re.M)


def clean(text: str) -> str:
    """Strip markup, chatter ("Sure! Here is ...:") and boilerplate ("The image shows ..."); '' for a refusal."""
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text.replace("\ufffd", " "))
    text = _MARKUP.sub(" ", text)
    text = " ".join(text.split()).strip(" \"'")
    if not text or _REFUSAL.match(text):
        return ""
    text = _CHATTER.sub("", text, count=1)
    text = _BOILERPLATE.sub("", text, count=1).lstrip(" ,:;-")
    if _REFUSAL.match(text):
        return ""
    return text[:1].upper() + text[1:] if text else ""


def dedup(texts: Iterable[str]) -> list[str]:
    """Drop empty texts and repeats (case and punctuation ignored), keeping first occurrences in order."""
    seen: set[str] = set()
    out = []
    for t in texts:
        key = re.sub(r"[\W_]+", " ", t.lower()).strip()
        if key and key not in seen:
            seen.add(key)
            out.append(t)
    return out


@functools.lru_cache(maxsize=1)
def clip_token_counter() -> tuple[Callable[[str], int], str]:
    """(text -> number of BPE tokens without start/end, name of the tokenizer). open_clip's CLIP tokenizer (what the
    CLIP teachers use) when installed, else a word/punctuation count that under-counts rare words (then
    `truncate_tokens` keeps a margin)."""
    if is_available("open_clip"):
        from open_clip.tokenizer import SimpleTokenizer

        tok = SimpleTokenizer()
        return (lambda s: len(tok.encode(s))), "open_clip SimpleTokenizer"
    piece = re.compile(r"[^\W\d_]+|\d|[^\w\s]+")
    return (lambda s: len(piece.findall(s))), "words (approximate)"


def truncate_tokens(text: str, max_tokens: int = CONTEXT_LENGTH, reserve: int = 0) -> str:
    """Cut `text` to fit `max_tokens` (start/end tokens and `reserve` tokens of a template included): whole
    sentences while they fit, else whole words."""
    count, name = clip_token_counter()
    budget = max_tokens - 2 - reserve
    if name.startswith("words"):
        budget = int(budget * 0.75)  # rough: a CLIP BPE word is ~1.3 tokens
    if budget <= 0 or count(text) <= budget:
        return text if budget > 0 else ""
    kept = ""
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        candidate = f"{kept} {sentence}".strip()
        if count(candidate) > budget:
            break
        kept = candidate
    if kept:
        return kept
    words = text.split()
    lo, hi = 0, len(words)  # largest prefix of words that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(" ".join(words[:mid])) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo]).rstrip(",;:-")


def finish(texts: Iterable[str], max_tokens: int = CONTEXT_LENGTH, reserve: int = 0) -> list[str]:
    """clean -> truncate -> dedup: the captions (or descriptions) worth keeping, possibly none."""
    return dedup(truncate_tokens(c, max_tokens, reserve) for c in map(clean, texts) if c)
