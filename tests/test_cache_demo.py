"""`python -m edgekd.demo` with the tiny teacher and student: data subset -> labels -> cache -> info -> distill ->
eval -> export (INT8 OpenVINO) -> bench -> classify -> summary; a re-run reuses what is done."""

from __future__ import annotations

import json

from conftest import TINY_TEACHER

import edgekd.demo as demo_mod


def test_demo_runs_and_reruns(image_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo_mod, "TEACHER", TINY_TEACHER)
    monkeypatch.setenv("EDGEKD_DEMO_DATA", str(image_folder))
    args = ["--out", str(tmp_path / "out"), "--per-class", "2", "--device", "cpu", "--workers", "0",
            "--student", "test_efficientnet", "--img-size", "32", "--epochs", "1", "--bench-seconds", "0.2"]
    assert demo_mod.main([*args, "--random-teacher"]) == 0
    out = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in out and "cache: 6/6 images x 1 view ->" in out and "teacher cache" in out
    state = json.loads((tmp_path / "out" / "demo.json").read_text())["done"]
    assert state["data"]["images"] == 6 and state["cache"]["views"] == 1
    assert sorted(p.name for p in (tmp_path / "out" / "data" / "subset-2" / "red").iterdir()) == ["000.jpg", "001.jpg"]
    assert sorted(p.name for p in (tmp_path / "out" / "data" / "heldout-5" / "red").iterdir()) == [
        f"{i:03d}.jpg" for i in range(2, 6)]
    for stage in ("distill", "eval", "export", "bench"):
        assert stage in state, stage
    assert "$ edgekd distill --cache" in out and "edgekd demo summary" in out and "vs the fastest teacher" in out
    assert "parity   INT8 vs PyTorch" in out and "fidelity student vs teacher" in out
    assert demo_mod.main([*args, "--random-teacher"]) == 0
    out = capsys.readouterr().out
    assert "is up to date" in out and "distill: done before, skipped" in out and "edgekd demo summary" in out


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
