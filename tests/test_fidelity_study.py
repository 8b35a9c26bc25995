"""benchmarks/fidelity_study.py: which points it runs, and that a point's settings do not drift with edgekd's
defaults (its results are kept across sessions and keyed by the settings)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("fidelity_study", REPO / "benchmarks" / "fidelity_study.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("grid", ["default", "old-default"])
def test_grid_is_the_centre_then_one_factor_at_a_time(study, grid):
    centre = study.GRIDS[grid]["centre"]
    pts = study.points(grid)
    assert pts[0]["factor"] == "centre" and study.settings(pts[0]) == centre
    for p in pts[1:]:
        changed = [k for k in study.SETTINGS if p[k] != centre[k]]
        assert changed == [p["factor"]] and p["grid"] == grid, p
    assert len({study.point_key(p) for p in pts}) == len(pts)


def test_keys_of_points_run_before_augmentation_existed_are_kept(study):
    """results.jsonl is keyed by settings: adding the augment setting must not orphan the rows already measured."""
    import hashlib
    import json

    old = {"images": 2000, "views": 2, "epochs": 20, "img_size": 128, "student": "mobilenetv4_conv_small",
           "loss": "cos+rel+cls+kl"}
    assert study.point_key(old) == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:12]
    assert study.point_key({**old, "augment": "none"}) == study.point_key(old) == "abec94381a5f"
    assert study.point_key({**old, "augment": "crop"}) != study.point_key(old)


def test_budget_point_overrides_named_settings_only(study):
    p = study.budget_point("images=30000,views=1,epochs=10,loss=cos")
    assert p == {**study.CENTRE, "images": 30000, "views": 1, "epochs": 10, "loss": "cos", "factor": "budget"}
    assert isinstance(p["images"], int)
    with pytest.raises(SystemExit, match="unknown setting 'lr'"):
        study.budget_point("lr=0.1")


def test_every_loss_mix_and_augmentation_is_spelled_out(study):
    """A point run today must mean the same after `--recipe default` changes: each mix names its weights (or a
    named paper recipe), never 'whatever the default is'; each augmentation names its distill options."""
    for name, flags in study.LOSSES.items():
        assert flags, name
        assert flags[:1] == ["--recipe"] or "--w-cos" in flags, name
    for spec in study.GRIDS.values():
        assert spec["centre"]["loss"] in study.LOSSES and set(spec["factors"].get("loss", [])) <= set(study.LOSSES)
        assert set(spec["factors"].get("augment", [])) <= set(study.AUGMENTS)
    assert study.AUGMENTS["none"] == [] and all(study.AUGMENTS[a] for a in study.AUGMENTS if a != "none")


def row(study, factor="budget", **changes):
    metrics = {"retrieval_at_1": 0.5, "retrieval_at_5": 0.8, "centred_cosine": 0.9, "mean_cosine": 0.98,
               "images": 1000}
    r = {**study.CENTRE, **changes, "factor": factor, "wall_seconds": 60.0, "trained": metrics, "untrained": metrics}
    return {**r, "key": study.point_key(r)}


def test_tables_match_rows_by_settings(study):
    """A point counts in a grid's factor table when it differs from that centre in that factor only, whatever it
    was run as (a budget point at the centre is the centre)."""
    rows = [row(study), row(study, student="efficientvit_b1"), row(study, augment="crop", factor="augment"),
            row(study, images=10000), row(study, student="efficientvit_b1", augment="crop")]
    tables = {(t["grid"], t["factor"]): [r["key"] for r in t["rows"]] for t in study.tables(rows)}
    assert tables[("default", "student")] == [rows[0]["key"], rows[1]["key"]]
    assert tables[("default", "augment")] == [rows[0]["key"], rows[2]["key"]]
    assert len(tables[(None, "budget")]) == 4 and ("old-default", "views") not in tables


def test_point_labels_name_what_changed(study):
    centre = study.GRIDS["old-default"]["centre"]
    assert study.point_label({**centre, "img_size": 96}, centre) == "96 px"
    assert study.point_label({**centre}, centre) == "centre"
    assert study.point_label(study.budget_point("images=5000,views=1,epochs=10,loss=cos")) == "5000x1v 10ep cos"
    assert study.point_label(study.budget_point("student=efficientvit_b1,augment=crop")) == \
        "5000x1v 10ep cos efficientvit_b1 aug crop"


def test_report_writes_tables_speed_and_planner_check(study, tmp_path):
    import json

    rows = [row(study), row(study, student="efficientvit_b1"), row(study, augment="crop", factor="augment")]
    for r in rows:
        r.update(cache_seconds=30.0, train_seconds=30.0, host="test cpu", teacher="ViT-B-32 (random)")
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics = rows[0]["trained"]
    (tmp_path / "plan_check-20min.json").write_text(json.dumps({
        "minutes": 20, "plan": {"images": 9000, "views": 1, "epochs": 10, "img_size": 128, "est_cache_s": 420.0,
                                "est_train_s": 600.0},
        "plan_seconds": 30.0, "cache_seconds": 450.0, "train_seconds": 660.0, "wall_seconds": 1140.0,
        "trained": metrics}))
    speed = {"rows": [
        {"model": "teacher:ViT-B-32", "teacher": True, "status": "ok", "precision": "fp32", "batch": 1,
         "backend": "onnxruntime", "threads": 2, "img_size": [224, 224], "latency_ms": {"p50": 50.0}},
        {"model": "efficientvit_b1", "teacher": False, "status": "ok", "precision": "fp32", "batch": 1,
         "backend": "onnxruntime", "threads": 2, "img_size": [128, 128], "latency_ms": {"p50": 2.5},
         "speedup_vs_teacher": 20.0}]}
    (tmp_path / "speed").mkdir()
    (tmp_path / "speed" / "results.json").write_text(json.dumps(speed))
    study.report(tmp_path)
    md = (tmp_path / "results.md").read_text()
    assert "## student (grid default" in md and "## augment (grid default" in md
    assert "| efficientvit_b1 | 128 | 2.50 | 20.0x |" in md
    assert "| 20 | 9000 x 10 | 7.0 + 10.0 | 0.5 + 7.5 + 11.0 = **19.0** | 50.0% |" in md
    doc = json.loads((tmp_path / "results.json").read_text())
    assert [t["factor"] for t in doc["tables"]] == ["student", "augment", "budget"]
    assert doc["plan_checks"][0]["minutes"] == 20 and (tmp_path / "retrieval_at_1.png").is_file()
