"""Write run directories of randomly initialised students (for speed benchmarks: latency does not depend on the
weights), so `edgekd export` can turn them into fp32/INT8 bundles.

    python benchmarks/make_random_runs.py OUT_DIR mobilenetv4_conv_small resnet18 ... [--img-size 224 --embed-dim 512]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from edgekd.students.io import save_student
from edgekd.students.model import create_student


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("archs", nargs="+")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--embed-dim", type=int, default=512)
    args = ap.parse_args()
    for arch in args.archs:
        run = args.out / arch
        if (run / "model.safetensors").is_file():
            print(f"{run}: exists")
            continue
        torch.manual_seed(0)
        student = create_student(arch, args.embed_dim, img_size=args.img_size)
        save_student(run, student, extra={"random_init": True, "note": "random weights, for speed benchmarks only"})
        print(f"{run}: {sum(p.numel() for p in student.parameters()) / 1e6:.2f} M parameters")


if __name__ == "__main__":
    main()
