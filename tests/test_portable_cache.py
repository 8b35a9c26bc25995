"""A teacher cache copied elsewhere together with its images: distill needs --data-root, eval needs nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import TINY_STUDENT

from edgekd.cli import cli


@pytest.fixture(scope="module")
def moved(image_folder, tiny_teacher, tmp_path_factory) -> tuple[Path, Path]:
    """(cache, images) built under one folder, then moved to another: the recorded root no longer exists."""
    from edgekd.teacher.cache import build_cache

    a = tmp_path_factory.mktemp("machine_a")
    shutil.copytree(image_folder, a / "images")
    build_cache(a / "images", a / "cache", tiny_teacher, views=2, workers=0, progress=False)
    b = tmp_path_factory.mktemp("machine_b")
    shutil.move(str(a / "images"), b / "images")
    shutil.move(str(a / "cache"), b / "cache")
    return b / "cache", b / "images"


def _distill(cache: Path, out: Path, *extra: str):
    args = ["distill", "--cache", str(cache), "--student", TINY_STUDENT, "--out", str(out), "--img-size", "32",
            "--batch-size", "6", "--workers", "1", "--device", "cpu", "--max-steps", "1", "--no-progress", *extra]
    return CliRunner().invoke(cli, args)


def test_moved_cache_without_data_root_names_the_option(moved, tmp_path):
    cache, _ = moved
    r = _distill(cache, tmp_path / "run")
    assert r.exit_code == 1
    assert "images not found at the dataset root recorded" in r.output and "--data-root DIR" in r.output
    assert len(r.output.strip().splitlines()) == 1  # one line, not a worker traceback


def test_wrong_data_root_is_named(moved, tmp_path):
    cache, _ = moved
    r = _distill(cache, tmp_path / "run", "--data-root", str(tmp_path))
    assert r.exit_code == 1 and f"--data-root {tmp_path}" in r.output and "images not found" in r.output


def test_moved_cache_trains_with_data_root(moved, tmp_path):
    cache, images = moved
    r = _distill(cache, tmp_path / "run", "--data-root", str(images))
    assert r.exit_code == 0, r.output
    assert "done: 1 steps" in r.output


def test_eval_uses_a_moved_teacher_cache_by_relative_path(moved, tiny_teacher, tmp_path):
    """eval reads images from --data, and takes teacher embeddings from the cache by relative path and size: a
    moved cache needs no --data-root there."""
    from edgekd.students.io import save_student
    from edgekd.students.model import create_student

    cache, images = moved
    run = tmp_path / "run"
    save_student(run, create_student(TINY_STUDENT, tiny_teacher.embed_dim, img_size=32,
                                     teacher_id=tiny_teacher.teacher_id))
    r = CliRunner().invoke(cli, ["eval", str(run), "--data", str(images), "--teacher-cache", str(cache),
                                 "--labels", str(cache / "labels.npz"), "--shots", "0", "--workers", "0",
                                 "--device", "cpu", "--json", "--no-metrics-csv"])
    assert r.exit_code == 0, r.output
    assert '"source": "cache"' in r.output
