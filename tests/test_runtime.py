"""edgekd.runtime end to end from a tiny exported student: parity with torch, labels, few-shot, thresholds, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_runtime_support import CLASSES, label_pack, make_bundle, teacher, torch_embed

from edgekd import EdgekdError
from edgekd.labelpack import LabelPack, LabelPackMismatchError
from edgekd.runtime.bundle import CorruptBundleError
from edgekd.runtime.classifier import OpenVocabClassifier


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def bundle_in_graph(tmp_path_factory, image_folder) -> Path:
    # the real exporter with its parity gate, preprocessing in the graph and label scores baked in as a 2nd output
    return make_bundle(tmp_path_factory.mktemp("bundle_ig") / "b", in_graph=True, with_scores=True,
                       val_dir=image_folder)


@pytest.fixture(scope="module")
def clf(bundle) -> OpenVocabClassifier:
    return OpenVocabClassifier.load(bundle, threads=1)


@pytest.fixture(scope="module")
def paths(image_folder) -> list[Path]:
    return sorted(image_folder.rglob("*.jpg"))


def test_runtime_imports_no_torch(bundle, image_folder):
    code = (
        "import sys, edgekd.runtime as r\n"
        "import edgekd.runtime.classifier, edgekd.runtime.text, edgekd.runtime.labels, edgekd.runtime.bundle\n"
        f"clf = r.OpenVocabClassifier.load({str(bundle)!r})\n"
        f"p = clf.classify({str(next(image_folder.rglob('*.jpg')))!r}, top_k=2)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'open_clip', 'timm', 'torchvision'))\n"
        "print(len(p), bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2 []"
    # the `edgekd classify` command is torch-free too
    code = ("import sys\nfrom edgekd.cli import main\ntry:\n"
            f"    main(['classify', {str(bundle)!r}, {str(image_folder / 'red')!r}, '--json'])\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'open_clip', 'timm')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]" and out.stdout.count('"predictions"') == 6


@pytest.mark.parametrize("in_graph", [False, True])
def test_embeddings_match_torch_student(in_graph, bundle, bundle_in_graph, paths):
    clf = OpenVocabClassifier.load(bundle_in_graph if in_graph else bundle)
    assert clf.in_graph == in_graph and clf.info.input_name == ("frames" if in_graph else "pixels")
    ref = torch_embed(paths)
    got = clf.embed_batch(paths, batch_size=5)
    assert got.shape == ref.shape == (len(paths), 32)
    np.testing.assert_allclose(got, ref, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # the same image as path, PIL image and numpy frame gives one embedding
    img = Image.open(paths[3]).convert("RGB")
    for x in (paths[3], str(paths[3]), img, np.asarray(img)):
        np.testing.assert_allclose(clf.embed(x), ref[3], atol=2e-5)


def test_predictions_match_torch_student_and_labels(clf, paths):
    pack = label_pack()
    cos = torch_embed(paths) @ pack.embeddings.T
    logits = teacher().logit_scale * cos
    prob = np.exp(logits - logits.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    results = clf.classify_batch(paths, top_k=3)
    for r, preds in enumerate(results):
        order = np.argsort(-cos[r])[:3]
        assert [p.label for p in preds] == [CLASSES[i] for i in order]
        np.testing.assert_allclose([p.score for p in preds], cos[r, order], atol=3e-5)
        np.testing.assert_allclose([p.prob for p in preds], prob[r, order], atol=3e-3)
        single = clf.classify(paths[r], top_k=3)
        assert [p.label for p in single] == [p.label for p in preds]
        np.testing.assert_allclose([p.score for p in single], [p.score for p in preds], atol=1e-5)
    assert len(clf.classify(paths[0], top_k=99)) == len(CLASSES)


def test_bgr_frames_equal_rgb(clf, paths):
    rgb = np.asarray(Image.open(paths[5]).convert("RGB"))
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    np.testing.assert_allclose(clf.embed(bgr, color="bgr"), clf.embed(rgb), atol=1e-6)
    assert not np.allclose(clf.embed(bgr), clf.embed(rgb), atol=1e-3)  # the colour order matters
    bgra = np.concatenate([bgr, np.full(bgr.shape[:2] + (1,), 255, np.uint8)], axis=2)
    np.testing.assert_allclose(clf.embed(bgra, color="bgr"), clf.embed(rgb), atol=1e-6)


def test_frames_of_any_size(clf):
    rng = np.random.default_rng(0)
    for h, w in [(1, 1), (1, 300), (300, 1), (480, 640), (7, 5)]:
        frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        preds = clf.classify(frame, top_k=2)
        assert len(preds) == 2 and preds[0].score >= preds[1].score
    grey = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    np.testing.assert_allclose(clf.embed(grey), clf.embed(np.repeat(grey[:, :, None], 3, 2)), atol=1e-6)
    stacked = rng.integers(0, 256, (3, 40, 50, 3), dtype=np.uint8)
    assert len(clf.classify_batch(stacked)) == 3


def test_label_swapping_and_compatibility(bundle, paths, tmp_path):
    clf = OpenVocabClassifier.load(bundle)
    backend = clf.backend
    full = clf.classify(paths[0], top_k=4)
    clf.set_labels(["blue", "red"])  # names of the current pack: a subset, no text encoder needed
    assert clf.class_names == ["blue", "red"] and clf.backend is backend
    sub = clf.classify(paths[0], top_k=2)
    assert {p.label for p in sub} == {"blue", "red"}
    ref = {p.label: p.score for p in full}
    assert all(abs(p.score - ref[p.label]) < 1e-6 for p in sub)
    other = LabelPack(["x", "y"], np.eye(2, 32, dtype=np.float32), meta=dict(label_pack().meta))
    other.save(tmp_path / "xy.npz")
    clf.set_labels(tmp_path / "xy.npz")
    assert clf.class_names == ["x", "y"]
    wrong_dim = LabelPack(["x"], np.ones((1, 16), np.float32), meta={"teacher_id": teacher().teacher_id})
    with pytest.raises(LabelPackMismatchError, match="16-d"):
        clf.set_labels(wrong_dim)
    wrong_teacher = LabelPack(["x"], np.ones((1, 32), np.float32), meta={"teacher_id": "ViT-B-32@0123456789abcdef"})
    with pytest.raises(LabelPackMismatchError, match="ViT-B-32"):
        clf.set_labels(wrong_teacher)
    with pytest.raises(EdgekdError, match="text encoder"):
        clf.set_labels(["a red car"])  # not in the pack, and no text encoder in this bundle
    assert clf.class_names == ["x", "y"]  # refused swaps keep the old set


def test_few_shot_add_examples_and_save(bundle, image_folder, tmp_path):
    clf = OpenVocabClassifier.load(bundle)
    rng = np.random.default_rng(1)
    purple = [np.clip(rng.normal((150, 20, 160), 30, (40 + i, 50, 3)), 0, 255).astype(np.uint8) for i in range(4)]
    clf.add_examples("purple thing", purple[:3])
    embs = clf.embed_batch(purple[:3])
    proto = embs.mean(0) / np.linalg.norm(embs.mean(0))
    i = clf.class_names.index("purple thing")
    np.testing.assert_allclose(clf.label_set.pack.embeddings[i], proto, atol=1e-6)
    assert clf.classify(purple[3], top_k=1)[0].label == "purple thing"
    # mixing with the text embedding of an existing label
    text = label_pack().embeddings[CLASSES.index("red")]
    red = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((image_folder / "red").glob("*.jpg"))[:3]]
    clf.add_examples("red", red, text_weight=0.25)
    e = clf.embed_batch(red).mean(0)
    mixed = 0.75 * e / np.linalg.norm(e) + 0.25 * text
    np.testing.assert_allclose(clf.label_set.pack.embeddings[clf.class_names.index("red")],
                               mixed / np.linalg.norm(mixed), atol=1e-6)
    with pytest.raises(EdgekdError, match="text embedding"):
        clf.add_examples("brand new", purple, text_weight=0.5)
    clf.set_thresholds(per_class={"purple thing": 0.99})
    out = clf.save_labels(tmp_path / "taught.npz")
    clf2 = OpenVocabClassifier.load(bundle, labels=out)
    assert clf2.class_names == clf.class_names
    np.testing.assert_allclose(clf2.label_set.pack.embeddings, clf.label_set.pack.embeddings, atol=1e-7)
    assert clf2.label_set.thresholds[clf2.class_names.index("purple thing")] == pytest.approx(0.99)
    # few-shot on a bundle without labels starts a new set
    bare = OpenVocabClassifier.load(make_bundle(tmp_path / "bare", labels=False))
    with pytest.raises(EdgekdError, match="no labels"):
        bare.classify(purple[0])
    bare.add_examples("purple thing", purple[:2])
    assert bare.classify(purple[3])[0].label == "purple thing"


def test_unknown_threshold(bundle, paths):
    clf = OpenVocabClassifier.load(bundle)
    best = clf.classify(paths[0], top_k=3)
    clf.set_thresholds(default=best[0].score + 1e-3)
    unk = clf.classify(paths[0], top_k=3)
    assert unk[0].label == "unknown" and unk[0].is_unknown and unk[0].score == pytest.approx(best[0].score)
    assert [p.label for p in unk[1:]] == [p.label for p in best[:2]]
    clf.set_thresholds(default=best[0].score - 1e-3)
    assert clf.classify(paths[0], top_k=3) == best
    clf.set_thresholds(per_class={best[0].label: 0.999999}, on="prob", unknown_label="?")
    assert clf.classify(paths[0])[0].label in ("?", best[0].label)
    assert clf.classify(paths[0])[0].label == ("?" if best[0].prob < 0.999999 else best[0].label)
    with pytest.raises(ValueError, match="threshold"):
        clf.set_thresholds(default=2.0)
    with pytest.raises(EdgekdError, match="no such class"):
        clf.set_thresholds(per_class={"zebra": 0.3})
    clf.set_thresholds()
    assert clf.classify(paths[0], top_k=3) == best


def test_concurrent_classify_is_consistent(clf, paths):
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    expected = [clf.classify(f, top_k=2) for f in frames]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda f: clf.classify(f, top_k=2), frames * 3))
    assert got == expected * 3


def test_corrupt_and_missing_bundles(bundle, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(bundle, bad)
    data = bytearray((bad / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(CorruptBundleError, match="sha256 mismatch"):
        OpenVocabClassifier.load(bad)
    (bad / "labels.npz").unlink()
    with pytest.raises(CorruptBundleError, match="labels.npz"):
        OpenVocabClassifier.load(bad, verify=False)
    with pytest.raises(EdgekdError, match="no such bundle"):
        OpenVocabClassifier.load(tmp_path / "nope")
    (bad / "edgekd.json").write_text("{not json")
    with pytest.raises(CorruptBundleError, match="unreadable bundle metadata"):
        OpenVocabClassifier.load(bad)
    (bad / "edgekd.json").write_text(json.dumps({"format": "edgekd.bundle", "files": {"model": "../x.onnx"}}))
    with pytest.raises(CorruptBundleError, match="inside the bundle"):
        OpenVocabClassifier.load(bad)
    (bad / "edgekd.json").write_text(json.dumps({"format": "edgekd.cache"}))
    with pytest.raises(CorruptBundleError, match="not an edgekd bundle"):
        OpenVocabClassifier.load(bad)


def test_bad_inputs_give_clear_errors(clf, tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        clf.classify(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="HxWx3"):
        clf.classify(np.zeros((10, 10, 2), np.uint8))
    with pytest.raises(ValueError, match="empty frame"):
        clf.classify(np.zeros((0, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="color"):
        clf.classify(np.zeros((10, 10, 3), np.uint8), color="hsv")
    with pytest.raises(ValueError, match="top_k"):
        clf.classify(np.zeros((10, 10, 3), np.uint8), top_k=0)
    with pytest.raises(EdgekdError, match="missing.jpg"):
        clf.classify(tmp_path / "missing.jpg")
    (tmp_path / "junk.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(EdgekdError, match="not an image"):
        clf.classify(tmp_path / "junk.jpg")
    with pytest.raises(ValueError, match="PIL image"):
        clf.classify(b"\xff\xd8\xff")


def test_fuzz_public_api_only_raises_clear_errors(bundle):
    """Random shapes, dtypes, bytes and argument values: every failure is a ValueError or an EdgekdError."""
    clf = OpenVocabClassifier.load(bundle)
    rng = np.random.default_rng(1234)
    dtypes = [np.uint8, np.int8, np.uint16, np.float32, np.float64, np.bool_, np.int64]

    def random_input():
        kind = rng.integers(0, 6)
        if kind == 0:
            ndim = int(rng.integers(0, 5))
            shape = tuple(int(s) for s in rng.integers(0, 6 if rng.random() < 0.3 else 70, ndim))
            return (rng.random(shape) * 300).astype(dtypes[rng.integers(len(dtypes))])
        if kind == 1:
            return rng.bytes(int(rng.integers(0, 64)))
        if kind == 2:
            return str(rng.integers(1e6)) + ".jpg"
        if kind == 3:
            return [None, 3, 2.5, {}, object()][rng.integers(5)]
        if kind == 4:
            return Image.new(["RGB", "L", "RGBA", "P", "I;16", "F", "1", "CMYK"][rng.integers(8)],
                             (int(rng.integers(1, 40)), int(rng.integers(1, 40))))
        return rng.integers(0, 256, (int(rng.integers(1, 50)), int(rng.integers(1, 50)), 3), dtype=np.uint8)

    calls = [
        lambda x: clf.classify(x, top_k=[1, 3, 0, -2, "a", 2.0][rng.integers(6)], color=["rgb", "bgr", "x"][
            rng.integers(3)]),
        lambda x: clf.embed(x),
        lambda x: clf.classify_batch(x if rng.random() < 0.5 else [x]),
        lambda x: clf.set_labels(x),
        lambda x: clf.add_examples(["new", "", 5][rng.integers(3)], [x], text_weight=[0, 0.5, 2][rng.integers(3)]),
        lambda x: clf.set_thresholds(default=[None, 0.2, 5, "a"][rng.integers(4)], on=["score", "prob", "z"][
            rng.integers(3)]),
    ]
    outcomes = {"ok": 0, "error": 0}
    for _ in range(300):
        x = random_input()
        call = calls[rng.integers(len(calls))]
        try:
            call(x)
            outcomes["ok"] += 1
        except (ValueError, EdgekdError):
            outcomes["error"] += 1
        if len(clf.class_names) > 12 or not clf.class_names:
            clf.set_labels(label_pack())
    assert outcomes["ok"] > 30 and outcomes["error"] > 30, outcomes


def test_openvino_backend_matches_onnxruntime(bundle_in_graph, paths):
    pytest.importorskip("openvino")
    ort = OpenVocabClassifier.load(bundle_in_graph, backend="onnxruntime")
    ov = OpenVocabClassifier.load(bundle_in_graph, backend="openvino", threads=1)
    assert ov.backend.name == "openvino" and ov.input_dtype == np.uint8
    np.testing.assert_allclose(ov.embed_batch(paths[:4]), ort.embed_batch(paths[:4]), atol=1e-4)
    assert [p.label for p in ov.classify(paths[0])] == [p.label for p in ort.classify(paths[0])]
    with pytest.raises(EdgekdError, match="cannot run .onnx"):
        OpenVocabClassifier.load(bundle_in_graph, backend="tensorrt")


@pytest.fixture(scope="module")
def bundle_full(tmp_path_factory, image_folder) -> Path:
    # `--preprocess-in-graph full`: the graph crops and resizes frames of any size itself; the gate runs on the
    # original images
    return make_bundle(tmp_path_factory.mktemp("bundle_full") / "b", in_graph="full", val_dir=image_folder)


def test_full_frame_bundle_matches_torch_student(bundle_full, paths):
    clf = OpenVocabClassifier.load(bundle_full)
    meta = json.loads((bundle_full / "edgekd.json").read_text())
    assert clf.resize_in_graph and meta["resize_in_graph"] and meta["opset"] >= 18
    assert meta["input"]["shape"] == ["batch", "height", "width", 3] and meta["parity"]["passed"]
    ref = torch_embed(paths)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    got = clf.embed_batch(paths, batch_size=4)  # the images differ in size: runs of one size share a batch
    assert np.min(np.sum(got * ref, axis=1)) > 0.9999
    for i in (0, 7):
        np.testing.assert_allclose(clf.embed(paths[i]), got[i], atol=1e-5)
    img = Image.open(paths[2]).convert("RGB")
    rgb = np.asarray(img)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    np.testing.assert_array_equal(clf.embed(bgr, color="bgr"), clf.embed(rgb))  # reordered in the graph
    np.testing.assert_array_equal(clf.embed(img), clf.embed(rgb))
    np.testing.assert_array_equal(clf.prepare(bgr, color="bgr"), rgb)  # prepare gives the whole frame, RGB
    batch = clf.embed_batch([rgb, bgr, rgb], color="bgr")  # one colour order per call, like embed()
    np.testing.assert_array_equal(batch[1], clf.embed(rgb))


def test_full_frame_bundle_takes_frames_of_any_size(bundle_full):
    clf = OpenVocabClassifier.load(bundle_full, threads=1)
    rng = np.random.default_rng(0)
    for h, w in [(1, 1), (1, 300), (300, 1), (480, 640), (7, 5)]:
        preds = clf.classify(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), top_k=2)
        assert len(preds) == 2 and preds[0].score >= preds[1].score
    grey = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    np.testing.assert_allclose(clf.embed(grey), clf.embed(np.repeat(grey[:, :, None], 3, 2)), atol=1e-6)
    for bad in (np.zeros((0, 5, 3), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 2), np.uint8)):
        with pytest.raises(ValueError):
            clf.embed(bad)
    pytest.importorskip("openvino")
    with pytest.raises(EdgekdError, match="onnxruntime only"):
        OpenVocabClassifier.load(bundle_full, backend="openvino")


def test_static_batch_model_is_fed_in_chunks(tmp_path, paths):
    clf = OpenVocabClassifier.load(make_bundle(tmp_path / "sb", static_batch=2))
    assert clf.static_batch == 2
    np.testing.assert_allclose(clf.embed_batch(paths[:5]), torch_embed(paths[:5]), atol=2e-5)  # 2 + 2 + 1 (padded)
    assert len(clf.classify_batch(paths[:3])) == 3


def test_frame_to_image_orders_channels_exactly():
    from edgekd.data.images import frame_to_image

    rgb = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    bgr = rgb[:, :, ::-1]  # a non-contiguous view, as cv2 users often pass
    np.testing.assert_array_equal(np.asarray(frame_to_image(bgr, "bgr")), rgb)
    np.testing.assert_array_equal(np.asarray(frame_to_image(rgb)), rgb)
    bgra = np.concatenate([np.ascontiguousarray(bgr), np.zeros((7, 9, 1), np.uint8)], axis=2)
    np.testing.assert_array_equal(np.asarray(frame_to_image(bgra, "bgr")), rgb)
    grey = np.asarray(frame_to_image(rgb[:, :, 0]))
    assert grey.shape == (7, 9, 3) and (grey == rgb[:, :, :1]).all()
    with pytest.raises(ValueError, match="color must be"):
        frame_to_image(rgb, "hsv")


def test_large_jpegs_decode_at_reduced_scale(bundle_in_graph, tmp_path):
    """A JPEG four times the model's size or more is decoded by libjpeg at reduced scale, the crop still at least
    twice the model's size: the rendered pixels stay within a fraction of a grey level of the full decode on a
    photo-like picture; small files, other formats and reduced_jpeg=False decode in full."""
    yy, xx = np.mgrid[0:720, 0:1280].astype(np.float32)
    rng = np.random.default_rng(0)
    picture = np.clip(np.stack([xx / 5.1, yy / 2.9, 128 + 60 * np.sin(xx / 40) * np.cos(yy / 30)], -1)
                      + rng.normal(0, 6, (720, 1280, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / "big.jpg", quality=90)
    Image.fromarray(picture).save(tmp_path / "big.png")
    Image.fromarray(picture[:100, :120]).save(tmp_path / "small.jpg", quality=90)
    reduced = OpenVocabClassifier.load(bundle_in_graph, threads=1)
    full = OpenVocabClassifier.load(bundle_in_graph, threads=1, reduced_jpeg=False)
    side = 2 * max(full.preprocess.size)
    assert reduced._jpeg_at_least() == (side, side) and full._jpeg_at_least() is None
    from edgekd.data.images import load_rgb

    assert min(load_rgb(tmp_path / "big.jpg", at_least=(side, side)).size) < 720 // 2  # 1/4 or 1/8 scale here
    a, b = reduced.prepare(str(tmp_path / "big.jpg")), full.prepare(str(tmp_path / "big.jpg"))
    assert a.dtype == np.uint8 and a.shape == b.shape
    diff = np.abs(a.astype(int) - b.astype(int))
    assert 0 < diff.mean() < 1.0 and diff.max() <= 8
    np.testing.assert_array_equal(reduced.prepare(str(tmp_path / "big.png")), full.prepare(str(tmp_path / "big.png")))
    np.testing.assert_array_equal(reduced.prepare(str(tmp_path / "small.jpg")),
                                  full.prepare(str(tmp_path / "small.jpg")))
