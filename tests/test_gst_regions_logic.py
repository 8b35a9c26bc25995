"""edgekd.gst.regions without GStreamer: the roi property, the region file, object-class, the track cache."""

from __future__ import annotations

import json

import pytest

from edgekd import EdgekdError
from edgekd.gst.regions import Region, RoiSchedule, TrackCache, parse_classes, parse_roi, select


def test_roi_property():
    regions = parse_roi(" 0,0,10,20:the door ; 5.5,1,9,4 ;")
    assert regions == [Region((0.0, 0.0, 10.0, 20.0), "the door", 0), Region((5.5, 1.0, 9.0, 4.0), "", 1)]
    assert parse_roi("") == []
    for bad in ("1,2,3", "0,0,10,x", "10,0,5,5:flipped"):
        with pytest.raises(EdgekdError, match="x0,y0,x1,y1"):
            parse_roi(bad)


def test_region_file_fixed_and_per_frame(tmp_path):
    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps([{"box": [0, 0, 4, 4], "label": "a"}, {"box": [1, 1, 3, 3], "id": 9}]))
    s = RoiSchedule(fixed)
    assert s.regions(0) == s.regions(50) == [Region((0.0, 0.0, 4.0, 4.0), "a", 0), Region((1.0, 1.0, 3.0, 3.0), "", 9)]
    per = tmp_path / "per.json"
    per.write_text(json.dumps({"frames": [[{"box": [0, 0, 2, 2]}], []]}))
    s = RoiSchedule(per)
    assert s.regions(0) == [Region((0.0, 0.0, 2.0, 2.0), "", None)] and s.regions(1) == s.regions(2) == []


@pytest.mark.parametrize("content, message", [("{", "cannot read regions"), ('{"x": 1}', "expected a list"),
                                              ('[{"box": [0, 0, 1]}]', "region 0 needs"),
                                              ('{"frames": [[], [{"box": [3, 3, 1, 1]}]]}', "frame 1: region 0")])
def test_bad_region_files_name_the_file_and_the_region(tmp_path, content, message):
    path = tmp_path / "r.json"
    path.write_text(content)
    with pytest.raises(EdgekdError, match=message) as e:
        RoiSchedule(path)
    assert str(path) in str(e.value)


def test_object_class_filter():
    regions = [Region((0, 0, 1, 1), "person"), Region((0, 0, 1, 1), "car"), Region((0, 0, 1, 1), "")]
    assert parse_classes(" person, car ,") == {"person", "car"} and parse_classes("") is None
    assert select(regions, parse_classes("car")) == [regions[1]]
    assert select(regions, None) == regions


def test_track_cache_rescored_every_interval_and_forgets_old_objects():
    cache = TrackCache(interval=3, forget_after=10)
    tracked, untracked = Region((0, 0, 1, 1), "", 7), Region((0, 0, 1, 1), "")
    due, cached = cache.plan([tracked, untracked], 0)
    assert due == [tracked, untracked] and cached == []
    cache.remember(tracked, "answer@0", 0)
    cache.remember(untracked, "never kept", 0)  # no object id: nothing to remember it by
    for n in (1, 2):
        due, cached = cache.plan([tracked, untracked], n)
        assert due == [untracked] and cached == [(tracked, "answer@0")]
    assert cache.plan([tracked], 3)[0] == [tracked]  # the interval is up


def test_track_cache_forgets_objects_unseen_for_long():
    cache = TrackCache(interval=100, forget_after=10)
    seen, gone = Region((0, 0, 1, 1), "", 1), Region((0, 0, 1, 1), "", 2)
    cache.plan([seen, gone], 0)
    cache.remember(seen, "a", 0)
    cache.remember(gone, "b", 0)
    for n in range(1, 31):  # object 1 stays in view, object 2 has left
        assert cache.plan([seen], n) == ([], [(seen, "a")])
    assert cache.plan([gone], 31) == ([gone], [])  # forgotten: its answer is not reused when an id comes back
