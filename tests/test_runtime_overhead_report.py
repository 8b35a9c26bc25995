"""benchmarks/runtime_overhead.py's report arithmetic: the honest ratio, the split of classify() and the verdict, from
results dicts (no model runs)."""

from __future__ import annotations

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def ro():
    return load_benchmark("runtime_overhead")


def _ms(p50: float, low: float | None = None) -> dict:
    return {"p50": p50, "min": p50 if low is None else low}


def _row(mode: str, model: float, classify: float, spin: bool | None = False, resize: float = 0.3,
         layout: float = 0.1, score: float = 0.1, low: float = 0.9) -> dict:
    """A measured row; minima are `low` x the p50s."""
    def ms(x: float) -> dict:
        return _ms(x, round(x * low, 3))

    return {"mode": mode, "spin": spin, "model_ms": ms(model), "classify_ms": ms(classify), "resize_ms": ms(resize),
            "layout_ms": ms(layout), "score_ms": ms(score)}


def test_honest_ratio_divides_by_the_fastest_model_of_any_mode(ro):
    # in-graph normalisation slows its model (3.0 ms) but gives the fastest classify() (3.7 ms); against its own
    # model that is 1.23x, against the fastest model-only variant (numpy bundle, 2.0 ms) it is 1.85x
    rows = [_row("normalize", 3.0, 3.7), _row("numpy", 2.0, 4.0)]
    h = ro.honest_ratio(rows)
    assert h["classify_ms"] == 3.7 and h["model_ms"] == 2.0
    assert h["ratio"] == pytest.approx(3.7 / 2.0, abs=1e-4)
    assert h["ratio"] != pytest.approx(3.7 / 3.0, abs=1e-3)  # not the mode's own model
    assert h["classify_variant"].startswith("in graph: normalise only")
    assert h["model_variant"].startswith("numpy")
    assert ro.verdict(h["ratio"]) == "FAIL"


def test_honest_ratio_takes_each_side_at_its_best_over_spin_settings(ro):
    rows = [_row("normalize", 3.0, 3.6, spin=False), _row("numpy", 2.2, 3.5, spin=False),
            _row("normalize", 2.4, 3.2, spin=True), _row("numpy", 1.8, 3.4, spin=True)]
    h = ro.honest_ratio(rows)
    assert (h["classify_ms"], h["model_ms"]) == (3.2, 1.8)
    assert h["classify_variant"] == "in graph: normalise only, spin on"
    assert h["model_variant"] == "numpy resize + normalise (pixels), spin on"


def test_honest_ratio_from_minima_picks_its_own_fastest(ro):
    a = _row("normalize", 3.0, 3.3)
    b = _row("numpy", 2.0, 4.0)
    a["classify_ms"]["min"], b["classify_ms"]["min"] = 3.0, 2.5  # b is fastest by minimum, a by p50
    h = ro.honest_ratio([a, b], "min")
    assert h["stat"] == "min" and h["classify_ms"] == 2.5 and h["model_ms"] == b["model_ms"]["min"]


def test_openvino_rows_name_no_spin_setting(ro):
    assert ro.variant(_row("numpy", 1, 1, spin=None)) == "numpy resize + normalise (pixels)"
    with pytest.raises(ValueError, match="no rows"):
        ro.honest_ratio([])


def test_split_adds_up_to_classify(ro):
    row = _row("numpy", model=2.0, classify=2.9, resize=0.3, layout=0.12, score=0.08)
    s = ro.time_split(row)["p50"]
    assert s == {"resize": 0.3, "layout": 0.12, "model": 2.0, "score": 0.08, "remainder": 0.4, "classify": 2.9}
    low = ro.time_split(row)["min"]
    assert low["classify"] == pytest.approx(2.61)
    assert sum(low[p] for p in ("resize", "layout", "model", "score", "remainder")) == pytest.approx(low["classify"])


def test_split_of_a_whole_frame_bundle_has_its_resize_in_the_model(ro):
    s = ro.time_split(_row("full", model=3.0, classify=3.2, resize=2.5, layout=0.01, score=0.1))["p50"]
    assert s["resize"] is None  # timed alone for reference, but classify() never runs it in the app
    assert s["remainder"] == pytest.approx(0.09)


def test_verdict_at_the_target(ro):
    assert ro.verdict(1.3) == "PASS"
    assert ro.verdict(1.3001) == "FAIL"
    assert ro.verdict(1.1, target=1.05) == "FAIL"


def test_cell_verdict_and_issue_30_cell(ro):
    rows = [_row("normalize", 2.0, 2.5, low=0.9), _row("numpy", 1.9, 2.8, low=0.9)]
    cell = ro.summarise_cell(rows, 224, "int8", "onnxruntime", "cv2-area-linear")
    assert cell["honest"]["p50"]["ratio"] == pytest.approx(2.5 / 1.9, abs=1e-4)
    assert cell["verdict"] == "FAIL" and cell["done_when"]
    rows[1]["model_ms"]["p50"] = 2.0  # now 2.5 / 2.0 = 1.25
    ok = ro.summarise_cell(rows, 224, "int8", "openvino", "cv2-area-linear")
    assert ok["verdict"] == "PASS"
    assert not ro.summarise_cell(rows, 128, "int8", "onnxruntime", "cv2-area-linear")["done_when"]
    assert not ro.summarise_cell(rows, 224, "fp32", "onnxruntime", "cv2-area-linear")["done_when"]
    assert not ro.summarise_cell(rows, 224, "int8", "onnxruntime", "pillow")["done_when"]


def test_report_states_what_the_ratio_compares(ro):
    rows = [{**_row("normalize", 2.0, 2.5), "overhead": 0.25, "classify_native_ms": _ms(2.3), "loadavg_1m": 1.0,
             "rss_mb": 100.0, "img_size": 224, "precision": "int8", "backend": "openvino"}]
    for r in rows:
        r["split"] = ro.time_split(r)
    res = {"arch": "tiny", "interpolation": "bicubic", "resize_method": "cv2-area-linear", "threads": 2, "iters": 9,
           "warmup": 1, "seconds": 3.0, "cells": [ro.summarise_cell(rows, 224, "int8", "openvino", "cv2-area-linear")],
           "environment": {"cpu": "Some CPU", "cores": 2, "onnxruntime": "1.0", "openvino": "2.0"},
           "torch": {"torch_import_rss_mb": 500.0, "torch_student_rss_mb": 700.0, "img_size": 224}}
    text = "\n".join(ro.report_lines(res))
    assert "tiny @ 224 px int8, openvino 2.0, 2 threads, cv2-area-linear resize, Some CPU (2 cores)" in text
    assert "**1.25x** (1.25x) | PASS * |" in text


def test_the_issue_30_line_names_each_backend_or_says_it_was_not_measured(ro):
    rows = [_row("normalize", 2.0, 2.5)]
    cells = [ro.summarise_cell(rows, 224, "int8", b, "cv2-area-linear") for b in ("onnxruntime", "openvino")]
    line = ro.done_when_line({"resize_method": "cv2-area-linear", "cells": cells})
    assert "onnxruntime PASS (1.25x p50" in line and "openvino PASS" in line
    other = [ro.summarise_cell(rows, 128, "int8", "onnxruntime", "cv2-area-linear")]
    assert "not measured" in ro.done_when_line({"resize_method": "cv2-area-linear", "cells": other})
