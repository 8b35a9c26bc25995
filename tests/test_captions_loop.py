"""VLM-KD's loop closed end to end on tiny models, through the CLI only: `edgekd captions` (endpoint backend, against
the local chat server of test_captions_endpoint) -> `edgekd cache --captions` -> `edgekd distill --recipe vlmkd`
(with and without the caption term) -> `edgekd eval --train-index` (long-tail many/medium/few buckets)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import TINY_STUDENT, TINY_TEACHER, make_image
from test_captions_endpoint import FakeChatServer

from edgekd.cli import cli
from edgekd.data.captions import load_captions

# training images per class: one class in each VLM-KD bucket (many > 100, medium 20-100, few < 20)
TRAIN_COUNTS = {"red": 101, "green": 20, "blue": 4}
COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def invoke(*args) -> str:
    res = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def read_metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("phase", "") != "eval"]


@pytest.fixture(scope="module")
def lt_folder(tmp_path_factory) -> Path:
    """A long-tailed ImageFolder (tiny images, the class names of conftest's balanced `image_folder`)."""
    root = tmp_path_factory.mktemp("lt")
    for ci, (name, n) in enumerate(TRAIN_COUNTS.items()):
        for i in range(n):
            make_image(root / name / f"{i:03d}.png", COLORS[name], size=(20, 16), seed=1000 * ci + i)
    return root


@pytest.fixture(scope="module")
def loop_cache(lt_folder, tmp_path_factory) -> tuple[Path, Path]:
    """captions -> cache --captions; -> (captions.jsonl, cache dir)."""
    work = tmp_path_factory.mktemp("loop")
    caps, cache = work / "captions.jsonl", work / "cache"
    server = FakeChatServer(lifetime=30.0)
    try:
        out = invoke("captions", "--data", lt_folder, "--out", caps, "--endpoint", server.url, "--model", "tiny-vlm",
                     "--concurrency", 4, "--image-side", 32, "--retries", 1, "--no-progress")
    finally:
        server.stop()
    assert f"{sum(TRAIN_COUNTS.values())} images captioned, 0 missing, 0 bad" in out
    out = invoke("cache", "--data", lt_folder, "--out", cache, "--teacher", TINY_TEACHER, "--random-teacher",
                 "--device", "cpu", "--captions", caps, "--templates", "simple", "--workers", 0, "--no-progress")
    assert f"{sum(TRAIN_COUNTS.values())}/{sum(TRAIN_COUNTS.values())} images" in out
    return caps, cache


def test_captions_are_per_image_and_cached(loop_cache, lt_folder):
    caps, cache = loop_cache
    texts = load_captions(caps)
    assert len(texts) == sum(TRAIN_COUNTS.values())
    flat = [t for v in texts.values() for t in v]
    assert len(set(flat)) == len(flat)  # deterministic per image, never one text for all
    assert not any(t.lower().startswith("the image shows") for t in flat)  # boilerplate removed
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["captions"]["images_with_captions"] == sum(TRAIN_COUNTS.values())


def distill(cache: Path, out: Path, *extra) -> dict[str, list[float]]:
    invoke("distill", "--cache", cache, "--student", TINY_STUDENT, "--out", out, "--img-size", 32, "--recipe", "vlmkd",
           "--batch-size", 16, "--epochs", 1, "--max-steps", 2, "--log-every", 1, "--workers", 0, "--device", "cpu",
           "--no-progress", *extra)
    rows = read_metrics(out)
    assert len(rows) == 2
    return {k: [float(r[k]) for r in rows] for k in rows[0] if rows[0][k] not in ("", None)}


def test_loop_distill_vlmkd_with_and_without_captions_then_long_tail_eval(loop_cache, image_folder, tmp_path):
    _, cache = loop_cache
    runs = {"with": tmp_path / "with_captions", "without": tmp_path / "without_captions"}
    with_cap = distill(cache, runs["with"])
    assert {"loss", "cls", "kl", "capcon"} <= set(with_cap)
    assert all(math.isfinite(v) and v > 0 for v in with_cap["capcon"])
    without = distill(cache, runs["without"], "--w-capcon", 0)
    assert "capcon" not in without and {"cls", "kl"} <= set(without)

    for name, run in runs.items():
        out = tmp_path / f"eval_{name}.json"
        invoke("eval", run, "--data", image_folder, "--train-index", cache, "--shots", 0, "--no-teacher",
               "--workers", 0, "--device", "cpu", "--out", out)
        r = json.loads(out.read_text())
        assert r["train_counts"] == TRAIN_COUNTS
        lt = r["long_tail"]["student"]
        assert set(lt) == {"many", "medium", "few"}
        for bucket, cls in (("many", "red"), ("medium", "green"), ("few", "blue")):
            assert lt[bucket]["classes"] == 1 and lt[bucket]["images"] == 6, (bucket, cls)
            assert 0.0 <= lt[bucket]["top1"] <= 1.0
        eval_row = [row for row in csv.DictReader(open(run / "metrics.csv")) if row.get("phase") == "eval"]
        assert eval_row and eval_row[-1]["eval_few_top1"] != ""
