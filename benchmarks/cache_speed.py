"""Images/s of `edgekd cache` (decode + render views in DataLoader workers, teacher forward, fp16 memmap writes).

Also measures the two halves alone (decode+render only; teacher forward only on random pixels) so the bottleneck
is visible. Prints a JSON result and writes it to --json.

    ../shared/assets/unpack-cifar10.sh /tmp/edgekd-data   # from the repository root
    python benchmarks/cache_speed.py --data /tmp/edgekd-data/cifar10-images/test --images 500 \
        --teacher ViT-B-32 --random-teacher --json benchmarks/results/cache_speed_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgekd.cpu import cpu_facts
from edgekd.cpu import describe as describe_cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="/tmp/edgekd-data/cifar10-images/test", help="an ImageFolder")
    p.add_argument("--images", type=int, default=500, help="total images (an equal share per class)")
    p.add_argument("--teacher", default="ViT-B-32")
    p.add_argument("--random-teacher", action="store_true", help="random weights (speed is the same)")
    p.add_argument("--pretrained", default="openai")
    p.add_argument("--views", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None, help="write the result here too")
    args = p.parse_args()

    from edgekd.demo import _subset_imagefolder
    from edgekd.teacher.cache import ViewConfig, ViewDataset, build_cache
    from edgekd.teacher.clip import load_teacher

    teacher = load_teacher(args.teacher, pretrained=args.pretrained, random_init=args.random_teacher,
                           device=args.device)
    classes = [d for d in Path(args.data).iterdir() if d.is_dir()]
    with tempfile.TemporaryDirectory(prefix="edgekd-cache-speed-") as tmp:
        data = Path(tmp) / "data"
        n = _subset_imagefolder(Path(args.data), data, max(1, args.images // max(1, len(classes))))

        # 1) decode + render only (one process, no workers): the per-image CPU cost of the data side
        from edgekd.data.index import build_index

        idx = build_index(data)
        ds = ViewDataset(idx.root, idx.rel_paths, 0, teacher.preprocess, ViewConfig(args.views))
        t0 = time.perf_counter()
        for i in range(min(len(ds), 200)):
            ds[i]
        decode_ips = min(len(ds), 200) / (time.perf_counter() - t0)

        # 2) teacher forward only, on random pixels, after one warm-up batch
        h, w = teacher.preprocess.size
        bs = args.batch_size * args.views
        x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (bs, h, w, 3), dtype=np.uint8))
        teacher.encode_pixels(x.numpy())
        if teacher.device.type == "cuda":
            torch.cuda.synchronize()
        reps = 2 if teacher.device.type == "cpu" else 10
        t0 = time.perf_counter()
        for _ in range(reps):
            teacher.encode_pixels(x.numpy())
        if teacher.device.type == "cuda":
            torch.cuda.synchronize()
        teacher_views_ps = reps * bs / (time.perf_counter() - t0)

        # 3) the real thing: build_cache end to end (image loop timed by build_cache itself)
        t0 = time.perf_counter()
        c = build_cache(data, Path(tmp) / "cache", teacher, views=args.views, batch_size=args.batch_size,
                        workers=args.workers, progress=True, templates="single")
        total_s = time.perf_counter() - t0
        m = c.manifest
    result = {
        "benchmark": "edgekd.cache_speed",
        "teacher": teacher.describe()["id"], "teacher_source": teacher.spec.source(),
        "device": str(teacher.device),
        "device_name": (torch.cuda.get_device_name(teacher.device) if teacher.device.type == "cuda"
                        else describe_cpu(cpu_facts())),
        "images": n, "valid": m["counts"]["valid"], "views": args.views, "batch_size": args.batch_size,
        "workers": args.workers,
        "cache_images_per_s": m["build"]["images_per_s_last_run"],
        "cache_loop_seconds": m["build"]["seconds_last_run"],
        "total_seconds_incl_index_and_labels": round(total_s, 2),
        "decode_render_images_per_s_1proc": round(decode_ips, 1),
        "teacher_forward_views_per_s": round(teacher_views_ps, 2),
        "environment": {"cpu_facts": cpu_facts(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                        "cpu_count": os.cpu_count(), "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
                        "python": platform.python_version()},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
