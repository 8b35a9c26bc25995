"""Dataset indexes: which images a dataset holds, their labels, and a content hash that changes when they change.

Three layouts are understood:

* ``imagefolder``: ``ROOT/<class>/**/*.jpg`` (class = first-level sub-folder, images found recursively inside it);
* ``folder``: any other directory, scanned recursively, every image unlabeled (label -1);
* ``list``: a CSV or JSONL file of ``path[,label]`` rows, paths relative to the list file.

The index is sorted by relative path and records, per file, its size and a hash of its first and last 64 KiB (plus
the size), so a cache can notice a changed folder without reading every byte. `stat_sha256` fingerprints the
listing from `stat()` alone (path, label, size, mtime, ctime, inode), so a resumed build can confirm an unchanged
dataset without opening a file (`build_index(hash_files=False)`). numpy-free, torch-free.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd import EdgekdError
from edgekd._io import sha256_json
from edgekd.data.images import is_image_file
from edgekd.data.jsonl import read_path_records

log = logging.getLogger(__name__)

HASH_BLOCK = 64 * 1024
LIST_SUFFIXES = (".csv", ".jsonl", ".txt", ".tsv")
KINDS = ("imagefolder", "folder", "list")


@dataclass(frozen=True)
class IndexEntry:
    """One image: `path` relative to the dataset root (posix), `label` (-1 = unlabeled), byte size, content hash
    ("" until hashed), and `stat` = (mtime_ns, ctime_ns, inode) for the cheap fingerprint (not part of the hash)."""

    path: str
    label: int
    size: int
    hash: str
    stat: tuple[int, int, int] = (0, 0, 0)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "label": self.label, "size": self.size, "hash": self.hash}


@dataclass
class DatasetIndex:
    """A sorted list of images under `root` with labels into `classes`."""

    root: Path
    kind: str
    classes: list[str]
    entries: list[IndexEntry] = field(default_factory=list)
    source: Path | None = None  # the list file for kind 'list', else the root folder
    known_sha256: str | None = None  # the whole-dataset hash adopted from an earlier build (see `adopt`)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def rel_paths(self) -> list[str]:
        return [e.path for e in self.entries]

    @property
    def labels(self) -> list[int]:
        return [e.label for e in self.entries]

    def abs_path(self, i: int) -> Path:
        return self.root / self.entries[i].path

    @property
    def hashed(self) -> bool:
        """Whether every entry carries its content hash (False after `build_index(hash_files=False)`)."""
        return all(e.hash for e in self.entries)

    @property
    def sha256(self) -> str:
        """Hash of classes + every entry (path, label, size, content hash): changes whenever the dataset does."""
        if self.known_sha256:
            return self.known_sha256
        if not self.hashed:
            raise EdgekdError(f"{self.source or self.root}: index built without content hashes; call hash_files()")
        return sha256_json({"classes": self.classes, "entries": [e.to_dict() for e in self.entries]})

    @property
    def stat_sha256(self) -> str:
        """Fingerprint of kind, classes and every entry's (path, label, size, mtime_ns, ctime_ns, inode), from stat()
        alone: equal fingerprints mean untouched files (ctime cannot be set back by tools such as `touch -d`)."""
        h = hashlib.sha256(sha256_json({"kind": self.kind, "classes": self.classes}).encode())
        for e in self.entries:
            h.update(e.path.encode())
            h.update(struct.pack("<qqqqq", e.label, e.size, *e.stat))
        return h.hexdigest()

    def hash_files(self) -> DatasetIndex:
        """Fill in the content hash of every entry that lacks one. Returns self.

        One thread: with warm, local files a thread pool was 2-3x slower than this loop on a 2-core host
        (benchmarks/index_speed.py); the per-file cost is Python, not I/O."""
        root = str(self.root)
        for i, e in enumerate(self.entries):
            if not e.hash:
                self.entries[i] = IndexEntry(e.path, e.label, e.size, file_hash(os.path.join(root, e.path), e.size),
                                             e.stat)
        return self

    def adopt(self, index_sha256: str, part: list[dict[str, Any]], start: int) -> bool:
        """Take content hashes recorded by an earlier build of the same listing (same `stat_sha256`): rows
        [start, start+len(part)) from `part` (an index.json), the whole-dataset hash from `index_sha256`. Other rows
        keep no hash and `sha256` answers `index_sha256`. False (nothing changed) when `part` does not line up."""
        rows = self.entries[start:start + len(part)]
        if len(rows) != len(part) or any(e.path != r.get("path") or e.size != r.get("size") or not r.get("hash")
                                         for e, r in zip(rows, part)):
            return False
        for i, r in enumerate(part, start):
            e = self.entries[i]
            self.entries[i] = IndexEntry(e.path, e.label, e.size, str(r["hash"]), e.stat)
        self.known_sha256 = index_sha256
        return True

    def to_json(self) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.entries]

    def slice(self, start: int, stop: int) -> DatasetIndex:
        return DatasetIndex(self.root, self.kind, list(self.classes), self.entries[start:stop], self.source)

    def describe(self) -> dict[str, Any]:
        return {"root": str(self.root), "kind": self.kind, "source": str(self.source or self.root),
                "index_sha256": self.sha256, "stat_sha256": self.stat_sha256, "num_images": len(self),
                "classes": list(self.classes)}


def file_hash(path: str | os.PathLike, size: int | None = None) -> str:
    """sha256 of (size, first 64 KiB, last 64 KiB): cheap, and changes when a file is replaced or re-encoded."""
    size = os.stat(path).st_size if size is None else size
    h = hashlib.sha256(str(size).encode())
    try:
        with open(path, "rb") as f:
            h.update(f.read(HASH_BLOCK))
            if size > HASH_BLOCK:
                f.seek(max(HASH_BLOCK, size - HASH_BLOCK))
                h.update(f.read(HASH_BLOCK))
    except OSError as e:  # unreadable files stay in the index; decoding later skips and reports them
        h.update(f"unreadable:{e.errno}".encode())
    return h.hexdigest()[:32]


def _entry(root: str, rel: str, label: int) -> IndexEntry:
    """stat() only; the content hash is filled in later by `DatasetIndex.hash_files` ("missing" if unreadable).
    Plain strings, not Path objects: this runs once per file, and pathlib costs more than the stat itself."""
    try:
        st = os.stat(os.path.join(root, rel))
    except OSError:
        return IndexEntry(rel, label, -1, "missing")
    return IndexEntry(rel, label, st.st_size, "", (st.st_mtime_ns, st.st_ctime_ns, st.st_ino))


def walk_images(top: Path, exclude: set[tuple[int, int]] | None = None) -> list[str]:
    """Image files under `top`, recursively, following symlinks but never visiting a directory twice (no loops).

    Folders whose (st_dev, st_ino) is in `exclude` are not entered (an ImageFolder's root, so that a link back to it
    cannot pull other classes into one). An image-named link that cannot be resolved (a loop) is listed, so that
    decoding reports it. Hidden files and folders (starting with '.') are ignored: they hold editor/OS clutter and
    our own temp files.
    """
    found: list[str] = []
    seen: set[tuple[int, int]] = set(exclude or ())
    stack = [top]
    while stack:
        d = stack.pop()
        try:
            st = d.stat()
        except OSError as e:
            log.warning("cannot read folder %s (%s); skipped", d, e.strerror)
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:
            continue
        seen.add(key)
        try:
            children = list(os.scandir(d))
        except OSError as e:
            log.warning("cannot list folder %s (%s); skipped", d, e.strerror)
            continue
        for c in children:
            if c.name.startswith("."):
                continue
            try:
                is_dir = c.is_dir()  # follows symlinks; a dangling link is neither dir nor file
            except OSError:  # e.g. a symlink loop (ELOOP): keep image names so the build reports them
                if is_image_file(c.name):
                    found.append(c.path)
                continue
            if is_dir:
                stack.append(Path(c.path))
            elif is_image_file(c.name):
                found.append(c.path)
    return found


def _is_dir(entry: os.DirEntry) -> bool:
    """entry.is_dir() (following links), False for a link that cannot be resolved (a loop)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _detect_kind(root: Path) -> str:
    """'imagefolder' when the root holds sub-folders with images and no images of its own, else 'folder'."""
    own_images = False
    has_class_dirs = False
    for c in os.scandir(root):
        if c.name.startswith("."):
            continue
        if _is_dir(c):
            has_class_dirs = True
        elif is_image_file(c.name):
            own_images = True
    return "imagefolder" if has_class_dirs and not own_images else "folder"


def _rel(path: str, root: str) -> str:
    """'ROOT/a/b.jpg' -> 'a/b.jpg' (posix) for a path found under `root` by walk_images."""
    rel = path[len(root):].lstrip(os.sep)
    return rel if os.sep == "/" else rel.replace(os.sep, "/")


def index_folder(root: Path, kind: str = "auto") -> DatasetIndex:
    root = Path(root).absolute()
    if kind == "auto":
        kind = _detect_kind(root)
    entries: list[IndexEntry] = []
    top = str(root)
    if kind == "imagefolder":
        class_dirs = sorted(c.name for c in os.scandir(root) if _is_dir(c) and not c.name.startswith("."))
        classes: list[str] = []
        root_key = {(root.stat().st_dev, root.stat().st_ino)}
        for name in class_dirs:
            files = walk_images(root / name, exclude=root_key)
            if not files:
                log.warning("class folder %s holds no images; it is not a class", root / name)
                continue
            classes.append(name)
            label = len(classes) - 1
            entries += [_entry(top, _rel(p, top), label) for p in files]
    elif kind == "folder":
        classes = []
        entries = [_entry(top, _rel(p, top), -1) for p in walk_images(root)]
    else:
        raise EdgekdError(f"--data {root}: unknown dataset kind {kind!r} for a folder; use imagefolder or folder")
    entries.sort(key=lambda e: e.path)
    return DatasetIndex(root, kind, classes, entries, root)


def _read_list_rows(path: Path) -> list[tuple[str, str | None]]:
    rows: list[tuple[str, str | None]] = []
    if path.suffix.lower() == ".jsonl":
        for _, obj in read_path_records(path, "--data", '{"path": "a.jpg", "label": "cat"}'):
            label = obj.get("label")
            rows.append((obj["path"], None if label is None or label == "" else str(label)))
        return rows
    text = path.read_text(encoding="utf-8-sig")
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    for n, rec in enumerate(reader, 1):
        if not rec or not rec[0].strip() or rec[0].lstrip().startswith("#"):
            continue
        if n == 1 and rec[0].strip().lower() == "path":  # header row
            continue
        if len(rec) > 2:
            raise EdgekdError(f"--data {path}: line {n} has {len(rec)} columns; expected path[,label]")
        label = rec[1].strip() if len(rec) == 2 and rec[1].strip() else None
        rows.append((rec[0].strip(), label))
    return rows


def index_list(path: Path) -> DatasetIndex:
    """Index a CSV/TSV/JSONL/TXT list of `path[,label]` rows; paths are relative to the list file's folder."""
    path = Path(path).absolute()
    root = path.parent
    rows = _read_list_rows(path)
    if not rows:
        raise EdgekdError(f"--data {path}: the list holds no images")
    seen: set[str] = set()
    norm_rows = []
    for p, label in rows:
        rel = Path(p).as_posix()
        rel = rel[2:] if rel.startswith("./") else rel
        if rel in seen:
            raise EdgekdError(f"--data {path}: {rel} is listed twice; list each image once")
        seen.add(rel)
        norm_rows.append((rel, label))
    classes = sorted({lab for _, lab in norm_rows if lab is not None})
    cid = {c: i for i, c in enumerate(classes)}
    entries = [_entry(str(root), rel, cid[lab] if lab is not None else -1) for rel, lab in norm_rows]
    entries.sort(key=lambda e: e.path)
    return DatasetIndex(root, "list", classes, entries, path)


def build_index(data: str | os.PathLike, kind: str = "auto", hash_files: bool = True) -> DatasetIndex:
    """Index a dataset folder or list file. `kind`: auto | imagefolder | folder | list.

    `hash_files=False` lists and stat()s only (`stat_sha256` is ready, `sha256` is not until `hash_files()` or
    `adopt()`). Raises EdgekdError when `data` does not exist or holds no images.
    """
    data = Path(data)
    if not data.exists():
        raise EdgekdError(f"--data {data}: no such file or folder")
    if data.is_dir():
        if kind == "list":
            raise EdgekdError(f"--data {data} is a folder but kind 'list' needs a CSV/JSONL file")
        idx = index_folder(data, kind)
    else:
        if data.suffix.lower() not in LIST_SUFFIXES:
            raise EdgekdError(f"--data {data}: expected an image folder or a list file ({', '.join(LIST_SUFFIXES)})")
        idx = index_list(data)
    if not idx.entries:
        raise EdgekdError(f"--data {data}: no image files found (extensions: jpg, png, bmp, gif, webp, tif, ppm)")
    if hash_files:
        idx.hash_files()
    log.info("indexed %d images (%s, %d classes) under %s", len(idx), idx.kind, len(idx.classes), idx.root)
    return idx
