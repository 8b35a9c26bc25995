"""OpenVocabClassifier.classify_regions: one answer per box, equal to classify() of that crop; batching, edges."""

from __future__ import annotations

import numpy as np
import pytest
from test_runtime_support import make_bundle

from edgekd.preprocess import region_view
from edgekd.runtime.classifier import OpenVocabClassifier

pytest.importorskip("onnxruntime")

BOXES = [(0, 0, 40, 30), (10, 5, 70, 60), (30, 20, 50, 64), (5, 40, 80, 64), (2, 3, 18, 19), (0, 0, 80, 64)]


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    """An 80x64 frame of coloured blocks and noise, so every region renders to different pixels."""
    rng = np.random.default_rng(3)
    f = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    f[:32, :40] = (220, 30, 30)
    f[32:, 40:] = (30, 40, 220)
    return f


@pytest.fixture(scope="module", params=["pixels", "in-graph", "full"])
def clf(request, tmp_path_factory) -> OpenVocabClassifier:
    in_graph = {"pixels": False, "in-graph": True, "full": "full"}[request.param]
    return OpenVocabClassifier.load(make_bundle(tmp_path_factory.mktemp("regions") / "b", in_graph=in_graph))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


def test_each_region_answers_as_classify_of_its_crop(clf, frame):
    emb, kept = clf.embed_regions(frame, BOXES)
    assert kept == list(range(len(BOXES)))
    crops = np.stack([clf.embed(np.ascontiguousarray(frame[y0:y1, x0:x1])) for x0, y0, x1, y1 in BOXES])
    np.testing.assert_allclose(emb, crops, atol=2e-5)
    answers = clf.classify_regions(frame, BOXES, top_k=2)
    direct = [clf.classify(np.ascontiguousarray(frame[y0:y1, x0:x1]), top_k=2) for x0, y0, x1, y1 in BOXES]
    assert [a[0].label for a in answers] == [d[0].label for d in direct]
    assert all(len(a) == 2 for a in answers)


def test_batched_equals_one_call_per_region(clf, frame):
    together, _ = clf.embed_regions(frame, BOXES, batch_size=32)
    one_by_one = np.concatenate([clf.embed_regions(frame, [b], batch_size=1)[0] for b in BOXES])
    np.testing.assert_allclose(together, one_by_one, atol=2e-5)


def test_whole_frame_region_is_classify(clf, frame):
    emb, _ = clf.embed_regions(frame, [(0, 0, 80, 64)])
    np.testing.assert_allclose(emb[0], clf.embed(frame), atol=2e-5)


def test_bgr_frames(clf, frame):
    rgb, _ = clf.embed_regions(frame, BOXES[:3])
    bgr, _ = clf.embed_regions(np.ascontiguousarray(frame[..., ::-1]), BOXES[:3], color="bgr")
    np.testing.assert_allclose(rgb, bgr, atol=2e-5)


def test_boxes_outside_the_frame(clf, frame):
    # partly outside: clipped to the frame; wholly outside or no area: None, in its place
    boxes = [(-20, -10, 40, 30), (100, 100, 120, 120), (10, 10, 10, 40), (5, 5, 5.3, 9), (60, 50, 200, 300)]
    answers = clf.classify_regions(frame, boxes)
    assert [a is None for a in answers] == [False, True, True, True, False]
    clipped, _ = clf.embed_regions(frame, [(0, 0, 40, 30), (60, 50, 80, 64)])
    emb, kept = clf.embed_regions(frame, boxes)
    assert kept == [0, 4]
    np.testing.assert_allclose(emb, clipped, atol=2e-5)


def test_empty_box_list(clf, frame):
    assert clf.classify_regions(frame, []) == []
    assert clf.classify_regions(frame, np.zeros((0, 4))) == []
    emb, kept = clf.embed_regions(frame, [])
    assert emb.shape == (0, clf.embed_dim) and kept == []


@pytest.mark.parametrize("boxes, message", [([(1, 2, 3)], "N rows of"), ([(0, 0, np.nan, 5)], "finite"),
                                            ("boxes", "N rows of")])
def test_bad_boxes(clf, frame, boxes, message):
    with pytest.raises(ValueError, match=message):
        clf.classify_regions(frame, boxes)


def test_static_batch_model_takes_regions_in_chunks(tmp_path, frame):
    clf = OpenVocabClassifier.load(make_bundle(tmp_path / "sb", static_batch=4))
    emb, kept = clf.embed_regions(frame, BOXES)  # 6 regions: a chunk of 4, then 2 padded to 4
    ref = np.stack([clf.embed(np.ascontiguousarray(frame[y0:y1, x0:x1])) for x0, y0, x1, y1 in BOXES])
    assert kept == list(range(6))
    np.testing.assert_allclose(emb, ref, atol=2e-5)


def test_region_view_is_the_eval_view_of_the_crop():
    # a 40x20 box of a 'shortest' 16x16 model: the centred 20x20 square of the box, in frame coordinates
    assert region_view((10, 30, 50, 50), 100, 100, (16, 16)) == (20.0, 30.0, 40.0, 50.0, 0.0)
    assert region_view((10.4, 29.6, 49.6, 50.2), 100, 100, (16, 16), "squash") == (10.0, 30.0, 50.0, 50.0, 0.0)
    assert region_view((90, 90, 130, 95), 100, 100, (16, 16), "squash") == (90.0, 90.0, 100.0, 95.0, 0.0)
    assert region_view((100, 0, 120, 10), 100, 100, (16, 16)) is None
