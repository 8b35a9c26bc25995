"""The teacher cache: the frozen teacher run once over a dataset, K views per image, stored as fp16 memmaps.

Layout and fields are specified in docs/FORMATS.md ("Teacher cache"). Reading (`TeacherCache.open`) needs numpy
only; building (`build_cache`) needs torch and the teacher. A build is resumable: rows are processed in fixed,
index-aligned batches, memmaps are flushed and `progress.json` is replaced atomically after every chunk, so a
killed build continues where it stopped and ends with the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekd import EdgekdError, __version__
from edgekd._io import atomic_path, atomic_write_json, read_json, sha256_file
from edgekd.labelpack import LabelPack, load_label_pack
from edgekd.preprocess import Preprocess, sample_train_view

if TYPE_CHECKING:
    from edgekd.data.index import DatasetIndex
    from edgekd.teacher.clip import Teacher

log = logging.getLogger(__name__)

FORMAT = "edgekd.cache"
VERSION = 1
MANIFEST = "manifest.json"
PROGRESS = "progress.json"
INDEX = "index.json"
ARRAYS = ("image_embeds.npy", "views.npy", "image_sizes.npy", "valid.npy", "caption_embeds.npy", "caption_mask.npy")
CACHE_FILES = (MANIFEST, PROGRESS, INDEX, *ARRAYS, "labels.npz", "labels_simple.npz")


class CacheError(EdgekdError):
    """A cache directory that is missing, incomplete or unreadable."""


class CacheMismatchError(CacheError):
    """A cache made by another teacher / preprocessing / dataset / views than the one asked for."""


# --------------------------------------------------------------------------------------------------- reading


class TeacherCache:
    """A complete teacher cache opened read-only (arrays are memmaps; nothing is loaded until indexed).

    image_embeds: float16 [N, K, D] unit vectors (zeros for skipped images); views: float32 [N, K, 5];
    image_sizes: int32 [N, 2] (w, h); valid: bool [N]; labels: int64 [N] (-1 = unlabeled);
    caption_embeds: float16 [N, M, D] and caption_mask: bool [N, M], or None.
    """

    def __init__(self, path: Path, manifest: dict[str, Any], index: list[dict[str, Any]], data_root: Path | None):
        self.path = path
        self.manifest = manifest
        self.index = index
        self.root = Path(data_root) if data_root else Path(manifest["dataset"]["root"])
        self.rel_paths: list[str] = [e["path"] for e in index]
        self.labels = np.asarray([e["label"] for e in index], dtype=np.int64)
        self.image_embeds: np.ndarray = _load_array(path, "image_embeds.npy")
        self.views: np.ndarray = _load_array(path, "views.npy")
        self.image_sizes: np.ndarray = _load_array(path, "image_sizes.npy")
        self.valid: np.ndarray = np.asarray(_load_array(path, "valid.npy"), dtype=bool)
        has_caps = manifest.get("captions") is not None
        self.caption_embeds: np.ndarray | None = _load_array(path, "caption_embeds.npy") if has_caps else None
        self.caption_mask: np.ndarray | None = (np.asarray(_load_array(path, "caption_mask.npy"), dtype=bool)
                                                if has_caps else None)
        n = len(index)
        if self.image_embeds.ndim != 3 or self.image_embeds.shape[0] != n or self.valid.shape != (n,):
            raise CacheError(f"{path}: arrays do not match index.json ({self.image_embeds.shape} vs {n} images); "
                             "rebuild the cache with `edgekd cache ... --overwrite`")
        self._label_packs: dict[str, LabelPack | None] = {}

    @classmethod
    def open(cls, path: str | os.PathLike, data_root: str | os.PathLike | None = None) -> TeacherCache:
        """Open a complete cache directory. `data_root` overrides where the images live (if the data moved)."""
        path = Path(path)
        manifest = read_manifest(path)
        if not manifest.get("complete"):
            raise CacheError(f"{path}: the cache is incomplete (build interrupted); run the same `edgekd cache` "
                             "command again to finish it")
        if manifest.get("version", 0) > VERSION:
            raise CacheError(f"{path}: cache version {manifest['version']} is newer than this edgekd supports "
                             f"({VERSION}); upgrade edgekd")
        try:
            index = read_json(path / INDEX)
        except (OSError, ValueError) as e:
            raise CacheError(f"{path}: cannot read {INDEX} ({e}); rebuild the cache") from e
        return cls(path, manifest, index, Path(data_root) if data_root else None)

    # -- manifest views
    @property
    def num_images(self) -> int:
        return int(self.image_embeds.shape[0])

    @property
    def num_views(self) -> int:
        return int(self.image_embeds.shape[1])

    @property
    def embed_dim(self) -> int:
        return int(self.image_embeds.shape[2])

    @property
    def paths(self) -> list[Path]:
        """Absolute image paths (dataset root / relative path)."""
        return [self.root / p for p in self.rel_paths]

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["dataset"].get("classes") or [])

    @property
    def teacher(self) -> dict[str, Any]:
        return dict(self.manifest["teacher"])

    @property
    def teacher_id(self) -> str:
        return str(self.manifest["teacher"]["id"])

    @property
    def preprocess(self) -> Preprocess:
        return Preprocess.from_dict(self.manifest["preprocess"])

    @property
    def index_sha256(self) -> str:
        return str(self.manifest["dataset"]["index_sha256"])

    @property
    def manifest_sha256(self) -> str:
        return sha256_file(self.path / MANIFEST)

    @property
    def view_config(self) -> dict[str, Any]:
        return dict(self.manifest["views"])

    def _pack(self, name: str) -> LabelPack | None:
        if name not in self._label_packs:
            f = self.path / name
            self._label_packs[name] = load_label_pack(f) if f.is_file() else None
        return self._label_packs[name]

    @property
    def label_pack(self) -> LabelPack | None:
        """labels.npz: the dataset classes embedded with the template ensemble (+ descriptions), or None."""
        return self._pack("labels.npz")

    @property
    def label_pack_simple(self) -> LabelPack | None:
        """labels_simple.npz: single template "a photo of a {}.", or None."""
        return self._pack("labels_simple.npz")

    def check_images(self, option: str = "--data-root") -> None:
        """Raise CacheError unless the images are where this cache looks for them (recorded root or `data_root`).

        Checks the first, middle and last usable image (a stat each): a cache copied to another machine without
        its images, or with them under another folder, fails here in one line instead of in a DataLoader worker.
        """
        rows = np.flatnonzero(self.valid)
        if rows.size == 0:
            return
        for row in dict.fromkeys((int(rows[0]), int(rows[rows.size // 2]), int(rows[-1]))):
            if not (self.root / self.rel_paths[row]).is_file():
                recorded = self.manifest["dataset"]["root"]
                where = ("the dataset root recorded when it was built" if str(self.root) == recorded
                         else f"{option} {self.root}")
                raise CacheError(f"{self.path}: images not found at {where} ({self.root / self.rel_paths[row]} is "
                                 f"missing); pass {option} DIR naming the folder that now holds the cached dataset's "
                                 f"images (recorded root: {recorded})")

    def check_teacher(self, teacher_id: str) -> None:
        """Raise CacheMismatchError unless this cache was made by `teacher_id`."""
        if teacher_id != self.teacher_id:
            raise CacheMismatchError(f"{self.path} was made by teacher {self.teacher_id}, not {teacher_id}; "
                                     "use the same teacher or build a new cache with `edgekd cache`")

    def __len__(self) -> int:
        return self.num_images

    def __repr__(self) -> str:
        return (f"TeacherCache({str(self.path)!r}, images={self.num_images}, views={self.num_views}, "
                f"dim={self.embed_dim}, teacher={self.teacher_id})")


def open_cache_arrays(path: str | os.PathLike, captions: bool) -> dict[str, np.ndarray]:
    """The memmaps a training worker reads (image_embeds, views [+ caption_embeds, caption_mask]), without
    parsing index.json or the manifest: what each DataLoader worker opens instead of a whole TeacherCache."""
    path = Path(path)
    names = ["image_embeds", "views"] + (["caption_embeds", "caption_mask"] if captions else [])
    return {n: _load_array(path, f"{n}.npy") for n in names}


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_dir():
        raise CacheError(f"{path}: no such cache directory (build one with `edgekd cache --data DIR --out {path}`)")
    mf = path / MANIFEST
    if not mf.is_file():
        raise CacheError(f"{path}: not an edgekd cache (no {MANIFEST})")
    try:
        manifest = read_json(mf)
    except (OSError, ValueError) as e:
        raise CacheError(f"{mf}: unreadable manifest ({e}); rebuild with --overwrite") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        fmt = manifest.get("format") if isinstance(manifest, dict) else None
        raise CacheError(f"{path}: not an edgekd cache (format {fmt!r})")
    return manifest


def _load_array(path: Path, name: str, mode: str = "r") -> np.ndarray:
    f = path / name
    if not f.is_file():
        raise CacheError(f"{path}: missing {name}; the cache is damaged, rebuild it with --overwrite")
    try:
        return np.load(f, mmap_mode=mode, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise CacheError(f"{f}: unreadable ({e}); rebuild the cache with --overwrite") from e


# --------------------------------------------------------------------------------------------------- building


@dataclass(frozen=True)
class ViewConfig:
    """K views per image: view 0 the eval view, views 1..K-1 RandomResizedCrop+flip from rng([seed, n, k])."""

    count: int = 1
    seed: int = 0
    scale: tuple[float, float] = (0.35, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scale"], d["ratio"] = list(self.scale), list(self.ratio)
        return d

    def view_params(self, preprocess: Preprocess, image_index: int, width: int, height: int) -> np.ndarray:
        """float32 [K, 5] view boxes of image `image_index` (its position in the full dataset index)."""
        out = [preprocess.eval_view(width, height)]
        for k in range(1, self.count):
            rng = np.random.default_rng([self.seed, image_index, k])
            out.append(sample_train_view(rng, width, height, self.scale, self.ratio, self.flip_p))
        return np.asarray(out, dtype=np.float32)


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """'I/N' or (I, N) -> (I, N) with 0 <= I < N; None stays None."""
    if shard is None or shard == "":
        return None
    if isinstance(shard, str):
        try:
            i, n = (int(x) for x in shard.split("/"))
        except ValueError:
            raise EdgekdError(f"--shard {shard!r}: expected I/N, e.g. 0/4") from None
    else:
        i, n = shard
    if n < 1 or not 0 <= i < n:
        raise EdgekdError(f"--shard {i}/{n}: need 0 <= I < N")
    return int(i), int(n)


def shard_bounds(num: int, index: int, count: int) -> tuple[int, int]:
    """Contiguous [start, stop) of shard `index` of `count` over `num` rows (sizes differ by at most 1)."""
    return num * index // count, num * (index + 1) // count


class ViewDataset:
    """Map-style dataset (picklable for DataLoader workers): row -> decoded image rendered at K views."""

    def __init__(self, root: Path, rel_paths: list[str], offset: int, preprocess: Preprocess, views: ViewConfig):
        self.root, self.rel_paths, self.offset = root, rel_paths, offset
        self.preprocess, self.views = preprocess, views

    def __len__(self) -> int:
        return len(self.rel_paths)

    def __getitem__(self, row: int) -> dict[str, Any]:
        from edgekd.data.images import BadImageError, load_rgb

        path = self.root / self.rel_paths[row]
        try:
            img = load_rgb(path)
        except BadImageError as e:
            return {"row": row, "ok": False, "reason": e.reason + (f": {e.detail}" if e.detail else "")}
        w, h = img.size
        params = self.views.view_params(self.preprocess, self.offset + row, w, h)
        pixels = np.stack([self.preprocess.render(img, tuple(float(v) for v in p)) for p in params])
        return {"row": row, "ok": True, "pixels": pixels, "views": params, "size": (w, h)}


def _collate(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items


def _worker_init(_: int) -> None:
    import torch

    torch.set_num_threads(1)  # workers decode + resize; leave the cores' BLAS threads to the teacher
    _die_with_parent()


def _die_with_parent() -> None:
    """Linux: end this worker when the build process dies (even by SIGKILL); otherwise an orphaned worker can
    block forever flushing its queue."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # best effort; torch's own watchdog still applies
    if os.getppid() == 1:  # parent already gone before prctl took effect
        os._exit(0)


def _chunk_done(out: Path, done: int) -> None:
    """Called after each chunk is durably saved (tests monkeypatch it to simulate a crash)."""


def _versions() -> dict[str, str]:
    import PIL
    import torch

    try:
        import open_clip

        oc = open_clip.__version__
    except ImportError:
        oc = None
    return {"edgekd": __version__, "torch": torch.__version__, "open_clip": oc, "numpy": np.__version__,
            "pillow": PIL.__version__}


def _identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest fields a resumed build (or a merge) must agree on."""
    return {
        "teacher": manifest["teacher"]["id"],
        "preprocess": Preprocess.from_dict(manifest["preprocess"]).to_dict(),  # keys added since read as defaults
        "views": manifest["views"],
        "dataset": manifest["dataset"]["index_sha256"],
        "captions": manifest.get("captions") and {k: manifest["captions"].get(k) for k in ("sha256", "max_per_image")},
        "labels": manifest.get("labels") and {k: v for k, v in manifest["labels"].items() if k != "descriptions_file"},
        "shard": manifest.get("shard"),
    }


_WHAT = {"teacher": "teacher", "preprocess": "teacher preprocessing", "views": "views/seed",
         "dataset": "dataset (images added, removed or changed)", "captions": "captions file",
         "labels": "label templates/descriptions", "shard": "shard"}


def _explain_mismatch(old: dict[str, Any], new: dict[str, Any]) -> str:
    diffs = []
    for k in _WHAT:
        if old.get(k) != new.get(k):
            if k in ("teacher", "dataset"):
                diffs.append(f"{_WHAT[k]}: {old.get(k)} vs {new.get(k)}")
            else:
                diffs.append(_WHAT[k])
    return "; ".join(diffs)


def _empty_arrays(out: Path, n: int, k: int, d: int, m: int | None) -> None:
    specs = {"image_embeds.npy": (np.float16, (n, k, d)), "views.npy": (np.float32, (n, k, 5)),
             "image_sizes.npy": (np.int32, (n, 2)), "valid.npy": (np.bool_, (n,))}
    if m is not None:
        specs.update({"caption_embeds.npy": (np.float16, (n, m, d)), "caption_mask.npy": (np.bool_, (n, m))})
    for name, (dtype, shape) in specs.items():
        with atomic_path(out / name) as tmp:
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
            arr.flush()
            del arr
            _reserve(tmp)


def _reserve(path: Path) -> None:
    """Allocate the disk blocks of a (sparse) memmap file now: on a full disk, writing into the pages of a sparse
    mapping later kills the process with SIGBUS and no message; reserving them turns that into ENOSPC here."""
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise OSError(e.errno, e.strerror, str(path)) from e


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def _disk_full_is_an_error(out: Path) -> Iterator[None]:
    """OSError ENOSPC/EDQUOT while writing the cache -> one-line CacheError naming the file; what was saved stays."""
    try:
        yield
    except OSError as e:
        if e.errno not in _DISK_FULL:
            raise
        name = Path(e.filename).name if e.filename else ""
        if name.startswith(".") and ".tmp" in name:  # atomic_path's temp file -> the file it was replacing
            name = name[1:name.rindex(".tmp")].rsplit(".", 1)[0]
        where = out / name if name else out
        prog = out / PROGRESS
        done = read_json(prog).get("done", 0) if prog.is_file() else 0
        raise CacheError(f"{where}: disk full ({e.strerror or os.strerror(e.errno)}) while writing the cache; free "
                         f"space (or use another --out) and run the same command again: it resumes from the last "
                         f"saved chunk ({done} images done)") from e


def _remove_stale_temps(out: Path) -> None:
    """Temp files of a build killed inside an atomic write (hidden `.NAME.*.tmp*` beside each cache file)."""
    if not out.is_dir():
        return
    for p in out.iterdir():
        if p.name.startswith(".") and ".tmp" in p.name and any(p.name.startswith(f".{n}.") for n in CACHE_FILES):
            p.unlink(missing_ok=True)


def _arrays_ok(out: Path, n: int, k: int, d: int, m: int | None) -> bool:
    want = {"image_embeds.npy": (n, k, d), "views.npy": (n, k, 5), "image_sizes.npy": (n, 2), "valid.npy": (n,)}
    if m is not None:
        want.update({"caption_embeds.npy": (n, m, d), "caption_mask.npy": (n, m)})
    for name, shape in want.items():
        try:
            if np.load(out / name, mmap_mode="r").shape != shape:
                return False
        except (OSError, ValueError):
            return False
    return True


def encode_views(teacher: Teacher, pixels: np.ndarray) -> np.ndarray:
    """uint8 [B, H, W, 3] -> float32 [B, D] unit vectors. On GPU the uint8 batch is normalised on the device."""
    import torch

    if teacher.device.type == "cpu":
        return teacher.encode_pixels(pixels).cpu().numpy()
    pp = teacher.preprocess
    x = torch.from_numpy(pixels).to(teacher.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(pp.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(pp.std, device=x.device).view(1, 3, 1, 1)
    return teacher.encode_images((x - mean) / std).cpu().numpy()


def _prepare_out(out: Path, overwrite: bool) -> dict[str, Any] | None:
    """Existing manifest of `out` (to resume), or None for a fresh build. Refuses non-cache folders."""
    if overwrite and out.exists():
        if (out / MANIFEST).exists() or not any(out.iterdir()):
            for name in CACHE_FILES:
                (out / name).unlink(missing_ok=True)
        else:
            raise EdgekdError(f"--out {out}: exists and is not an edgekd cache; --overwrite only replaces caches. "
                              "Choose a new --out")
        return None
    if not out.exists():
        return None
    if not out.is_dir():
        raise EdgekdError(f"--out {out}: exists and is not a folder; choose a new --out")
    if (out / MANIFEST).is_file():
        try:
            return read_manifest(out)
        except CacheError as e:
            raise EdgekdError(f"--out {out}: {e}; choose a new --out or pass --overwrite") from e
    if any(p for p in out.iterdir() if not p.name.startswith(".")):
        raise EdgekdError(f"--out {out}: folder exists, is not empty and is not an edgekd cache; choose a new --out")
    return None


def build_cache(
    data: str | os.PathLike | DatasetIndex,
    out: str | os.PathLike,
    teacher: Teacher,
    views: int = 1,
    seed: int = 0,
    captions: str | os.PathLike | None = None,
    descriptions: str | os.PathLike | None = None,
    batch_size: int = 64,
    workers: int = 2,
    shard: str | tuple[int, int] | None = None,
    progress: bool = True,
    overwrite: bool = False,
    *,
    templates: str = "default",
    max_captions: int | None = None,
    chunk_size: int = 2048,
    scale: tuple[float, float] = (0.35, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_p: float = 0.5,
) -> TeacherCache:
    """Run `teacher` over every image of `data` (folder, list file or DatasetIndex) at `views` views -> cache at `out`.

    Resumes an interrupted build of the same configuration; refuses (CacheMismatchError) a cache directory made with
    another teacher / preprocessing / dataset / views unless `overwrite`. `shard` ('I/N') builds rows
    [N_total*I/N, N_total*(I+1)/N) only (join shards with `merge_caches`). Returns the opened cache.
    """
    if views < 1:
        raise EdgekdError(f"--views {views}: need at least 1 (view 0 is the eval view)")
    if batch_size < 1:
        raise EdgekdError(f"--batch-size {batch_size}: must be >= 1")
    out = Path(out)
    index, part, start, shard_info = _index_rows(data, out, shard, overwrite)
    vcfg = ViewConfig(views, seed, tuple(scale), tuple(ratio), flip_p)
    cap_texts, cap_info = _caption_texts(captions, max_captions, index, part)
    build = {"batch_size": batch_size, "chunk_size": chunk_size, "workers": workers}
    manifest = _new_manifest(teacher, vcfg, index, part, cap_info, _labels_info(index, templates, descriptions),
                             shard=shard_info, build=build)

    old = _prepare_out(out, overwrite)
    if old is not None:
        _check_same_build(out, old, manifest)
        if old.get("complete"):
            log.info("cache %s is already complete; nothing to do", out)
            return TeacherCache.open(out)
    resume_done, skipped, batch_size = _resume_point(out, old, manifest, batch_size)
    n = len(part)
    with _disk_full_is_an_error(out):
        m = cap_info["max_per_image"] if cap_info else None
        resume_done, skipped = _start_files(out, manifest, part, (n, views, teacher.embed_dim, m), resume_done,
                                            skipped, batch_size)
        if index.classes:
            _write_label_packs(out, teacher, index.classes, templates, descriptions)

        t0 = time.perf_counter()
        if resume_done < n:
            skipped = _run_rows(out, part, start, teacher, vcfg, resume_done, skipped, batch_size, workers, chunk_size,
                                progress, cap_texts, m)
        _finish_manifest(out, manifest, resume_done, skipped, time.perf_counter() - t0)
    if skipped:
        log.warning("%d of %d images skipped (listed in %s): %s", len(skipped), n, out / MANIFEST,
                    "; ".join(f"{s['path']} ({s['reason']})" for s in skipped[:5]))
    return TeacherCache.open(out)


def _index_rows(data: str | os.PathLike | DatasetIndex, out: Path, shard: str | tuple[int, int] | None,
                overwrite: bool) -> tuple[DatasetIndex, DatasetIndex, int, dict[str, int] | None]:
    """-> (the dataset's index, content-hashed; the rows of it this build covers; their first row; the manifest's
    "shard" entry or None)."""
    from edgekd.data.index import DatasetIndex, build_index

    shard_t = parse_shard(shard)
    index = data if isinstance(data, DatasetIndex) else build_index(data, hash_files=False)
    n_total = len(index)
    start, stop = shard_bounds(n_total, *shard_t) if shard_t else (0, n_total)
    if not index.hashed:
        _hash_or_adopt(index, out, start, overwrite)
    shard_info = {"index": shard_t[0], "count": shard_t[1], "start": start, "stop": stop} if shard_t else None
    return index, index.slice(start, stop), start, shard_info


def _caption_texts(captions: str | os.PathLike | None, max_captions: int | None, index: DatasetIndex,
                   part: DatasetIndex) -> tuple[dict[str, list[str]] | None, dict[str, Any] | None]:
    """-> (captions by relative path, the manifest's "captions" entry), or (None, None) without a captions file."""
    if captions is None:
        return None, None
    from edgekd.data.captions import load_captions

    cap_texts = load_captions(captions, index.rel_paths)
    m = max(len(v) for v in cap_texts.values())
    m = min(m, max_captions) if max_captions else m
    cap_info = {"file": str(Path(captions).absolute()), "sha256": sha256_file(captions), "max_per_image": m,
                "count": sum(min(len(cap_texts.get(p, [])), m) for p in part.rel_paths),
                "images_with_captions": sum(1 for p in part.rel_paths if p in cap_texts)}
    return cap_texts, cap_info


def _labels_info(index: DatasetIndex, templates: str, descriptions: str | os.PathLike | None) -> dict[str, Any] | None:
    """The manifest's "labels" entry (how labels.npz is made), or None for an unlabeled dataset."""
    if not index.classes:
        return None
    return {"templates": templates, "descriptions_file": str(descriptions) if descriptions else None,
            "descriptions_sha256": sha256_file(descriptions) if descriptions else None}


def _new_manifest(teacher: Teacher, vcfg: ViewConfig, index: DatasetIndex, part: DatasetIndex,
                  cap_info: dict[str, Any] | None, labels_info: dict[str, Any] | None, *,
                  shard: dict[str, int] | None, build: dict[str, Any]) -> dict[str, Any]:
    """The manifest of a build that has not started (counts unknown, `complete` false)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "teacher": teacher.describe(),
        "preprocess": teacher.preprocess.to_dict(),
        "views": vcfg.to_dict(),
        "dataset": index.describe(),
        "counts": {"images": len(part), "valid": None, "skipped": None},
        "skipped": [],
        "captions": cap_info,
        "labels": labels_info,
        "shard": shard,
        "complete": False,
        "build": build,
        "versions": _versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
    }


def _check_same_build(out: Path, old: dict[str, Any], manifest: dict[str, Any]) -> None:
    """Raise CacheMismatchError unless the cache in `out` (manifest `old`) was made like `manifest`."""
    if _identity(old) != _identity(manifest):
        why = _explain_mismatch(_identity(old), _identity(manifest))
        raise CacheMismatchError(f"--out {out} holds a cache made with a different {why}; use a new --out, "
                                 "or --overwrite to replace it")


def _resume_point(out: Path, old: dict[str, Any] | None, manifest: dict[str, Any], batch_size: int
                  ) -> tuple[int, list[dict[str, str]], int]:
    """-> (rows done, skipped so far, batch size) of an interrupted build in `out` (old manifest `old`), or a fresh
    start. A resumed build keeps its first run's `created` and batch size (so the batches, and bytes, match)."""
    if old is None:
        return 0, [], batch_size
    manifest["created"] = old.get("created", manifest["created"])
    prog = read_json(out / PROGRESS) if (out / PROGRESS).is_file() else None
    if prog and prog.get("batch_size") != batch_size:
        log.warning("resuming with the interrupted build's --batch-size %s (not %s) so the bytes match",
                    prog["batch_size"], batch_size)
        batch_size = int(prog["batch_size"])
        manifest["build"]["batch_size"] = batch_size
    if prog:
        return int(prog["done"]), list(prog.get("skipped", [])), batch_size
    return 0, [], batch_size


def _start_files(out: Path, manifest: dict[str, Any], part: DatasetIndex, shape: tuple[int, int, int, int | None],
                 done: int, skipped: list[dict[str, str]], batch_size: int) -> tuple[int, list[dict[str, str]]]:
    """Create `out` and write the manifest and index; empty arrays for a fresh start (or arrays too damaged to
    resume), else keep them. `shape` is (images, views, embed dim, captions per image or None). -> (done, skipped)."""
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(out)

    n, k, d, m = shape
    if done and not _arrays_ok(out, n, k, d, m):
        log.warning("%s: arrays missing or damaged; starting the build from the beginning", out)
        done, skipped = 0, []
    atomic_write_json(out / MANIFEST, manifest)
    atomic_write_json(out / INDEX, part.to_json())
    if done == 0:
        for name in ARRAYS:  # nothing in them to keep; freeing them first lets a retry fit where the first did
            (out / name).unlink(missing_ok=True)
        _empty_arrays(out, n, k, d, m)
        atomic_write_json(out / PROGRESS, {"done": 0, "batch_size": batch_size, "skipped": []})
    else:
        log.info("resuming %s at image %d of %d", out, done, n)
    return done, skipped


def _finish_manifest(out: Path, manifest: dict[str, Any], resume_done: int, skipped: list[dict[str, str]],
                     seconds: float) -> None:
    """Record the counts, skipped images and this run's speed, mark the cache complete, drop progress.json."""
    n = manifest["counts"]["images"]
    valid = np.load(out / "valid.npy", mmap_mode="r")
    n_valid = int(valid.sum())
    manifest["counts"] = {"images": n, "valid": n_valid, "skipped": n - n_valid}
    manifest["skipped"] = skipped
    manifest["complete"] = True
    manifest["build"]["seconds_last_run"] = round(seconds, 3)
    manifest["build"]["images_per_s_last_run"] = round((n - resume_done) / seconds, 2) if seconds > 0 else None
    atomic_write_json(out / MANIFEST, manifest)
    (out / PROGRESS).unlink(missing_ok=True)


def _hash_or_adopt(index: DatasetIndex, out: Path, start: int, overwrite: bool) -> None:
    """Content-hash `index`, unless `out` holds a build of the very same listing: when its manifest's
    `stat_sha256` equals the index's (same paths, labels, sizes, mtimes, ctimes, inodes), that build's hashes are
    taken as they are, so a resume or re-run stats every file but reads none. Anything else hashes afresh (and a
    changed dataset is then refused by the identity check, as before)."""
    if not overwrite and (out / MANIFEST).is_file() and (out / INDEX).is_file():
        try:
            old, part = read_manifest(out), read_json(out / INDEX)
        except (CacheError, OSError, ValueError):
            old, part = None, None
        ds = (old or {}).get("dataset") or {}
        if (ds.get("stat_sha256") and ds.get("stat_sha256") == index.stat_sha256 and ds.get("index_sha256")
                and isinstance(part, list) and index.adopt(str(ds["index_sha256"]), part, start)):
            log.info("%s: dataset unchanged since the last run (stat fingerprint); not re-hashing %d files", out,
                     len(index))
            return
    index.hash_files()


def _write_label_packs(out: Path, teacher: Teacher, classes: list[str], templates: str,
                       descriptions: str | os.PathLike | None) -> None:
    from edgekd.teacher.labels import build_label_pack, build_simple_label_pack

    if not (out / "labels.npz").is_file():
        build_label_pack(teacher, classes, templates, descriptions).save(out / "labels.npz")
    if not (out / "labels_simple.npz").is_file():
        build_simple_label_pack(teacher, classes).save(out / "labels_simple.npz")


def _run_rows(out: Path, part: DatasetIndex, offset: int, teacher: Teacher, vcfg: ViewConfig, done: int,
              skipped: list[dict[str, str]], batch_size: int, workers: int, chunk_size: int, progress: bool,
              cap_texts: dict[str, list[str]] | None, m: int | None) -> list[dict[str, str]]:
    """Fill rows [done, N) of the memmaps batch by batch; save progress every chunk (and on Ctrl-C)."""
    from tqdm.auto import tqdm

    n = len(part)
    arrays = _open_rows(out, m)
    loader = _row_loader(part, offset, teacher, vcfg, done, batch_size, workers)
    chunk_rows = max(1, chunk_size // batch_size) * batch_size
    state = {"done": done}

    def save() -> None:
        for a in arrays.values():
            a.flush()
        atomic_write_json(out / PROGRESS, {"done": state["done"], "batch_size": batch_size, "skipped": skipped})

    bar = tqdm(total=n, initial=done, desc=f"cache {out.name}", unit="img", disable=not progress, smoothing=0.1)
    last_saved = done
    try:
        for items in loader:
            rows = _store_batch(items, part, teacher, vcfg, arrays, skipped, cap_texts, m)
            state["done"] = rows[-1] + 1
            bar.update(len(rows))
            if state["done"] - last_saved >= chunk_rows or state["done"] == n:
                save()
                last_saved = state["done"]
                _chunk_done(out, state["done"])
    except KeyboardInterrupt:
        save()  # every finished batch is kept; batches stay row-aligned, so resuming is exact
        raise
    finally:
        bar.close()
    return skipped


def _open_rows(out: Path, m: int | None) -> dict[str, np.ndarray]:
    """The cache's arrays as writable memmaps, by name without ".npy" (the caption arrays only when `m` is set)."""
    names = ["image_embeds", "views", "image_sizes", "valid"] + (["caption_embeds", "caption_mask"] if m is not None
                                                                  else [])
    return {name: np.load(out / f"{name}.npy", mmap_mode="r+") for name in names}


def _row_loader(part: DatasetIndex, offset: int, teacher: Teacher, vcfg: ViewConfig, done: int, batch_size: int,
                workers: int) -> Any:
    """DataLoader over rows [done, N) of `part`: lists of ViewDataset items, in batches aligned to absolute rows."""
    import torch

    n = len(part)
    # Batches are aligned to absolute row numbers, so a resumed build sees exactly the same batches.
    batches = [list(range(s, min(s + batch_size, n))) for s in range(done, n, batch_size)]
    ds = ViewDataset(part.root, part.rel_paths, offset, teacher.preprocess, vcfg)
    return torch.utils.data.DataLoader(
        ds, batch_sampler=batches, num_workers=workers, collate_fn=_collate,
        worker_init_fn=_worker_init if workers > 0 else None, prefetch_factor=4 if workers > 0 else None)


def _store_batch(items: list[dict[str, Any]], part: DatasetIndex, teacher: Teacher, vcfg: ViewConfig,
                 arrays: dict[str, np.ndarray], skipped: list[dict[str, str]],
                 cap_texts: dict[str, list[str]] | None, m: int | None) -> list[int]:
    """Write one batch of ViewDataset items into `arrays`: an image that did not decode gets zeros and valid=False
    (and joins `skipped`), the others the teacher's fp16 embeddings; then the batch's captions. -> its rows."""
    emb, vw, sizes, valid = arrays["image_embeds"], arrays["views"], arrays["image_sizes"], arrays["valid"]
    rows = [it["row"] for it in items]
    ok = [it for it in items if it["ok"]]
    for it in items:
        if not it["ok"]:
            rel = part.rel_paths[it["row"]]
            skipped.append({"path": rel, "reason": it["reason"]})
            log.info("skipped %s: %s", rel, it["reason"])
            emb[it["row"]] = 0
            vw[it["row"]] = 0
            sizes[it["row"]] = 0
            valid[it["row"]] = False
    if ok:
        pix = np.concatenate([it["pixels"] for it in ok])  # [B*K, H, W, 3]
        e = encode_views(teacher, pix).reshape(len(ok), vcfg.count, -1)
        idx = np.asarray([it["row"] for it in ok])
        emb[idx] = e.astype(np.float16)
        vw[idx] = np.stack([it["views"] for it in ok])
        sizes[idx] = np.asarray([it["size"] for it in ok], dtype=np.int32)
        valid[idx] = True
    if m is not None:
        _encode_captions(teacher, part, rows, valid, cap_texts, m, arrays["caption_embeds"], arrays["caption_mask"])
    return rows


def _encode_captions(teacher: Teacher, part: DatasetIndex, rows: list[int], valid: np.ndarray,
                     cap_texts: dict[str, list[str]], m: int, cap_emb: np.ndarray, cap_mask: np.ndarray) -> None:
    """Caption rows of one batch: float16 [len(rows), M, D] + mask; skipped images get none."""
    texts, where = [], []
    for r in rows:
        cap_emb[r] = 0
        cap_mask[r] = False
        if not valid[r]:
            continue
        for j, c in enumerate(cap_texts.get(part.rel_paths[r], [])[:m]):
            texts.append(c)
            where.append((r, j))
    if texts:
        e = teacher.encode_texts(texts).numpy().astype(np.float16)
        for (r, j), v in zip(where, e):
            cap_emb[r, j] = v
            cap_mask[r, j] = True
