"""Dataset indexes (ImageFolder / folder / list files), content hashes, captions and descriptions, odd images."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES, make_image
from PIL import Image

from edgekd import EdgekdError
from edgekd.data.captions import load_captions, load_descriptions
from edgekd.data.images import BadImageError, load_rgb
from edgekd.data.index import build_index, file_hash


def test_imagefolder_index_is_sorted_and_labeled(image_folder):
    idx = build_index(image_folder)
    assert idx.kind == "imagefolder"
    assert idx.classes == sorted(CLASSES)
    assert idx.rel_paths == sorted(idx.rel_paths) and len(idx) == 18
    for e in idx.entries:
        assert idx.classes[e.label] == e.path.split("/")[0]
        assert e.size == (image_folder / e.path).stat().st_size
    assert build_index(image_folder).sha256 == idx.sha256  # stable


def test_index_hash_changes_with_content(image_folder, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(image_folder, root)
    before = build_index(root).sha256
    make_image(root / "red" / "000.jpg", (10, 10, 10), seed=99)  # same name, new pixels
    assert build_index(root).sha256 != before
    (root / "red" / "000.jpg").unlink()
    assert len(build_index(root)) == 17


def test_file_hash_reads_both_ends(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    data = bytearray(os.urandom(300_000))
    a.write_bytes(bytes(data))
    data[-5] ^= 0xFF  # only the tail differs
    b.write_bytes(bytes(data))
    assert file_hash(a) != file_hash(b)


def test_unlabeled_folder_recursive_and_symlink_loop(tmp_path):
    root = tmp_path / "flat"
    make_image(root / "x.png", (1, 2, 3))
    make_image(root / "deep" / "er" / "y.jpg", (1, 2, 3))
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.jpg").write_bytes(b"")
    os.symlink(root, root / "deep" / "loop")  # a cycle must not hang the scan
    idx = build_index(root)
    assert idx.kind == "folder" and idx.classes == []
    assert idx.rel_paths == ["deep/er/y.jpg", "x.png"]
    assert idx.labels == [-1, -1]


def test_csv_and_jsonl_lists(tmp_path):
    make_image(tmp_path / "imgs" / "a.jpg", (200, 0, 0))
    make_image(tmp_path / "imgs" / "b.jpg", (0, 200, 0))
    make_image(tmp_path / "imgs" / "c.jpg", (0, 0, 200))
    (tmp_path / "list.csv").write_text("path,label\nimgs/b.jpg,dog\n./imgs/a.jpg,cat\nimgs/c.jpg,\n")
    idx = build_index(tmp_path / "list.csv")
    assert idx.kind == "list" and idx.classes == ["cat", "dog"]
    assert idx.rel_paths == ["imgs/a.jpg", "imgs/b.jpg", "imgs/c.jpg"]
    assert idx.labels == [0, 1, -1]
    assert idx.abs_path(0) == tmp_path / "imgs" / "a.jpg"
    lines = [{"path": "imgs/a.jpg", "label": "cat"}, {"path": "imgs/c.jpg"}]
    (tmp_path / "list.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    j = build_index(tmp_path / "list.jsonl")
    assert j.classes == ["cat"] and j.labels == [0, -1]


@pytest.mark.parametrize("content, match", [
    ("imgs/a.jpg,x,y\n", "columns"),
    ("imgs/a.jpg\nimgs/a.jpg\n", "listed twice"),
    ("", "no images"),
])
def test_bad_list_files(tmp_path, content, match):
    (tmp_path / "l.csv").write_text(content)
    with pytest.raises(EdgekdError, match=match):
        build_index(tmp_path / "l.csv")


def test_bad_data_paths(tmp_path):
    with pytest.raises(EdgekdError, match="no such file"):
        build_index(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgekdError, match="no image files"):
        build_index(tmp_path / "empty")
    (tmp_path / "x.yaml").write_text("a: 1")
    with pytest.raises(EdgekdError, match="list file"):
        build_index(tmp_path / "x.yaml")


def test_captions_matched_by_relative_path(tmp_path):
    f = tmp_path / "caps.jsonl"
    f.write_text("\n".join([
        json.dumps({"path": "./red/000.jpg", "captions": ["a red thing", " "]}),
        json.dumps({"path": "red/000.jpg", "caption": "very red"}),
        json.dumps({"path": "elsewhere/1.jpg", "captions": ["ignored"]}),
    ]))
    caps = load_captions(f, ["red/000.jpg", "red/001.jpg"])
    assert caps == {"red/000.jpg": ["a red thing", "very red"]}
    with pytest.raises(EdgekdError, match="no caption path matches"):
        load_captions(f, ["blue/1.jpg"])
    f.write_text("{not json}\n")
    with pytest.raises(EdgekdError, match="line 1 is not JSON"):
        load_captions(f)


def test_descriptions_by_name(tmp_path):
    f = tmp_path / "d.json"
    f.write_text(json.dumps({"dog": "four legs", "cat": ["whiskers", "small"], "zebra": "stripes"}))
    d = load_descriptions(f, ["cat", "dog", "bird"])
    assert d == {"dog": ["four legs"], "cat": ["whiskers", "small"]}
    with pytest.raises(EdgekdError, match="no key matches"):
        load_descriptions(f, ["car"])
    f.write_text("[1, 2]")
    with pytest.raises(EdgekdError, match="JSON object"):
        load_descriptions(f)


def _odd_images(root: Path) -> dict[str, str | None]:
    """Write odd files; return {name: expected skip reason or None when it must decode}."""
    root.mkdir(parents=True, exist_ok=True)
    good = make_image(root / "good.jpg", (100, 100, 100), size=(64, 64))
    (root / "zero.jpg").write_bytes(b"")
    (root / "truncated.jpg").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (root / "text.jpg").write_text("definitely not a jpeg")
    Image.new("CMYK", (20, 10), (10, 20, 30, 40)).save(root / "cmyk.jpg")
    Image.fromarray(np.arange(300, dtype=np.uint16).reshape(15, 20) * 200).save(root / "deep16.png")
    Image.new("RGBA", (12, 12), (255, 0, 0, 128)).save(root / "alpha.png")
    Image.new("L", (9, 7), 77).save(root / "gray.png")
    Image.new("RGB", (1, 1), (1, 2, 3)).save(root / "one.png")
    return {"good.jpg": None, "zero.jpg": "empty file", "truncated.jpg": "corrupt image", "text.jpg": "not an image",
            "cmyk.jpg": None, "deep16.png": None, "alpha.png": None, "gray.png": None, "one.png": None}


def test_odd_images_decode_or_fail_clearly(tmp_path):
    for name, reason in _odd_images(tmp_path).items():
        if reason is None:
            img = load_rgb(tmp_path / name)
            assert img.mode == "RGB" and min(img.size) >= 1
        else:
            with pytest.raises(BadImageError) as e:
                load_rgb(tmp_path / name)
            assert e.value.reason == reason, name


def test_decompression_bomb_guard(tmp_path):
    Image.new("L", (300, 300)).save(tmp_path / "big.png")
    with pytest.raises(BadImageError, match="too large"):
        load_rgb(tmp_path / "big.png", max_pixels=10_000)
