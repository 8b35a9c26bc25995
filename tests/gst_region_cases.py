"""`edgekdclassify inference-region=roi-list` with `edgekdroi` (run by tests/test_gst_element.py in a process of its
own): each region's answer equals classify() of its crop, answers attached to the ROI metas, object-class filter,
reclassify-interval, shared model instances, the region file, errors. Headless: videotestsrc ! edgekdroi ! ..."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gst_element_cases import GST_ERROR, H, W, bundle, gst, rgb_frame, run, set_and_wait, src  # noqa: F401

pytestmark = pytest.mark.skipif(GST_ERROR is not None, reason=f"GStreamer not usable here: {GST_ERROR}")
ROI = "0,0,40,30:car;20,10,90,60:person;-5,40,30,70:person;200,200,220,220:car"
BOXES = [(0, 0, 40, 30), (20, 10, 90, 60), (0, 40, 30, 61)]  # as clipped to the 97x61 frame; the 4th is outside


@pytest.fixture(scope="module")
def clf(bundle):  # noqa: F811
    from edgekd.runtime.classifier import OpenVocabClassifier

    return OpenVocabClassifier.load(bundle, threads=1)


def with_params(gst, r_pipe: str):  # noqa: F811
    """Run the pipeline; -> (Run, {frame number: [(roi label, its edgekd-classification param as a dict or None)]}).
    The probe goes on the sink's pad in PAUSED, after the preroll frame has passed: frame 0 is not in it."""
    from edgekd.gst.roi_meta import param_string, read_rois

    Gst = gst[0]
    params: dict[int, list] = {}

    def before_play(pipe):
        def probe(_pad, info):
            buf = info.get_buffer()
            params[buf.offset] = [(roi.label, _parse(Gst, param_string(roi, "edgekd-classification")))
                                  for roi in read_rois(buf)]
            return Gst.PadProbeReturn.OK

        pipe.get_by_name("sink").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)

    return run(gst, r_pipe, before_play=before_play), params


def _parse(Gst, text):
    if text is None:
        return None
    s = Gst.Structure.from_string(text)[0]
    return {s.nth_field_name(i): s.get_value(s.nth_field_name(i)) for i in range(s.n_fields())}


def test_each_region_answers_as_classify_of_its_crop(gst, bundle, clf):  # noqa: F811
    r, params = with_params(gst, f"{src(n=12)} ! edgekdroi roi=\"{ROI}\" ! edgekdclassify bundle={bundle} "
                                 "inference-region=roi-list block=true top-k=3 ! fakesink name=sink")
    assert not r.errors and len(r.messages) == 12 and len(r.frames) == 12
    stride = gst[2].VideoInfo.new_from_caps(r.caps).stride[0]
    for m in r.messages:
        regions = list(m["regions"])
        assert [g.get_value("index") for g in regions] == [0, 1, 2, 3]
        assert [g.get_value("inside") for g in regions] == [True, True, True, False]
        assert [g.get_value("object-class") for g in regions] == ["car", "person", "person", "car"]
        frame = rgb_frame(r.frames[m["frame"]], stride)
        for g, (x0, y0, x1, y1) in zip(regions, BOXES):
            assert list(g.get_value("box"))[:2] == [max(x0, 0), y0] or x0 == 0
            ref = clf.classify(np.ascontiguousarray(frame[y0:y1, x0:x1]), top_k=3)
            assert list(g.get_value("labels")) == [p.label for p in ref]
            np.testing.assert_allclose(list(g.get_value("scores")), [p.score for p in ref], atol=1e-5)
        attached = params.get(m["frame"])
        if attached is None:
            continue
        assert [label for label, _ in attached] == ["car", "person", "person", "car"]
        assert [p is not None for _, p in attached] == [True, True, True, False]
        for (_, p), g in zip(attached[:3], regions[:3]):
            assert p["label"] == g.get_value("label") and p["frame"] == m["frame"]
            assert list(p["labels"]) == list(g.get_value("labels"))


def test_object_class_filter(gst, bundle):  # noqa: F811
    r, params = with_params(gst, f"{src(n=4)} ! edgekdroi roi=\"{ROI}\" ! edgekdclassify bundle={bundle} "
                                 "inference-region=roi-list object-class=car block=true ! fakesink name=sink")
    assert not r.errors and len(r.messages) == 4
    for m in r.messages:
        assert [g.get_value("index") for g in m["regions"]] == [0, 3]
    assert len(params) == 3
    assert all([p is not None for _, p in frame] == [True, False, False, False] for frame in params.values())


def test_reclassify_interval_keeps_tracked_answers_in_between(gst, bundle):  # noqa: F811
    r, params = with_params(gst, f"{src(n=12)} ! edgekdroi roi=\"{ROI}\" ! edgekdclassify bundle={bundle} "
                                 "inference-region=roi-list reclassify-interval=5 block=true ! fakesink name=sink")
    assert not r.errors
    assert [m["frame"] for m in r.messages] == [0, 5, 10]  # fixed zones have object ids 0..3
    assert sorted(params) == list(range(1, 12))
    for n, frame in params.items():
        scored = [p["frame"] for _, p in frame[:3]]
        assert scored == [n // 5 * 5] * 3, (n, scored)


def test_untracked_regions_are_scored_every_frame(gst, bundle, tmp_path):  # noqa: F811
    doc = {"frames": [[{"box": [0, 0, 40, 30], "label": "car"}], [], [{"box": [10, 10, 50, 50], "id": 7}]]}
    path = tmp_path / "regions.json"
    path.write_text(json.dumps(doc))
    r, params = with_params(gst, f"{src(n=4)} ! edgekdroi file={path} ! edgekdclassify bundle={bundle} "
                                 "inference-region=roi-list reclassify-interval=5 block=true ! fakesink name=sink")
    assert not r.errors and [m["frame"] for m in r.messages] == [0, 2]
    assert [len(params[n]) for n in (1, 2, 3)] == [0, 1, 0]
    assert [g.get_value("object-id") for g in r.messages[1]["regions"]] == [7]


def test_worker_mode_posts_every_region(gst, bundle):  # noqa: F811
    r = run(gst, f"{src(n=20)} ! edgekdroi roi=\"{ROI}\" ! edgekdclassify bundle={bundle} "
                 "inference-region=roi-list ! fakesink name=sink")
    assert not r.errors and r.messages and len(r.frames) == 20
    assert r.stats["classified"] + r.stats["dropped"] == 20
    assert all(len(list(m["regions"])) == 4 for m in r.messages)


def test_shared_model_instance_and_labels(gst, bundle):  # noqa: F811
    from test_runtime_support import CLASSES

    elements = {}

    def change(pipe, n):
        elements.setdefault("a", pipe.get_by_name("a"))
        elements.setdefault("b", pipe.get_by_name("b"))
        if n == 5:
            set_and_wait(elements["a"], "labels", "red,green")

    r = run(gst, f"{src(n=10)} ! identity name=tap ! edgekdclassify name=a bundle={bundle} model-instance-id=cams "
                 f"block=true ! edgekdclassify name=b bundle={bundle} model-instance-id=cams block=true ! "
                 "fakesink name=sink", on_tap=change)
    assert not r.errors
    a, b = elements["a"], elements["b"]
    assert a._instance is None and b._instance is None  # stopped: released
    by = {}
    for m in r.messages:
        by.setdefault(m["frame"], []).append(set(m["labels"]))
    assert all(len(v) == 2 for v in by.values())
    for n, sets in by.items():
        allowed = {"red", "green"} if n >= 5 else set(CLASSES)
        assert all(s <= allowed for s in sets), (n, sets)
    assert b.get_property("labels") == "red,green"


def test_shared_instance_loads_one_model(gst, bundle):  # noqa: F811
    Gst = gst[0]
    pipe = Gst.parse_launch(f"{src(n=3)} ! edgekdclassify name=a bundle={bundle} model-instance-id=one ! "
                            f"edgekdclassify name=b bundle={bundle} model-instance-id=one ! fakesink")
    try:
        pipe.set_state(Gst.State.PAUSED)
        pipe.get_state(10 * Gst.SECOND)
        a, b = pipe.get_by_name("a"), pipe.get_by_name("b")
        assert a._clf is b._clf and a._instance is b._instance and a._instance.users == 2
    finally:
        pipe.set_state(Gst.State.NULL)


def test_shared_instance_refuses_another_model(gst, bundle, tmp_path):  # noqa: F811
    other = tmp_path / "other"
    import shutil

    shutil.copytree(bundle, other)
    r = run(gst, f"{src(n=3)} ! edgekdclassify bundle={bundle} model-instance-id=x ! "
                 f"edgekdclassify bundle={other} model-instance-id=x ! fakesink")
    assert r.errors and "model-instance-id='x' is already loaded" in r.errors[0]


@pytest.mark.parametrize("props, message", [("inference-region=everything", "inference-region='everything'"),
                                            ("", None)])
def test_bad_inference_region_and_bad_roi(gst, bundle, props, message):  # noqa: F811
    roi = "1,2,3" if message is None else "0,0,10,10"
    r = run(gst, f"{src(n=3)} ! edgekdroi roi=\"{roi}\" ! edgekdclassify bundle={bundle} {props} ! fakesink")
    assert r.errors
    assert (message or "roi='1,2,3'") in r.errors[0]


def test_overlay_draws_each_region_label(gst, bundle):  # noqa: F811
    base = f"{src(n=2, pattern='black')} ! edgekdroi roi=\"10,10,60,50\" ! edgekdclassify bundle={bundle} " \
           "inference-region=roi-list block=true"
    plain = run(gst, f"{base} ! fakesink name=sink")
    drawn = run(gst, f"{base} overlay=true ! fakesink name=sink")
    stride = gst[2].VideoInfo.new_from_caps(drawn.caps).stride[0]
    a, b = rgb_frame(plain.frames[1], stride), rgb_frame(drawn.frames[1], stride)
    changed = np.argwhere((a != b).any(axis=2))
    assert len(changed) and changed[:, 0].min() >= 10 and changed[:, 1].min() >= 10


def test_nv12_regions_rendered_in_the_planes(gst, bundle, clf):  # noqa: F811
    """NV12 regions are rendered in the planes (edgekd.gst.frames.render_model_input with each region's view); the
    answers stay those of classify() on the crop of the frame converted to RGB first, within the same tolerance as
    whole frames (gst_element_cases.py::test_yuv_frames_rendered_in_the_planes)."""
    from edgekd.gst.frames import FrameLayout, model_frame

    w, h = 161, 121
    boxes = [(0, 0, 80, 70), (60, 30, 161, 121), (10, 64, 90, 121)]
    roi = ";".join(",".join(map(str, b)) for b in boxes)
    r = run(gst, f"videotestsrc num-buffers=4 pattern=smpte ! video/x-raw,format=NV12,width={w},height={h} ! "
                 f"edgekdroi roi=\"{roi}\" ! edgekdclassify bundle={bundle} inference-region=roi-list block=true "
                 "top-k=4 ! fakesink name=sink")
    assert not r.errors and len(r.messages) == 4
    info = gst[2].VideoInfo.new_from_caps(r.caps)
    layout = FrameLayout("NV12", w, h, tuple(info.stride[:2]), tuple(info.offset[:2]))
    for m in r.messages:
        frame, _ = model_frame(r.frames[m["frame"]], layout)  # the whole frame converted to RGB
        for g, (x0, y0, x1, y1) in zip(list(m["regions"]), boxes):
            expected = {p.label: p.score for p in clf.classify(np.ascontiguousarray(frame[y0:y1, x0:x1]), top_k=4)}
            got = dict(zip(g.get_value("labels"), g.get_value("scores")))
            assert set(got) == set(expected)
            assert max(abs(got[k] - v) for k, v in expected.items()) < 0.015


def test_regions_example_runs_as_printed(bundle, tmp_path):  # noqa: F811
    """examples/gstreamer/regions.sh through gst-launch-1.0 and GStreamer's python plugin loader (edgekdroi and
    edgekdclassify from edgekd/gst/plugins), headless, on its test pattern."""
    import os
    import re
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    edgekd = Path(sys.executable).parent / "edgekd"
    if shutil.which("gst-launch-1.0") is None or not edgekd.exists():
        pytest.skip("gst-launch-1.0 or the edgekd script is not installed")
    script = Path(__file__).resolve().parents[1] / "examples" / "gstreamer" / "regions.sh"
    env = {**os.environ, "GST_REGISTRY": str(tmp_path / "registry.bin"), "SINK": "fakesink", "FRAMES": "12",
           "PATH": f"{edgekd.parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(["bash", str(script), str(bundle)], capture_output=True, text=True, env=env, timeout=300)
    if "No such element or plugin 'python'" in out.stdout + out.stderr:
        pytest.skip("GStreamer's python plugin loader (libgstpython.so) is not installed")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    answers = [line for line in out.stdout.splitlines() if "edgekd-classification" in line]
    assert len(answers) == 3, out.stdout[-2000:]  # frames 0, 5, 10: the two zones re-scored every 5 frames
    for line in answers:
        assert line.count("edgekd-classification") == 3  # the message and its two regions
        assert re.search(r"object-class=\(string\)\"?the loading bay", line.replace("\\", "")), line


def test_a_failed_start_releases_its_shared_instance(gst, bundle):  # noqa: F811
    from edgekd.gst import instances

    r = run(gst, f"{src(n=3)} ! edgekdclassify bundle={bundle} model-instance-id=failing labels=no-such-label ! "
                 "fakesink")
    assert r.errors and "labels='no-such-label'" in r.errors[0]
    assert "failing" not in instances._instances
