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
