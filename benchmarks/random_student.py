"""A random-weight student's run directory for the latency benchmarks (latency does not depend on the weights), with
1,000 random labels: the scoring cost of an ImageNet-sized label set.

    run = make_random_run(work / "run", "mobilenetv4_conv_small", 224, Preprocess(size=(224, 224)))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_random_run(run: Path, arch: str, img_size: int, preprocess, labels: int = 1000, dim: int = 512) -> Path:
    """Save a seeded random `arch` student at `img_size` with `preprocess` and a `labels`-class random label pack."""
    import torch

    from edgekd.labelpack import LabelPack
    from edgekd.students.io import save_student
    from edgekd.students.model import create_student

    torch.manual_seed(0)
    save_student(run, create_student(arch, dim, img_size=img_size, preprocess=preprocess), extra={"random_init": True})
    rng = np.random.default_rng(0)
    LabelPack([f"class {i}" for i in range(labels)], rng.normal(size=(labels, dim)).astype(np.float32),
              meta={"logit_scale": 100.0}).save(run / "labels.npz")
    return run
