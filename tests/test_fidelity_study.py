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


def test_grid_is_the_centre_then_one_factor_at_a_time(study):
    pts = study.points()
    assert pts[0]["factor"] == "centre" and {k: pts[0][k] for k in study.CENTRE} == study.CENTRE
    for p in pts[1:]:
        changed = [k for k in study.CENTRE if p[k] != study.CENTRE[k]]
        assert changed == [p["factor"]], p
    assert len({study.point_key(p) for p in pts}) == len(pts)


def test_budget_point_overrides_named_settings_only(study):
    p = study.budget_point("images=5000,views=1,epochs=10,loss=cos")
    assert p == {**study.CENTRE, "images": 5000, "views": 1, "epochs": 10, "loss": "cos", "factor": "budget"}
    assert isinstance(p["images"], int)
    with pytest.raises(SystemExit, match="unknown setting 'lr'"):
        study.budget_point("lr=0.1")


def test_every_loss_mix_is_spelled_out(study):
    """A point run today must mean the same after `--recipe default` changes: each mix names its weights (or a
    named paper recipe), never 'whatever the default is'."""
    for name, flags in study.LOSSES.items():
        assert flags, name
        assert flags[:1] == ["--recipe"] or "--w-cos" in flags, name
    assert study.CENTRE["loss"] in study.LOSSES and set(study.FACTORS["loss"]) <= set(study.LOSSES)


def test_point_labels_name_what_changed(study):
    row = {**study.CENTRE, "factor": "img_size", "img_size": 96}
    assert study.point_label(row) == "96 px"
    row = {**study.budget_point("images=5000,views=1,epochs=10,loss=cos")}
    assert study.point_label(row) == "5000x1v 10ep cos"
