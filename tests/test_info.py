"""`edgekd info`: every format is recognised and described; unknown paths give a clear error."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgekd import EdgekdError
from edgekd.cli import cli
from edgekd.info import DESCRIBERS, describe, format_text
from edgekd.labelpack import LabelPack
from edgekd.teacher.cache import build_cache


@pytest.fixture(scope="module")
def small_cache(image_folder, tiny_teacher, tmp_path_factory):
    return build_cache(image_folder, tmp_path_factory.mktemp("info") / "cache", tiny_teacher, views=2,
                       batch_size=8, workers=0, progress=False, templates="single")


def test_cache_info(small_cache):
    d = describe(small_cache.path)
    assert d["format"] == "edgekd.cache" and d["complete"] is True
    assert d["arrays"]["image_embeds.npy"]["shape"] == [18, 2, small_cache.embed_dim]
    assert d["counts"]["valid"] == 18 and d["dataset"]["num_classes"] == 3
    assert d["label_packs"]["labels.npz"]["num_classes"] == 3
    text = format_text(d)
    assert "teacher cache" in text and small_cache.teacher_id in text and "image_embeds.npy" in text


def test_incomplete_cache_shows_progress(small_cache, tmp_path):
    m = json.loads((small_cache.path / "manifest.json").read_text())
    m["complete"] = False
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    (tmp_path / "progress.json").write_text(json.dumps({"done": 8, "batch_size": 8, "skipped": []}))
    d = describe(tmp_path)
    assert d["progress"] == {"done": 8, "of": 18}


def test_label_pack_info(tmp_path):
    pack = LabelPack(["a", "b"], np.eye(2, 4, dtype=np.float32), {"a": ["p a"], "b": ["p b", "q b"]},
                     {"teacher_id": "T@1", "templates": "single"})
    pack.save(tmp_path / "l.npz")
    d = describe(tmp_path / "l.npz")
    assert d["format"] == "edgekd.labels" and d["num_classes"] == 2 and d["teacher_id"] == "T@1"
    assert d["embeddings"] == {"shape": [2, 4], "dtype": "float32", "unit_rows": True}
    assert d["prompts_per_class"] == {"min": 1, "max": 2}


def test_run_bundle_bench_info(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"architecture": "test_vit", "num_features": 64, "edgekd": {
        "student": {"model": "test_vit"}, "teacher": {"id": "T@1"}, "epoch": 3, "step": 30}}))
    (run / "metrics.csv").write_text("epoch,loss\n1,2.0\n3,1.5\n")
    d = describe(run)
    assert d["format"] == "edgekd.run" and d["teacher"] == "T@1" and d["last_metrics"] == {"epoch": "3", "loss": "1.5"}

    b = tmp_path / "bundle"
    b.mkdir()
    (b / "model.onnx").write_bytes(b"x" * 2048)
    (b / "edgekd.json").write_text(json.dumps({"format": "edgekd.bundle", "version": 1, "target": "onnx",
                                                "precision": "fp32", "files": {"model": "model.onnx", "labels": None},
                                                "embed_dim": 32}))
    d = describe(b)
    assert d["target"] == "onnx" and d["files"]["model"]["size_mb"] == pytest.approx(2048 / 2**20, abs=1e-3)

    res = tmp_path / "bench"
    res.mkdir()
    (res / "results.json").write_text(json.dumps({"schema": "edgekd.bench", "version": 1, "environment": {"cpu": "x"},
                                                  "rows": [{"model": "m", "backend": "onnxruntime", "status": "ok",
                                                            "latency_ms": {"p50": 1.5}, "throughput_ips": 600},
                                                           {"model": "m", "backend": "tensorrt",
                                                            "status": "skipped", "reason": "no GPU"}]}))
    d = describe(res / "results.json")
    assert d["num_rows"] == 2 and d["status_counts"] == {"ok": 1, "skipped": 1} and d["rows"][0]["p50_ms"] == 1.5
    assert "no GPU" in format_text(d)


def test_registry_and_unknown(tmp_path):
    assert {"edgekd.cache", "edgekd.labels", "edgekd.run", "edgekd.bundle", "edgekd.bench"} <= set(DESCRIBERS)
    with pytest.raises(EdgekdError, match="no such file"):
        describe(tmp_path / "missing")
    (tmp_path / "x.json").write_text("{\"format\": \"something.else\"}")
    with pytest.raises(EdgekdError, match="not an edgekd"):
        describe(tmp_path / "x.json")


def test_info_cli(small_cache, tmp_path):
    r = CliRunner().invoke(cli, ["info", str(small_cache.path), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["counts"]["images"] == 18
    r = CliRunner().invoke(cli, ["info", str(small_cache.path / "labels.npz")])
    assert r.exit_code == 0 and "label pack" in r.output
    r = CliRunner().invoke(cli, ["info", str(tmp_path)])
    assert r.exit_code == 1 and r.output.startswith("Error: ") and "not an edgekd" in r.output
