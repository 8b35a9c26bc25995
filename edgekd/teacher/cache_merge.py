"""Join shard caches (`edgekd cache --shard I/N`) into one normal cache, checking they belong together."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from edgekd import EdgekdError
from edgekd._io import atomic_path, atomic_write_json, read_json, sha256_json
from edgekd.teacher.cache import (
    ARRAYS,
    INDEX,
    MANIFEST,
    CacheMismatchError,
    TeacherCache,
    _identity,
    read_manifest,
)

log = logging.getLogger(__name__)


def merge_caches(shards: list[str | os.PathLike], out: str | os.PathLike, overwrite: bool = False,
                 progress: bool = True) -> TeacherCache:
    """Concatenate complete shard caches (any order) covering the whole dataset -> a complete cache at `out`."""
    if not shards:
        raise EdgekdError("give the shard cache folders to merge, e.g. `edgekd cache merge out.shard-*-of-4 --out C`")
    out = Path(out)
    parts = [(Path(p), read_manifest(p)) for p in shards]
    for p, m in parts:
        if not m.get("complete"):
            raise EdgekdError(f"{p}: shard is incomplete; re-run its `edgekd cache --shard ...` command first")
        if m.get("shard") is None:
            raise EdgekdError(f"{p}: not a shard (built without --shard); nothing to merge")
    parts.sort(key=lambda pm: pm[1]["shard"]["index"])
    ref_path, ref = parts[0]
    ref_id = {k: v for k, v in _identity(ref).items() if k != "shard"}
    for p, m in parts[1:]:
        ident = {k: v for k, v in _identity(m).items() if k != "shard"}
        if ident != ref_id:
            diff = ", ".join(k for k in ref_id if ref_id[k] != ident[k])
            raise CacheMismatchError(f"{p} and {ref_path} differ in {diff}; shards must come from the same teacher, "
                                     "dataset, views and captions")
    count = ref["shard"]["count"]
    got = [m["shard"]["index"] for _, m in parts]
    if got != list(range(count)):
        missing = sorted(set(range(count)) - set(got))
        dup = sorted({i for i in got if got.count(i) > 1})
        raise EdgekdError(f"shards do not cover the dataset: {count} expected"
                          + (f", missing {missing}" if missing else "") + (f", duplicated {dup}" if dup else ""))
    if [m["shard"]["start"] for _, m in parts[1:]] != [m["shard"]["stop"] for _, m in parts[:-1]]:
        raise EdgekdError("shard row ranges are not contiguous; were they built from the same dataset?")

    index: list[dict[str, Any]] = []
    for p, _ in parts:
        index += read_json(p / INDEX)
    classes = ref["dataset"].get("classes") or []
    if sha256_json({"classes": classes, "entries": index}) != ref["dataset"]["index_sha256"]:
        raise EdgekdError("the joined shard indexes do not reproduce the dataset index hash; rebuild the shards")

    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise EdgekdError(f"--out {out}: exists and is not empty; choose a new --out or pass --overwrite")
        if not (out / MANIFEST).is_file():
            raise EdgekdError(f"--out {out}: exists and is not an edgekd cache; choose a new --out")
        (out / MANIFEST).unlink()  # the cache stops being valid before its arrays are replaced
    out.mkdir(parents=True, exist_ok=True)

    n = len(index)
    names = [a for a in ARRAYS if (ref_path / a).is_file()]
    for name in tqdm(names, desc="merge", unit="array", disable=not progress):
        first = np.load(ref_path / name, mmap_mode="r")
        with atomic_path(out / name) as tmp:
            dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=first.dtype, shape=(n, *first.shape[1:]))
            row = 0
            for p, _ in parts:
                src = np.load(p / name, mmap_mode="r")
                dst[row: row + len(src)] = src
                row += len(src)
            dst.flush()
            del dst
    for extra in ("labels.npz", "labels_simple.npz"):
        if (ref_path / extra).is_file():
            with atomic_path(out / extra) as tmp:
                shutil.copyfile(ref_path / extra, tmp)
    atomic_write_json(out / INDEX, index)

    manifest = dict(ref)
    skipped = [s for _, m in parts for s in m.get("skipped", [])]
    valid = int(sum(m["counts"]["valid"] for _, m in parts))
    manifest["counts"] = {"images": n, "valid": valid, "skipped": n - valid}
    manifest["skipped"] = skipped
    if ref.get("captions"):
        manifest["captions"] = dict(ref["captions"], count=sum(m["captions"]["count"] for _, m in parts),
                                    images_with_captions=sum(m["captions"]["images_with_captions"] for _, m in parts))
    manifest["shard"] = None
    manifest["merged_from"] = [str(p.absolute()) for p, _ in parts]
    manifest["complete"] = True
    atomic_write_json(out / MANIFEST, manifest)
    log.info("merged %d shards (%d images) into %s", len(parts), n, out)
    return TeacherCache.open(out)
