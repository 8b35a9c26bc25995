"""`python -m edgekd.demo` stages with the tiny teacher: data subset -> labels -> cache -> info; re-run reuses."""

from __future__ import annotations

import json

from conftest import TINY_TEACHER

import edgekd.demo as demo_mod


def test_demo_runs_and_reruns(image_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo_mod, "TEACHER", TINY_TEACHER)
    monkeypatch.setenv("EDGEKD_DEMO_DATA", str(image_folder))
    args = ["--out", str(tmp_path / "out"), "--per-class", "2", "--device", "cpu", "--workers", "0"]
    assert demo_mod.main([*args, "--random-teacher"]) == 0
    out = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in out and "cache: 6/6 images x 2 views" in out and "teacher cache" in out
    state = json.loads((tmp_path / "out" / "demo.json").read_text())["done"]
    assert state["data"]["images"] == 6 and state["cache"]["views"] == 2
    assert sorted(p.name for p in (tmp_path / "out" / "data" / "subset-2" / "red").iterdir()) == ["000.jpg", "001.jpg"]
    assert demo_mod.main([*args, "--random-teacher"]) == 0
    assert "is up to date" in capsys.readouterr().out


def test_demo_without_weights_says_what_to_set(image_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo_mod, "TEACHER", TINY_TEACHER)
    monkeypatch.setenv("EDGEKD_DEMO_DATA", str(image_folder))
    monkeypatch.setenv("EDGEKD_TEACHER_WEIGHTS", str(tmp_path / "missing.safetensors"))
    monkeypatch.delenv("EDGEKD_RANDOM_TEACHER", raising=False)
    assert demo_mod.main(["--out", str(tmp_path / "out"), "--per-class", "1", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "EDGEKD_TEACHER_WEIGHTS" in err and "--random-teacher" in err


def test_demo_bad_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EDGEKD_DEMO_DATA", str(tmp_path / "nope"))
    assert demo_mod.main(["--out", str(tmp_path / "out"), "--random-teacher"]) == 1
    assert "EDGEKD_DEMO_DATA" in capsys.readouterr().err
