"""Teacher cache: contents equal direct teacher calls, resume is byte-identical, mismatches refused, odd images
skipped, shard + merge == single build, captions."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_TEACHER, make_image
from test_data_index import _odd_images

import edgekd.teacher.cache as cache_mod
from edgekd import EdgekdError
from edgekd.data.images import load_rgb
from edgekd.labelpack import load_label_pack
from edgekd.preprocess import sample_train_view
from edgekd.teacher.cache import CacheError, CacheMismatchError, TeacherCache, build_cache
from edgekd.teacher.cache_merge import merge_caches

ARRAY_FILES = ("image_embeds.npy", "views.npy", "image_sizes.npy", "valid.npy")


def _contents(path: Path) -> dict[str, object]:
    """Every file of a cache: bytes, except the build's clock (manifest `created` and timings, label packs'
    `created`), which two builds of the same data never share."""
    out: dict[str, object] = {}
    for f in sorted(path.iterdir()):
        if f.name == "manifest.json":
            m = json.loads(f.read_text())
            m.pop("created")
            for k in ("seconds_last_run", "images_per_s_last_run"):
                m["build"].pop(k, None)
            out[f.name] = m
        elif f.suffix == ".npz":
            pack = load_label_pack(f)
            out[f.name] = (pack.class_names, pack.prompts, {k: v for k, v in pack.meta.items() if k != "created"},
                           pack.embeddings.tobytes())
        else:
            out[f.name] = f.read_bytes()
    return out


def _build(data, out, teacher, **kw):
    kw = {"views": 3, "seed": 7, "batch_size": 4, "workers": 0, "progress": False, "templates": "simple", **kw}
    return build_cache(data, out, teacher, **kw)


@pytest.fixture(scope="module")
def built(image_folder, tiny_teacher, tmp_path_factory):
    return _build(image_folder, tmp_path_factory.mktemp("c") / "cache", tiny_teacher)


def test_cache_matches_direct_teacher_calls(built, tiny_teacher, image_folder):
    c = TeacherCache.open(built.path)
    assert (c.num_images, c.num_views, c.embed_dim) == (18, 3, tiny_teacher.embed_dim)
    assert c.image_embeds.dtype == np.float16 and c.valid.all()
    assert c.teacher_id == tiny_teacher.teacher_id and c.preprocess == tiny_teacher.preprocess
    assert c.paths[0] == image_folder / c.rel_paths[0]
    assert c.class_names == ["blue", "green", "red"]
    assert [c.class_names[label] for label in c.labels] == [p.split("/")[0] for p in c.rel_paths]
    pp = tiny_teacher.preprocess
    for n in (0, 5, 17):
        img = load_rgb(c.paths[n])
        w, h = img.size
        assert tuple(c.image_sizes[n]) == (w, h)
        views = [pp.eval_view(w, h)] + [sample_train_view(np.random.default_rng([7, n, k]), w, h) for k in (1, 2)]
        np.testing.assert_allclose(c.views[n], np.asarray(views, np.float32), rtol=1e-6)
        pix = np.stack([pp.render(img, v) for v in views])
        want = tiny_teacher.encode_pixels(pix).numpy()
        np.testing.assert_allclose(c.image_embeds[n].astype(np.float32), want, atol=2e-3)
        assert np.allclose(np.linalg.norm(c.image_embeds[n].astype(np.float32), axis=1), 1, atol=2e-3)
    assert not np.allclose(c.image_embeds[0, 0], c.image_embeds[0, 1])  # augmented views differ


def test_cache_label_packs_and_manifest(built, tiny_teacher):
    c = built
    m = json.loads((c.path / "manifest.json").read_text())
    assert m["format"] == "edgekd.cache" and m["complete"] and m["counts"] == {"images": 18, "valid": 18, "skipped": 0}
    assert m["views"]["count"] == 3 and m["views"]["seed"] == 7
    assert m["dataset"]["index_sha256"] == c.index_sha256 and m["versions"]["torch"]
    assert not (c.path / "progress.json").exists()
    pack = c.label_pack
    assert pack.class_names == c.class_names and pack.teacher_id == tiny_teacher.teacher_id
    assert len(pack.prompts["red"]) == 7  # 'simple' = open_clip's 7 templates
    simple = c.label_pack_simple
    assert simple.prompts["red"] == ["a photo of a red."]
    np.testing.assert_allclose(simple.embeddings[2], tiny_teacher.encode_texts(["a photo of a red."])[0], atol=1e-5)
    c.check_teacher(tiny_teacher.teacher_id)
    with pytest.raises(CacheMismatchError, match="made by teacher"):
        c.check_teacher("ViT-B-32@0000")


def test_two_builds_write_the_same_bytes(image_folder, tiny_teacher, tmp_path):
    """Every file (arrays, index, manifest, label packs, captions) of a build is a function of its inputs."""
    caps = tmp_path / "caps.jsonl"
    caps.write_text("\n".join(json.dumps(x) for x in [
        {"path": "red/000.jpg", "captions": ["a red square", "crimson noise", "third"]},
        {"path": "green/004.jpg", "captions": ["leafy"]}]))
    desc = tmp_path / "desc.json"
    desc.write_text(json.dumps({"red": ["a red thing"], "green": ["a green thing", "leafy"], "blue": ["sky"]}))
    kw = {"views": 2, "captions": caps, "max_captions": 2, "descriptions": desc, "chunk_size": 8}
    a = _build(image_folder, tmp_path / "a", tiny_teacher, **kw)
    b = _build(image_folder, tmp_path / "b", tiny_teacher, **kw)
    first, second = _contents(a.path), _contents(b.path)
    assert set(first) == set(cache_mod.CACHE_FILES) - {cache_mod.PROGRESS}  # every file, no progress.json left
    assert first == second
    assert first["manifest.json"]["captions"]["count"] == 3 and first["manifest.json"]["labels"]["descriptions_sha256"]


def test_rebuild_of_complete_cache_is_a_noop_and_mismatch_refused(built, tiny_teacher, image_folder, tmp_path):
    before = (built.path / "image_embeds.npy").stat().st_mtime_ns
    _build(image_folder, built.path, tiny_teacher)
    assert (built.path / "image_embeds.npy").stat().st_mtime_ns == before
    with pytest.raises(CacheMismatchError, match="views/seed.*--overwrite"):
        _build(image_folder, built.path, tiny_teacher, views=2)
    changed = tmp_path / "changed"
    shutil.copytree(image_folder, changed)
    make_image(changed / "red" / "new.jpg", (255, 0, 0))
    copy = tmp_path / "cache"
    shutil.copytree(built.path, copy)
    with pytest.raises(CacheMismatchError, match="dataset"):
        _build(changed, copy, tiny_teacher)
    c = _build(changed, copy, tiny_teacher, overwrite=True)
    assert c.num_images == 19


def test_resume_after_crash_is_byte_identical(built, tiny_teacher, image_folder, tmp_path, monkeypatch):
    calls = []

    def crash(out, done):
        calls.append(done)
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(cache_mod, "_chunk_done", crash)
    out = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="simulated"):
        _build(image_folder, out, tiny_teacher, chunk_size=8)
    assert calls == [8]
    assert json.loads((out / "progress.json").read_text())["done"] == 8
    with pytest.raises(CacheError, match="incomplete"):
        TeacherCache.open(out)
    monkeypatch.undo()
    # resuming with another batch size still follows the interrupted build's batching
    c = _build(image_folder, out, tiny_teacher, chunk_size=8, batch_size=5)
    resumed, whole = _contents(out), _contents(built.path)
    for m in (resumed, whole):
        m["manifest.json"]["build"].pop("chunk_size")  # the only setting that differs
    assert resumed == whole
    assert c.manifest["complete"]


def test_resume_after_sigkill_in_subprocess(built, tiny_teacher, image_folder, tmp_path):
    out = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import os, signal
        import edgekd.teacher.cache as cm
        from edgekd.teacher.clip import load_teacher
        cm._chunk_done = lambda out, done: os.kill(os.getpid(), signal.SIGKILL) if done >= 8 else None
        t = load_teacher({TINY_TEACHER!r}, random_init=True, device="cpu")
        cm.build_cache({str(image_folder)!r}, {str(out)!r}, t, views=3, seed=7, batch_size=4, workers=1,
                       progress=False, templates="simple", chunk_size=4)
    """)
    # stderr to a file, not a pipe: the test must not depend on the worker's lifetime to finish reading
    with open(tmp_path / "stderr.txt", "wb") as err:
        r = subprocess.run([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=err, timeout=120)
    assert r.returncode == -9, (tmp_path / "stderr.txt").read_text()[-2000:]
    assert json.loads((out / "progress.json").read_text())["done"] == 8
    _build(image_folder, out, tiny_teacher, workers=1, chunk_size=4)  # the same teacher, seeded, in this process
    for name in ARRAY_FILES:
        assert (out / name).read_bytes() == (built.path / name).read_bytes(), name


def test_odd_images_are_skipped_and_reported(tiny_teacher, tmp_path):
    expected = _odd_images(tmp_path / "odd")
    c = _build(tmp_path / "odd", tmp_path / "c", tiny_teacher, views=2, workers=1)
    skipped = {s["path"]: s["reason"] for s in c.manifest["skipped"]}
    assert {p: r.split(":")[0] for p, r in skipped.items()} == {p: r for p, r in expected.items() if r}
    assert c.manifest["counts"] == {"images": 9, "valid": 6, "skipped": 3}
    for n, p in enumerate(c.rel_paths):
        assert c.valid[n] == (p not in skipped)
        if p in skipped:
            assert not c.image_embeds[n].any() and not c.views[n].any()
        else:
            assert np.isfinite(c.image_embeds[n].astype(np.float32)).all() and c.image_embeds[n].any()
    assert c.label_pack is None and c.class_names == []  # unlabeled folder: no label packs
    assert (c.labels == -1).all()


def test_shards_merge_to_the_single_build(built, tiny_teacher, image_folder, tmp_path):
    shards = [_build(image_folder, tmp_path / f"s{i}", tiny_teacher, shard=f"{i}/3") for i in (2, 0, 1)]
    assert sorted(s.num_images for s in shards) == [6, 6, 6] and shards[1].rel_paths == built.rel_paths[:6]
    merged = merge_caches([s.path for s in shards], tmp_path / "merged", progress=False)
    for name in ARRAY_FILES:
        np.testing.assert_array_equal(np.load(tmp_path / "merged" / name), np.load(built.path / name))
    assert merged.rel_paths == built.rel_paths and merged.manifest["shard"] is None
    assert merged.index_sha256 == built.index_sha256
    assert load_label_pack(tmp_path / "merged" / "labels.npz").class_names == built.class_names
    with pytest.raises(EdgekdError, match="missing \\[1\\]"):
        merge_caches([shards[0].path, shards[1].path], tmp_path / "m2", progress=False)
    other = _build(image_folder, tmp_path / "o1", tiny_teacher, shard="1/3", seed=8)
    with pytest.raises(CacheMismatchError, match="views"):
        merge_caches([shards[0].path, other.path, shards[2].path], tmp_path / "m3", progress=False)


def test_captions_are_embedded_with_mask(image_folder, tiny_teacher, tmp_path):
    caps = tmp_path / "caps.jsonl"
    caps.write_text("\n".join(json.dumps(x) for x in [
        {"path": "red/000.jpg", "captions": ["a red square", "crimson noise", "third"]},
        {"path": "blue/002.jpg", "captions": ["blue noise"]},
    ]))
    c = _build(image_folder, tmp_path / "c", tiny_teacher, views=1, captions=caps, max_captions=2)
    assert c.caption_embeds.shape == (18, 2, tiny_teacher.embed_dim) and c.caption_mask.shape == (18, 2)
    r = c.rel_paths.index("red/000.jpg")
    b = c.rel_paths.index("blue/002.jpg")
    assert c.caption_mask.sum() == 3 and c.caption_mask[r].all() and c.caption_mask[b].tolist() == [True, False]
    want = tiny_teacher.encode_texts(["a red square", "crimson noise"]).numpy()
    np.testing.assert_allclose(c.caption_embeds[r].astype(np.float32), want, atol=2e-3)
    assert c.manifest["captions"]["count"] == 3


def test_bad_arguments(image_folder, tiny_teacher, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thing.txt").write_text("x")
    with pytest.raises(EdgekdError, match="not an edgekd cache"):
        _build(image_folder, tmp_path / "busy", tiny_teacher)
    with pytest.raises(EdgekdError, match="--shard"):
        _build(image_folder, tmp_path / "x", tiny_teacher, shard="3/3")
    with pytest.raises(CacheError, match="no such cache"):
        TeacherCache.open(tmp_path / "nope")
    with pytest.raises(CacheError, match="no manifest.json"):
        TeacherCache.open(Path(tmp_path / "busy"))
