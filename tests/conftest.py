"""Shared fixtures: a tiny random open_clip teacher, tiny timm students, synthetic image folders."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TQDM_DISABLE", "1")
# the runtime's canary cache (edgekd.runtime.canary) of this test session, not the user's ~/.cache
os.environ.setdefault("EDGEKD_CACHE_DIR", tempfile.mkdtemp(prefix="edgekd-test-cache-"))

TINY_TEACHER = "edgekd-test-tiny"  # 32x32 input, 32-d embeddings, registered by edgekd.teacher.tiny
TINY_STUDENT = "test_vit"  # timm's own tiny test model
CLASSES = ("red", "green", "blue")


def load_benchmark(name: str, folder: str = "benchmarks"):
    """Import a script of benchmarks/ (not a package) as a module, for the tests of its pieces."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_image(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (40, 48), seed: int = 0) -> Path:
    """A noisy image dominated by one colour, so tiny students can learn something from it."""
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(rgb, np.float32) + rng.normal(0, 40, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """ImageFolder layout: 3 classes x 6 JPEGs of varying sizes. Read-only for tests (copy it to modify)."""
    root = tmp_path_factory.mktemp("images")
    colors = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
    for ci, name in enumerate(CLASSES):
        for i in range(6):
            make_image(root / name / f"{i:03d}.jpg", colors[name], size=(32 + 4 * i, 40 - 2 * i), seed=ci * 100 + i)
    return root


@pytest.fixture(scope="session")
def tiny_teacher():
    from edgekd.teacher.clip import load_teacher

    return load_teacher(TINY_TEACHER, random_init=True, device="cpu")
