"""edgekd.resize: one resize implementation for training and runtime, OpenCV optional, frames at the model's size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_distill import build_tiny_cache, cfg_for
from test_runtime_support import gate_images, label_pack, make_bundle, teacher

from edgekd._optional import MissingDependencyError
from edgekd.preprocess import Preprocess
from edgekd.resize import RESIZE_METHODS, pixel_box, resize_array

FAST = "cv2-area-linear"


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """uint8 [h, w, 3] with smooth structure and fine texture (so resampling differences show)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    zone = 127.5 * (1 + np.cos((xx ** 2 + yy ** 2) * (np.pi / (3.0 * max(h, w)))))[..., None]
    return np.clip(0.7 * zone + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def fast_bundle(tmp_path_factory) -> Path:
    """A tiny gated ONNX bundle of a student whose preprocessing resizes with cv2-area-linear."""
    import torch

    from edgekd.export.pipeline import export_bundle
    from edgekd.students.io import save_student
    from edgekd.students.model import create_student

    t = teacher()
    torch.manual_seed(0)
    pp = Preprocess.from_dict({**t.preprocess.to_dict(), "resize_method": FAST})
    s = create_student("test_vit", t.embed_dim, img_size=32, preprocess=pp, teacher_id=t.teacher_id).eval()
    run = tmp_path_factory.mktemp("fast") / "run"
    save_student(run, s)
    label_pack().save(run / "labels.npz")
    return export_bundle(run, "onnx", "fp32", run.parent / "bundle", val_dir=gate_images(), small_gate_ok=True,
                         overwrite=True)


@pytest.fixture(scope="module")
def cache(image_folder, tiny_teacher, tmp_path_factory) -> Path:
    return build_tiny_cache(image_folder, tmp_path_factory.mktemp("c"), tiny_teacher, views=3)


def test_training_views_and_runtime_frames_are_bit_identical(cache, tiny_teacher):
    """The distill data path renders a cached view box exactly as the runtime renders a BGR frame with that box."""
    from edgekd.data.images import load_rgb
    from edgekd.distill.data import CachedViewDataset
    from edgekd.teacher.cache import TeacherCache

    c = TeacherCache.open(cache)
    for method in ("cv2-area-linear", "numpy-area-linear", "pillow"):
        pp = Preprocess.from_dict({**tiny_teacher.preprocess.to_dict(), "resize_method": method}).with_size(12)
        ds = CachedViewDataset(cache, pp, seed=0)
        for row in range(0, 18, 5):
            item = ds[(row, 1)]
            view = tuple(float(v) for v in c.views[row, int(item["view"])])
            frame_bgr = np.ascontiguousarray(np.asarray(load_rgb(c.paths[row]))[..., ::-1])
            runtime = pp.normalize(pp.render(frame_bgr, view, color="bgr"))
            assert np.array_equal(item["pixels"].numpy(), runtime), (method, row)


def test_bundle_names_its_method_and_runtime_matches_training(fast_bundle):
    from edgekd.runtime.classifier import OpenVocabClassifier

    meta = json.loads((fast_bundle / "edgekd.json").read_text())
    assert meta["preprocess"]["resize_method"] == FAST
    clf = OpenVocabClassifier.load(fast_bundle, threads=1)
    assert clf.preprocess.resize_method == FAST
    frame = textured(120, 160)
    train_pixels = clf.preprocess(Image.fromarray(frame))  # what training renders from the decoded image
    assert np.array_equal(clf.prepare(np.ascontiguousarray(frame[..., ::-1]), color="bgr"), train_pixels)
    assert np.array_equal(clf.prepare(frame), train_pixels)


def test_missing_opencv_fails_in_one_line_and_falls_back(fast_bundle, monkeypatch):
    import edgekd.resize
    from edgekd.runtime.classifier import OpenVocabClassifier

    clf = OpenVocabClassifier.load(fast_bundle, threads=1)
    frame = textured(96, 128, seed=3)
    with_cv2 = clf.embed(frame)
    monkeypatch.setattr(edgekd.resize, "is_available", lambda m: m != "cv2")
    with pytest.raises(MissingDependencyError) as e:
        OpenVocabClassifier.load(fast_bundle, threads=1)
    msg = str(e.value)
    assert "\n" not in msg and "pip install 'edgekd[camera]'" in msg and FAST in msg and "resize_fallback" in msg
    fb = OpenVocabClassifier.load(fast_bundle, threads=1, resize_fallback=True)
    assert fb.preprocess.resize_method == "numpy-area-linear"
    assert float(with_cv2 @ fb.embed(frame)) > 0.999


@pytest.mark.parametrize("shape", [(480, 640), (720, 1280), (333, 517), (32, 32), (100, 37)])
def test_numpy_fallback_within_one_grey_level_of_opencv(shape):
    """The bound the fallback promises (bit-exact when shrinking on the OpenCV here; 1 level when enlarging)."""
    frame = textured(*shape, seed=shape[0])
    for size in [(224, 224), (128, 128), (96, 160), (64, 64)]:
        box = pixel_box((0.0, 0.0, float(shape[1]), float(shape[0])), shape, size)
        crop = frame[box[1]:box[3], box[0]:box[2]]
        a = resize_array(crop, size, "cv2-area-linear").astype(np.int16)
        b = resize_array(crop, size, "numpy-area-linear").astype(np.int16)
        assert a.shape == b.shape == (*size, 3)
        assert np.abs(a - b).max() <= 1, (shape, size)


def test_frames_at_model_size_skip_resizing(fast_bundle, monkeypatch):
    """A camera negotiated at the model's size: no resampling, the frame's own pixels (channel order fixed)."""
    import edgekd.preprocess
    from edgekd.runtime.classifier import OpenVocabClassifier

    def no_resize(*a, **k):
        raise AssertionError("resized a frame already at the model's size")

    frame = textured(32, 32, seed=5)
    bgr = np.ascontiguousarray(frame[..., ::-1])
    for bundle in (fast_bundle, make_bundle(fast_bundle.parent / "pillow_bundle")):
        clf = OpenVocabClassifier.load(bundle, threads=1)
        before = clf.prepare(bgr, color="bgr")
        with monkeypatch.context() as m:
            m.setattr(edgekd.preprocess, "resize_array", no_resize)
            m.setattr(edgekd.preprocess, "_render_pillow", no_resize)
            assert np.array_equal(clf.prepare(bgr, color="bgr"), clf.preprocess.normalize(frame))
            assert np.array_equal(clf.prepare(bgr, color="bgr"), before)  # the same pixels as the resizing path
            clf.classify(bgr, color="bgr")
        assert np.array_equal(clf.preprocess.render(Image.fromarray(frame)), frame)


def test_preprocess_defaults_and_refusals():
    old = Preprocess.from_dict({"size": [32, 32], "interpolation": "bicubic"})  # caches/runs/bundles before methods
    assert old.resize_method == "pillow" and old.to_dict()["resize_method"] == "pillow"
    with pytest.raises(ValueError, match="unknown resize_method"):
        Preprocess(resize_method="magic")
    with pytest.raises(ValueError, match="longest"):
        Preprocess(resize_method=FAST, resize_mode="longest")
    assert set(RESIZE_METHODS) >= {"pillow", "cv2-area-linear", "numpy-area-linear"}
    from edgekd.export.frame_head import unsupported_reason

    assert FAST in unsupported_reason(Preprocess(resize_method=FAST))
    # box rounding: whole pixels, trimmed (centred) to the decimation factor, never empty
    assert pixel_box((0.4, 0.0, 640.0, 480.0), (480, 640), (224, 224)) == (0, 0, 640, 480)
    assert pixel_box((80.0, 0.0, 561.0, 480.0), (480, 640), (224, 224)) == (80, 0, 560, 480)
    assert pixel_box((5.0, 5.0, 5.2, 5.2), (10, 10), (4, 4)) == (5, 5, 6, 6)


def test_old_cache_manifest_matches_new_preprocess_dicts():
    from edgekd.teacher.cache import _identity

    new = {"teacher": {"id": "t"}, "preprocess": Preprocess().to_dict(), "views": {}, "dataset": {"index_sha256": "x"}}
    old = {**new, "preprocess": {k: v for k, v in new["preprocess"].items() if k != "resize_method"}}
    assert _identity(old) == _identity(new)


def test_distill_resize_method_reaches_the_run_config(cache, tmp_path):
    from edgekd.distill.loop import train
    from edgekd.students.io import load_student_config

    run = tmp_path / "run"
    train(cfg_for(cache, run, epochs=1, max_steps=1, resize_method="numpy-area-linear"), progress=False)
    assert load_student_config(run).get_preprocess().resize_method == "numpy-area-linear"
    from click.testing import CliRunner

    from edgekd.cli import cli

    res = CliRunner().invoke(cli, ["distill", "--help"])
    assert res.exit_code == 0 and "--resize-method" in res.output


def test_info_says_how_old_and_new_bundles_resize(fast_bundle):
    from edgekd.info import describe as describe_path
    from edgekd.resize import describe

    assert describe({"interpolation": "bicubic"}).startswith("pillow bicubic (recorded before resize methods")
    assert "edgekd[camera]" in describe({"resize_method": FAST})
    assert describe_path(fast_bundle)["resize"].startswith(FAST)


def test_deepstream_config_says_nvinfer_cannot_reproduce_the_method(fast_bundle):
    from edgekd.deepstream import build_nvinfer_config
    from edgekd.runtime.bundle import read_bundle

    cfg = build_nvinfer_config(read_bundle(fast_bundle), "model.onnx")
    assert cfg.properties["scaling-filter"] == 1 and any(FAST in n for n in cfg.notes)


def test_resume_refuses_another_resize_method(cache, tmp_path):
    from edgekd import EdgekdError
    from edgekd.distill.loop import train

    run = tmp_path / "run"
    train(cfg_for(cache, run, epochs=1, max_steps=1), progress=False)
    with pytest.raises(EdgekdError, match="resize_method"):
        train(cfg_for(cache, run, epochs=1, max_steps=2, resize_method=FAST), resume=True, progress=False)
