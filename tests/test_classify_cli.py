"""`edgekd classify`: table and JSON lines output, folders, bad images skipped, label options."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_runtime_support import CLASSES, make_bundle

from edgekd.cli import cli
from edgekd.runtime.classifier import OpenVocabClassifier


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture()
def folder(image_folder, tmp_path) -> Path:
    root = tmp_path / "imgs"
    shutil.copytree(image_folder, root)
    (root / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (root / "notes.txt").write_text("not an image, ignored in folders")
    return root


def run(*args: str):
    return CliRunner(mix_stderr=False).invoke(cli, ["classify", *args]) if _has_mix_stderr() else \
        CliRunner().invoke(cli, ["classify", *args])


def _has_mix_stderr() -> bool:
    import inspect

    return "mix_stderr" in inspect.signature(CliRunner.__init__).parameters


def test_help():
    res = CliRunner().invoke(cli, ["classify", "--help"])
    assert res.exit_code == 0 and "--top-k" in res.output and "--json" in res.output


def test_json_lines_match_the_library(bundle, folder):
    res = run(str(bundle), str(folder), "--json", "--top-k", "2", "--threads", "1", "--batch-size", "4")
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(rows) == 18  # 3 classes x 6 images; broken.jpg skipped, notes.txt ignored
    assert "skipped" in res.stderr and "broken.jpg" in res.stderr and "1 skipped" in res.stderr
    clf = OpenVocabClassifier.load(bundle)
    for row in rows[:4]:
        ref = clf.classify(row["image"], top_k=2)
        assert [p["label"] for p in row["predictions"]] == [p.label for p in ref]
        assert row["predictions"][0]["prob"] == pytest.approx(ref[0].prob, abs=1e-4)


def test_table_with_label_subset_and_threshold(bundle, image_folder):
    img = str(next(image_folder.rglob("*.jpg")))
    res = run(str(bundle), img, "--label", "red", "--label", "blue", "--top-k", "5")
    assert res.exit_code == 0, res.output
    path, cells = res.stdout.strip().split("\t")
    assert path == img and cells.count("(") == 2 and "green" not in cells and "red" in cells
    res = run(str(bundle), img, "--threshold", "1.0", "--top-k", "1")
    assert res.exit_code == 0 and "unknown" in res.stdout


def test_errors(bundle, tmp_path, image_folder):
    img = str(next(image_folder.rglob("*.jpg")))
    res = run(str(bundle), str(tmp_path / "missing.jpg"))
    assert res.exit_code == 1 and "no such file" in res.output + res.stderr
    res = run(str(bundle), img, "--label", "a red car")
    assert res.exit_code == 1 and "text encoder" in res.output + res.stderr
    res = run(str(bundle), img, "--labels", str(tmp_path / "x.npz"), "--label", "cat")
    assert res.exit_code == 2
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    res = run(str(bundle), str(tmp_path / "bad.jpg"))
    assert res.exit_code == 1 and "none of the 1 images" in res.output + res.stderr
    assert set(CLASSES) >= {"red", "blue"}
