"""Student training speed: from the teacher cache vs with the teacher running live (--online-teacher).

Each configuration runs in its own subprocess (so peak RSS is its own) for `--steps` optimizer steps after
`--warmup-steps`; images/s counts the steps after warm-up only, timed with perf_counter (CUDA synchronised).

    python benchmarks/train_speed.py --cache CACHE [--student mobilenetv4_conv_small] [--img-size 128 224]
        [--batch-size 32] [--steps 20] [--warmup-steps 3] [--workers 2] [--device cpu] [--out benchmarks/results]

CACHE is any `edgekd cache` directory (e.g. a few hundred CIFAR-10 images with `--random-teacher`, ViT-B-32).
Writes train_speed.json and train_speed.md to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgekd.cpu import cpu_facts
from edgekd.cpu import describe as describe_cpu


def run_one(args: argparse.Namespace) -> dict:
    """One configuration, in this process: train for warm-up + steps and time the steps after warm-up."""
    import torch

    from edgekd.distill.config import DistillConfig, recipe_loss_config
    from edgekd.distill.loop import train

    stamps: list[float] = []
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def on_step(step: int, parts: dict) -> bool:
        sync()
        stamps.append(time.perf_counter())
        return False

    total = args.warmup_steps + args.steps
    with tempfile.TemporaryDirectory() as out:
        cfg = DistillConfig(cache=args.cache, student=args.student, out=out, img_size=args.one_size,
                            batch_size=args.batch_size, epochs=10_000, max_steps=total, workers=args.workers,
                            device=args.device, online_teacher=args.one_mode == "online", log_every=10_000,
                            loss=recipe_loss_config("default"))
        train(cfg, progress=False, on_step=on_step)
    timed = stamps[args.warmup_steps:]
    seconds = timed[-1] - stamps[args.warmup_steps - 1] if args.warmup_steps else timed[-1] - timed[0]
    n_steps = len(timed) if args.warmup_steps else len(timed) - 1
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    row = {"mode": args.one_mode, "img_size": args.one_size, "student": args.student, "batch": args.batch_size,
           "steps": n_steps, "seconds": round(seconds, 3),
           "images_per_s": round(n_steps * args.batch_size / seconds, 2),
           "peak_rss_mb": round(rss_kb / 1024, 1), "peak_worker_rss_mb": round(child_kb / 1024, 1),
           "device": args.device, "workers": args.workers, "threads": torch.get_num_threads()}
    if args.device.startswith("cuda"):
        row["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", required=True)
    p.add_argument("--student", default="mobilenetv4_conv_small")
    p.add_argument("--img-size", type=int, nargs="+", default=[128, 224])
    p.add_argument("--modes", nargs="+", default=["cache", "online"], choices=["cache", "online"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--one-mode", help=argparse.SUPPRESS)
    p.add_argument("--one-size", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one_mode:
        print("ROW " + json.dumps(run_one(args)), flush=True)
        return

    import torch

    from edgekd import __version__

    rows = []
    for size in args.img_size:
        for mode in args.modes:
            cmd = [sys.executable, __file__, *sys.argv[1:], "--one-mode", mode, "--one-size", str(size)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            line = next((ln for ln in r.stdout.splitlines() if ln.startswith("ROW ")), None)
            if r.returncode != 0 or line is None:  # a failed configuration is a row, never hidden
                row = {"mode": mode, "img_size": size, "status": "failed", "reason": r.stderr.strip()[-500:]}
            else:
                row = {**json.loads(line[4:]), "status": "ok"}
            print(json.dumps(row), flush=True)
            rows.append(row)
    env = {"python": platform.python_version(), "torch": torch.__version__, "edgekd": __version__,
           "cpu": describe_cpu(cpu_facts()), "cpu_facts": cpu_facts(), "cpu_count": os.cpu_count(), "cache": args.cache,
           "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_speed.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=2) + "\n")
    lines = [f"# Student training speed ({args.student}, batch {args.batch_size}, {args.device})", "",
             f"torch {env['torch']}, {env['cpu_count']} CPUs; cache `{args.cache}`", "",
             "| img size | teacher | images/s | peak RSS MB | worker peak RSS MB | status |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['img_size']} | {r['mode']} | {r.get('images_per_s', '-')} | {r.get('peak_rss_mb', '-')} | "
                     f"{r.get('peak_worker_rss_mb', '-')} | {r['status']} |")
    (out / "train_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
