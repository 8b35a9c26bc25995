"""examples/: classify_image.py, retrieval.py and camera_app.py (headless, on a generated MJPG video)."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_runtime_support import CLASSES, label_pack, make_bundle

from edgekd.labelpack import LabelPack
from edgekd.runtime.classifier import OpenVocabClassifier

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
cv2 = pytest.importorskip("cv2")


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the file runs
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b")


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """24 frames of 160x120 MJPG: red, then green, then blue blocks of 8 frames with noise."""
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for i in range(24):
        bgr = [(30, 30, 220), (40, 200, 30), (220, 40, 30)][i // 8]
        frame = np.clip(np.array(bgr) + rng.normal(0, 30, (120, 160, 3)), 0, 255).astype(np.uint8)
        writer.write(frame)
    writer.release()
    return path


def test_classify_image_script(bundle, image_folder):
    img = next(image_folder.rglob("*.jpg"))
    out = subprocess.run([sys.executable, str(EXAMPLES / "classify_image.py"), str(bundle), str(img)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    top = OpenVocabClassifier.load(bundle).classify(img, top_k=5)
    assert len(lines) == len(CLASSES) and [ln.split()[0] for ln in lines][:1] == top[0].label.split()[:1]
    assert len(Path(EXAMPLES / "classify_image.py").read_text().split('"""')[2].strip().splitlines()) <= 10


def test_camera_app_headless_on_video(bundle, video, tmp_path):
    app = load_example("camera_app")
    out = io.StringIO()
    args = app.parse_args([str(bundle), "--source", str(video), "--headless", "--every", "3", "--top-k", "2",
                           "--threads", "1"])
    summary = app.run(args, out=out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert summary["frames"] == 24 and summary["classified"] == 8 == len(rows)
    assert [r["frame"] for r in rows] == list(range(0, 24, 3))
    assert all(len(r["predictions"]) == 2 and r["labels"] == "bundle" for r in rows)
    # the app classifies OpenCV's BGR frames exactly as the library does
    clf = OpenVocabClassifier.load(bundle)
    cap = cv2.VideoCapture(str(video))
    frames = [cap.read()[1] for _ in range(24)]
    cap.release()
    for r in rows:
        ref = clf.classify(frames[r["frame"]], top_k=2, color="bgr")
        assert [p["label"] for p in r["predictions"]] == [p.label for p in ref]
        assert r["predictions"][0]["score"] == pytest.approx(ref[0].score, abs=1e-4)
    # --max-frames, and a second label pack given on the command line
    other = LabelPack(["x", "y"], np.eye(2, 32, dtype=np.float32), meta=dict(label_pack().meta))
    other.save(tmp_path / "xy.npz")
    out = io.StringIO()
    app.run(app.parse_args([str(bundle), "--source", str(video), "--headless", "--max-frames", "5",
                            "--labels", str(tmp_path / "xy.npz")]), out=out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(rows) == 5 and {p["label"] for r in rows for p in r["predictions"]} <= {"x", "y"}


def test_camera_app_on_a_bundle_that_resizes_in_graph(bundle, video, tmp_path):
    """A `--preprocess-in-graph full` bundle gets OpenCV's BGR frames as they are (the graph reorders the channels
    after resizing); its scores match the numpy-preprocessed bundle of the same student."""
    app = load_example("camera_app")
    full = make_bundle(tmp_path / "full", in_graph="full")
    out = io.StringIO()
    app.run(app.parse_args([str(full), "--source", str(video), "--headless", "--every", "4", "--top-k", "4",
                            "--threads", "1"]), out=out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(rows) == 6
    clf = OpenVocabClassifier.load(bundle)
    cap = cv2.VideoCapture(str(video))
    frames = [cap.read()[1] for _ in range(24)]
    cap.release()
    for r in rows:
        ref = {p.label: p.score for p in clf.classify(frames[r["frame"]], top_k=4, color="bgr")}
        for p in r["predictions"]:
            assert p["score"] == pytest.approx(ref[p["label"]], abs=2e-3)


def test_camera_app_keys_switch_label_packs(bundle, tmp_path):
    app = load_example("camera_app")
    clf = OpenVocabClassifier.load(bundle)
    LabelPack(["x", "y"], np.eye(2, 32, dtype=np.float32), meta=dict(label_pack().meta)).save(tmp_path / "xy.npz")
    sw = app.PackSwitcher(clf, [("bundle", clf.info.labels_path), ("xy", tmp_path / "xy.npz")], index=-1)
    assert sw.activate(0) and clf.class_names == CLASSES
    assert sw.handle_key(ord("n")) and clf.class_names == ["x", "y"] and sw.name == "xy"
    assert sw.handle_key(ord("n")) and clf.class_names == CLASSES
    assert sw.handle_key(ord("p")) and clf.class_names == ["x", "y"]
    assert sw.handle_key(ord("1")) and clf.class_names == CLASSES
    assert not sw.handle_key(ord("1")) and not sw.handle_key(ord("9")) and not sw.handle_key(ord("z"))


def test_camera_app_bad_source(bundle, tmp_path, capsys):
    app = load_example("camera_app")
    assert app.main([str(bundle), "--source", str(tmp_path / "none.avi"), "--headless"]) == 1
    assert "cannot open video source" in capsys.readouterr().err


def test_retrieval_by_label_and_by_image(bundle, image_folder, tmp_path, capsys):
    import shutil

    folder = tmp_path / "gallery"
    shutil.copytree(image_folder, folder)
    app = load_example("retrieval")
    assert app.main([str(bundle), str(folder), "--query", "red", "--top", "3", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    clf = OpenVocabClassifier.load(bundle)
    paths = sorted(str(p) for p in folder.rglob("*.jpg"))
    sims = clf.embed_batch(paths) @ label_pack().embeddings[CLASSES.index("red")]
    assert [r["image"] for r in rows] == [paths[i] for i in np.argsort(-sims)[:3]]
    assert (tmp_path / "gallery-embeddings.npz").is_file()  # cached index, reused on the next query
    query = paths[4]
    assert app.main([str(bundle), str(folder), "--like", query, "--top", "1"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.endswith(query) and line.startswith("+1.000")
    assert app.main([str(bundle), str(folder), "--query", "a red car"]) == 1
    assert "text encoder" in capsys.readouterr().err


def test_camera_overlay_draws_labels_and_fps():
    app = load_example("camera_app")
    from edgekd.runtime.labels import Prediction

    frame = np.zeros((240, 320, 3), np.uint8)
    app.draw_overlay(cv2, frame, [Prediction("cat", 0.31, 0.9, 0), Prediction("dog", 0.2, 0.1, 1)], 29.5, "pets")
    assert frame[:90].any() and not frame[120:].any()  # three text lines at the top, nothing below
