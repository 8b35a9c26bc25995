"""Caption every image of a dataset with a vision-language model into the JSONL that `edgekd cache --captions` reads.

Resumable (images with a record are skipped), shardable (`shard=(I, N)` takes a contiguous part of the sorted
index and writes its own file), and honest about failures: an unreadable image gets a `bad_image` record, a model
that answers empty or refuses is asked again (sampling) and then recorded as `missing`; neither is a caption.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from edgekd import EdgekdError
from edgekd.data.images import BadImageError, load_rgb
from edgekd.data.index import DatasetIndex, build_index
from edgekd.textgen import store
from edgekd.textgen.backend import Backend, Generation, Request
from edgekd.textgen.postprocess import CONTEXT_LENGTH, clean, clip_token_counter, finish
from edgekd.textgen.prompts import fill

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptionSettings:
    """What to ask: one generation per prompt template per image; `retries` re-asks for empty/refused answers."""

    prompts: tuple[str, ...]
    with_label: bool = False
    retries: int = 2
    max_tokens: int = CONTEXT_LENGTH


@dataclass
class CaptionReport:
    """The state of the captions file after a run."""

    out: Path
    counts: dict[str, int]
    bad: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    skipped_done: int = 0
    new: int = 0
    images_per_s: float | None = None
    usage: dict[str, int] = field(default_factory=dict)
    shard: tuple[int, int] | None = None


def generate_with_retries(backend: Backend, requests: Sequence[Request], retries: int) -> list[list[Generation]]:
    """Every attempt per request (the last is the answer): empty or refused answers are asked again, sampled."""
    attempts = [[g] for g in backend.generate(requests)]
    for _ in range(retries):
        empty = [j for j, a in enumerate(attempts) if not clean(a[-1].text)]
        if not empty:
            break
        for j, g in zip(empty, backend.generate([requests[j] for j in empty], sample=True)):
            attempts[j].append(g)
    return attempts


def billed_usage(attempts: list[list[Generation]]) -> dict[str, int]:
    """Tokens billed over all attempts (what a hosted endpoint charges for)."""
    gens = [g for a in attempts for g in a]
    out = {"requests": len(gens)}
    for key in ("prompt_tokens", "output_tokens"):
        if all(getattr(g, key) is not None for g in gens):
            out[key] = sum(getattr(g, key) for g in gens)
    return out


def _load(index: DatasetIndex, row: int) -> tuple[Any, str | None]:
    try:
        return load_rgb(index.abs_path(row)), None
    except BadImageError as e:
        return None, e.reason + (f" ({e.detail})" if e.detail else "")


def _caption_batch(backend: Backend, index: DatasetIndex, rows: list[int], settings: CaptionSettings
                   ) -> list[dict[str, Any]]:
    """Rows of the index -> one record each (captions, or a status saying why there are none)."""
    records: dict[int, dict[str, Any]] = {}
    requests, owners = [], []
    for r in rows:
        entry = index.entries[r]
        image, reason = _load(index, r)
        if image is None:
            records[r] = {"path": entry.path, "captions": [], "status": store.BAD_IMAGE, "reason": reason}
            continue
        label = index.classes[entry.label] if settings.with_label else None
        requests += [Request(fill(p, label), image) for p in settings.prompts]
        owners += [r] * len(settings.prompts)
    attempts = generate_with_retries(backend, requests, settings.retries) if requests else []
    for r in dict.fromkeys(owners):
        mine = [a for a, o in zip(attempts, owners) if o == r]
        caps = finish((a[-1].text for a in mine), settings.max_tokens)
        rec: dict[str, Any] = {"path": index.entries[r].path, "captions": caps}
        if not caps:
            rec.update(status=store.MISSING, reason=f"empty or refused after {settings.retries} retries")
        records[r] = {**rec, "usage": billed_usage(mine)}
    return [records[r] for r in rows]


def _select(index: DatasetIndex, out: Path, shard: tuple[int, int] | None) -> tuple[DatasetIndex, Path, dict | None]:
    if shard is None:
        return index, out, None
    from edgekd.teacher.cache import shard_bounds

    start, stop = shard_bounds(len(index), *shard)
    info = {"index": shard[0], "count": shard[1], "start": start, "stop": stop}
    return index.slice(start, stop), store.shard_path(out, *shard), info


def caption_dataset(data: str | os.PathLike, out: str | os.PathLike, backend: Backend, settings: CaptionSettings,
                    shard: tuple[int, int] | None = None, overwrite: bool = False, retry_missing: bool = False,
                    progress: bool = True) -> CaptionReport:
    """Caption the images of `data` not yet in `out` (or in its shard file) and report the file's state."""
    index = build_index(data)
    if settings.with_label and (not index.classes or any(e.label < 0 for e in index.entries)):
        raise EdgekdError(f"--with-label: {data} has unlabeled images; use an ImageFolder or a labeled list")
    part, out, shard_info = _select(index, Path(out), shard)
    identity = {**backend.identity(), "prompts": list(settings.prompts), "with_label": settings.with_label,
                "max_tokens": settings.max_tokens}
    old = store.open_store(out, identity, overwrite)
    done = {p for p, r in old.items() if store.status(r) == store.OK or not retry_missing}
    todo = [i for i, e in enumerate(part.entries) if e.path not in done]
    meta = {"identity": identity, "dataset": part.describe() | {"classes": index.classes}, "shard": shard_info,
            "tokenizer": clip_token_counter()[1], "complete": False}
    meta["dataset"].pop("index_sha256", None)
    store.write_meta(out, meta)
    t0, usage = time.perf_counter(), []
    n_img = max(1, backend.batch_size // len(settings.prompts))
    with store.JsonlAppender(out) as app, tqdm(total=len(part), initial=len(part) - len(todo), unit="img",
                                               desc="captions", disable=not progress, dynamic_ncols=True) as bar:
        for s in range(0, len(todo), n_img):
            for rec in _caption_batch(backend, part, todo[s:s + n_img], settings):
                app.write(rec)
                usage.append(rec.get("usage", {}))
            app.sync()
            bar.update(len(todo[s:s + n_img]))
    seconds = time.perf_counter() - t0
    return _finish(out, part, meta, usage, len(part) - len(todo), len(todo), seconds, shard)


def _finish(out: Path, part: DatasetIndex, meta: dict[str, Any], usage: list[dict[str, int]], skipped: int,
            new: int, seconds: float, shard: tuple[int, int] | None) -> CaptionReport:
    records = store.read_records(out)
    mine = [records[e.path] for e in part.entries if e.path in records]
    counts = store.count_status(mine)
    rate = round(new / seconds, 3) if new and seconds > 0 else None
    meta.update(counts=counts, complete=len(mine) == len(part), images_per_s_last_run=rate,
                usage=store.sum_usage(r.get("usage", {}) for r in mine))
    store.write_meta(out, meta)
    return CaptionReport(
        out, counts,
        bad=[(r["path"], r.get("reason", "")) for r in mine if store.status(r) == store.BAD_IMAGE],
        missing=[r["path"] for r in mine if store.status(r) == store.MISSING],
        skipped_done=skipped, new=new, images_per_s=rate, usage=store.sum_usage(usage), shard=shard)
