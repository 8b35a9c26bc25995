"""The captions JSONL as an append-only, resumable store, plus its sidecar manifest and the merge of shards.

Each record is one line `{"path": "cat/0001.jpg", "captions": [...]}` (what `edgekd cache --captions` reads), written
with a single `write()` on an O_APPEND descriptor, so a kill leaves at most one partial last line; opening the store
drops it. Images that produced no caption get `"captions": []` and a `"status"` (`missing` | `bad_image`), which
the reader treats as "no caption". The last record of a path wins. `<out>.meta.json` records what made the file
(backend, model, prompts) so that a re-run with other settings refuses instead of mixing.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from edgekd import EdgekdError
from edgekd._io import atomic_write_json, atomic_write_text, read_json
from edgekd.data.jsonl import read_path_records

log = logging.getLogger(__name__)

FORMAT = "edgekd.captions"
VERSION = 1
OK, MISSING, BAD_IMAGE = "ok", "missing", "bad_image"


def meta_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".meta.json")


def shard_path(out: str | os.PathLike, index: int, count: int) -> Path:
    """captions.jsonl -> captions.shard-I-of-N.jsonl (beside it)."""
    out = Path(out)
    return out.with_name(f"{out.stem}.shard-{index}-of-{count}{out.suffix}")


def status(record: dict[str, Any]) -> str:
    return record.get("status", OK if record.get("captions") else MISSING)


def repair_tail(path: Path) -> int:
    """Drop a partial last line (a write cut by a kill); returns the number of bytes dropped."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        pos, chunk = size, 1 << 16
        while pos > 0:  # find the last newline from the end
            start = max(0, pos - chunk)
            f.seek(start)
            block = f.read(pos - start)
            nl = block.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            pos = start
        else:
            keep = 0
        f.truncate(keep)
    log.warning("%s: dropped a partial last line (%d bytes) left by an interrupted run", path, size - keep)
    return size - keep


def read_records(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """{path: last record of that path} of a captions JSONL (complete lines only)."""
    path = Path(path)
    out: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return out
    for _, rec in read_path_records(path, no_path="has no \"path\"; not a captions file written by edgekd",
                                    fix="; remove it or pass --overwrite", complete_lines=True, encoding="utf-8"):
        out[rec["path"]] = rec
    return out


class JsonlAppender:
    """Append records to a JSONL file, one `write()` per line; `sync()` makes them durable."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        written = os.write(self._fd, data)
        if written != len(data):  # a short write (disk full) must not leave a half line behind silently
            raise OSError(f"short write to {self.path} ({written} of {len(data)} bytes)")

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(out: Path, identity: dict[str, Any], overwrite: bool, what: str = "--out") -> dict[str, dict]:
    """Check (or start) the store at `out` for a run with `identity`; returns the records already there."""
    mpath = meta_path(out)
    if overwrite:
        for p in (out, mpath):
            p.unlink(missing_ok=True)
    if out.exists() and out.stat().st_size and not mpath.exists():
        raise EdgekdError(f"{what} {out} exists but was not written by edgekd captions (no {mpath.name}); "
                          "choose another path or pass --overwrite")
    if mpath.exists():
        old = read_json(mpath).get("identity")
        if old != identity:
            diff = sorted(k for k in set(old or {}) | set(identity) if (old or {}).get(k) != identity.get(k))
            raise EdgekdError(f"{what} {out} was made with other settings ({', '.join(diff)} differ); "
                              "run with the same settings to resume, or pass --overwrite")
    repair_tail(out)
    return read_records(out)


def write_meta(out: Path, meta: dict[str, Any]) -> None:
    atomic_write_json(meta_path(out), {"format": FORMAT, "version": VERSION, **meta})


def merge_shards(shards: list[str | os.PathLike], out: str | os.PathLike, overwrite: bool = False) -> dict[str, Any]:
    """Join complete shard files (same identity, shards 0..N-1) into one JSONL sorted by path; returns its meta."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise EdgekdError(f"--out {out} exists; pass --overwrite to replace it")
    metas = []
    for s in map(Path, shards):
        if not meta_path(s).is_file():
            raise EdgekdError(f"{s}: no {meta_path(s).name} beside it; not a shard written by edgekd captions")
        metas.append((s, read_json(meta_path(s))))
    identities = {json.dumps(m.get("identity"), sort_keys=True) for _, m in metas}
    if len(identities) != 1:
        raise EdgekdError("the shards were made with different settings (backend, model or prompts); "
                          "merge only shards of one run")
    counts = {m.get("shard", {}).get("count") for _, m in metas}
    indices = sorted(m.get("shard", {}).get("index", -1) for _, m in metas)
    if None in counts or len(counts) != 1 or indices != list(range(counts.pop())):
        raise EdgekdError(f"need every shard 0..N-1 of one run exactly once; got shard indices {indices}")
    unfinished = [str(s) for s, m in metas if not m.get("complete")]
    if unfinished:
        raise EdgekdError(f"shard(s) not finished: {', '.join(unfinished)}; run their commands again to complete")
    records: dict[str, dict[str, Any]] = {}
    for s, _ in metas:
        repair_tail(s)
        records.update(read_records(s))
    lines = [json.dumps(records[p], ensure_ascii=False) + "\n" for p in sorted(records)]
    atomic_write_text(out, "".join(lines))
    meta = {k: v for k, v in metas[0][1].items() if k not in ("format", "version", "shard")}
    meta.update(merged_from=[str(s) for s, _ in metas], counts=count_status(records.values()), complete=True,
                usage=sum_usage(m.get("usage", {}) for _, m in metas))
    write_meta(out, meta)
    return meta


def count_status(records) -> dict[str, int]:
    counts = {OK: 0, MISSING: 0, BAD_IMAGE: 0}
    for r in records:
        counts[status(r)] = counts.get(status(r), 0) + 1
    return counts


def sum_usage(usages) -> dict[str, int]:
    total: dict[str, int] = {}
    for u in usages:
        for k, v in u.items():
            total[k] = total.get(k, 0) + int(v)
    return total
