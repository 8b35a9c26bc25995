"""Start/resume cost of the dataset index: a re-run confirms an unchanged dataset from stat() alone, a changed one
is still refused, and DataLoader workers do not parse index.json."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest

import edgekd.data.index as index_mod
from edgekd.teacher.cache import CacheMismatchError, build_cache


@pytest.fixture()
def data(image_folder, tmp_path) -> Path:
    """The 18 test images as an unlabeled folder (no label packs to build: the cache builds in well under 1 s)."""
    root = tmp_path / "data"
    root.mkdir()
    for p in image_folder.rglob("*.jpg"):
        shutil.copy(p, root / f"{p.parent.name}_{p.name}")
    return root


def _count_hashes(monkeypatch) -> list[str]:
    opened: list[str] = []
    real = index_mod.file_hash

    def counting(path, size=None):
        opened.append(str(path))
        return real(path, size)

    monkeypatch.setattr(index_mod, "file_hash", counting)
    return opened


def test_stat_listing_and_hashes_keep_the_index_hash(data):
    full = index_mod.build_index(data)
    listed = index_mod.build_index(data, hash_files=False)
    assert not listed.hashed and listed.stat_sha256 == full.stat_sha256
    with pytest.raises(Exception, match="without content hashes"):
        _ = listed.sha256
    assert listed.hash_files().sha256 == full.sha256  # same definition as before: content, not stat
    assert "stat_sha256" in full.describe()


@pytest.mark.parametrize("shard", [None, "1/2"])
def test_rerun_of_unchanged_dataset_reads_no_file(data, tiny_teacher, tmp_path, monkeypatch, shard):
    out = tmp_path / "cache"
    first = build_cache(data, out, tiny_teacher, workers=0, progress=False, shard=shard)
    opened = _count_hashes(monkeypatch)
    again = build_cache(data, out, tiny_teacher, workers=0, progress=False, shard=shard)
    assert opened == []
    assert again.index_sha256 == first.index_sha256
    assert again.manifest["dataset"]["stat_sha256"] == first.manifest["dataset"]["stat_sha256"]


def test_changed_file_is_still_refused(data, tiny_teacher, tmp_path, monkeypatch):
    out = tmp_path / "cache"
    build_cache(data, out, tiny_teacher, workers=0, progress=False)
    victim = sorted(data.rglob("*.jpg"))[3]
    st = victim.stat()
    blob = bytearray(victim.read_bytes())
    blob[-3] ^= 0xFF  # same size, other bytes ...
    victim.write_bytes(bytes(blob))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and the old mtime: only ctime gives it away
    opened = _count_hashes(monkeypatch)
    with pytest.raises(CacheMismatchError, match="dataset"):
        build_cache(data, out, tiny_teacher, workers=0, progress=False)
    assert len(opened) == 18  # the fingerprint differed, so every file was hashed again


def test_touched_but_unchanged_files_resume(data, tiny_teacher, tmp_path):
    out = tmp_path / "cache"
    first = build_cache(data, out, tiny_teacher, workers=0, progress=False)
    for p in data.rglob("*.jpg"):
        os.utime(p)
    again = build_cache(data, out, tiny_teacher, workers=0, progress=False)  # re-hashed, same content: accepted
    assert again.index_sha256 == first.index_sha256


def test_workers_do_not_parse_index_json(data, tiny_teacher, tmp_path, monkeypatch):
    import edgekd._io
    import edgekd.teacher.cache as cache_mod
    from edgekd.distill.data import CachedViewDataset

    out = tmp_path / "cache"
    build_cache(data, out, tiny_teacher, views=2, workers=0, progress=False)
    worker = pickle.loads(pickle.dumps(CachedViewDataset(str(out), tiny_teacher.preprocess)))

    def no_json(*a, **k):
        raise AssertionError("a worker parsed JSON")

    monkeypatch.setattr(cache_mod, "read_json", no_json)
    monkeypatch.setattr(edgekd._io, "read_json", no_json)
    item = worker[(0, 0)]
    assert item["teacher"].shape == (tiny_teacher.embed_dim,)
