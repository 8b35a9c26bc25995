"""What a start or resume of `edgekd cache` / `edgekd distill` spends on the dataset index, with N tiny files.

Measures, on a synthetic unlabeled folder of N 1x1 PNGs (in 100 sub-folders):
  * index_start_s     build_index(): list + stat + content-hash every file (a fresh `edgekd cache`, every rank);
  * cache_rerun_s     `build_cache --shard 0/S` run again on the complete shard it built (the shard embeds N/S
                      images, but indexes all N): what every torchrun rank of `edgekd cache` spends on a resume or
                      re-run to confirm that the dataset is unchanged, before doing nothing;
  * changed_detected  the same re-run after one file was rewritten: must be refused (dataset changed);
  * worker_open_s     a DataLoader worker's first item of CachedViewDataset (on an N-image cache) minus its second:
                      what a worker spends opening the cache (index.json parse before, memmaps only after), with
                      the dataset unpickled as a spawned worker receives it (worker_pickle_bytes).
It runs against whatever edgekd is importable, so the same script measures the code before and after a change.

    python benchmarks/index_speed.py --files 100000 --label after \\
        --json benchmarks/results/index_speed.json --md benchmarks/results/index_speed.md
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import subprocess
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any


def tiny_png(v: int) -> bytes:
    """A valid 1x1 RGB PNG of grey level v (67 bytes): decodable, distinct contents."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = (1).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes([0, v, v, v]))) \
        + chunk(b"IEND", b"")


def make_dataset(root: Path, files: int, folders: int = 100) -> None:
    """An unlabeled image folder (kind 'folder': one image at the top, the rest in `folders` sub-folders), so that
    the cache build times the images, not a label pack of 100 classes."""
    pngs = [tiny_png(v) for v in range(256)]
    root.mkdir(parents=True)
    (root / "top.png").write_bytes(pngs[0])
    for i in range(files - 1):
        d = root / f"part{i % folders:03d}"
        if i < folders:
            d.mkdir()
        (d / f"{i:07d}.png").write_bytes(pngs[i % 256])


def timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def measure(root: Path, work: Path, shards: int) -> dict[str, Any]:
    from edgekd import EdgekdError
    from edgekd.data.index import build_index
    from edgekd.teacher.cache import build_cache
    from edgekd.teacher.clip import load_teacher

    res: dict[str, Any] = {}
    res["index_start_s"], idx = timed(lambda: build_index(root))
    res["index_sha256"] = idx.sha256
    # shard 0 of `shards`: a rank of `torchrun ... edgekd cache`; it indexes the whole dataset, embeds its share
    teacher = load_teacher("edgekd-test-tiny", random_init=True, device="cpu")
    cache = work / "cache"

    def run() -> Any:
        return build_cache(root, cache, teacher, batch_size=256, workers=0, progress=False, shard=f"0/{shards}")

    res["shard_build_s"], _ = timed(run)
    res["cache_rerun_s"], _ = timed(run)
    res["worker_pickle_bytes"], res["worker_open_s"] = worker_open(cache, work / "full", idx, teacher)
    victim = sorted(root.glob("part000/*.png"))[0]
    victim.write_bytes(tiny_png(7) + b"changed")
    try:
        run()
        res["changed_detected"] = False
    except EdgekdError as e:
        res["changed_detected"] = "dataset" in str(e)
    return res


def worker_open(shard: Path, full: Path, idx: Any, teacher: Any) -> tuple[int, float]:
    """A complete single cache of every file (the shard's manifest, index.json of all N rows, N-row arrays of
    zeros), then what a spawned DataLoader worker spends on its first item beyond its second."""
    import numpy as np

    from edgekd._io import atomic_write_json, read_json
    from edgekd.distill.data import CachedViewDataset

    n = len(idx)
    full.mkdir()
    man = read_json(shard / "manifest.json")
    man.update({"shard": None, "counts": {"images": n, "valid": n, "skipped": 0}})
    atomic_write_json(full / "manifest.json", man)
    atomic_write_json(full / "index.json", idx.to_json())
    for name in ("image_embeds.npy", "views.npy", "image_sizes.npy", "valid.npy"):
        a = np.load(shard / name, mmap_mode="r")
        out = np.lib.format.open_memmap(full / name, mode="w+", dtype=a.dtype, shape=(n, *a.shape[1:]))
        out[:] = a[0]
        out.flush()
    ds = CachedViewDataset(str(full), teacher.preprocess)
    blob = pickle.dumps(ds)
    worker = pickle.loads(blob)
    first, _ = timed(lambda: worker[(0, 0)])
    second, _ = timed(lambda: worker[(1, 0)])
    return len(blob), max(0.0, first - second)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=100_000)
    p.add_argument("--shards", type=int, default=50, help="the measured cache is shard 0 of this many")
    p.add_argument("--label", default="after", help="row name, e.g. before/after")
    p.add_argument("--workdir", default=None, help="where to create the files (default: a temp dir, removed)")
    p.add_argument("--json", default=None, help="merge this row into a JSON file (rows keyed by --label)")
    p.add_argument("--md", default=None, help="rewrite a Markdown table from the JSON file")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)

    import edgekd
    from edgekd.bench.env import collect_environment
    from edgekd.cpu import cpu_facts
    from edgekd.cpu import describe as describe_cpu

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp) / "data"
        t_make, _ = timed(lambda: make_dataset(root, args.files))
        row = {"files": args.files, "make_files_s": round(t_make, 2), **measure(root, Path(tmp), args.shards)}
    row = {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(edgekd.__file__).parent).stdout.strip()
    row.update({"commit": commit, "cpu": describe_cpu(cpu_facts()), "cores": os.cpu_count()})
    print(json.dumps(row, indent=2))
    if args.json:
        path = Path(args.json)
        data = json.loads(path.read_text()) if path.is_file() else {"format": "edgekd.index_speed", "rows": {}}
        data["rows"][args.label] = row
        data["environment"] = collect_environment()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n")
        if args.md:
            Path(args.md).write_text(markdown(data))


def markdown(data: dict[str, Any]) -> str:
    rows = data["rows"]
    env = data["environment"]["cpu"]
    cols = [("files", "files"), ("index_start_s", "index, fresh start (s)"),
            ("cache_rerun_s", "cache re-run/resume of a shard (s)"),
            ("worker_open_s", "worker cache open (s)"), ("worker_pickle_bytes", "dataset pickle (bytes)"),
            ("changed_detected", "changed file refused"), ("commit", "commit")]
    out = ["# Dataset index cost at start/resume (`benchmarks/index_speed.py`)", "",
           f"CPU: {rows[next(iter(rows))]['cpu']}, {env.get('cores_logical', '?')} logical cores; synthetic "
           "unlabeled folder of 1x1 PNGs (100 sub-folders), page cache warm.", "",
           "| run | " + " | ".join(c[1] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for label, r in rows.items():
        out.append(f"| {label} | " + " | ".join(str(r.get(k, "")) for k, _ in cols) + " |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
