"""`edgekd describe`: per-class descriptions on both backends, cached per class, read by `edgekd labels`."""

from __future__ import annotations

import json

from click.testing import CliRunner
from conftest import TINY_TEACHER
from test_captions_endpoint import server  # noqa: F401  (fixture)
from test_captions_hf import save_tiny_llm

from edgekd.cli import cli
from edgekd.data.captions import load_descriptions
from edgekd.labelpack import load_label_pack


def _describe(out, *extra):
    return CliRunner().invoke(cli, ["describe", "--out", str(out), "--no-progress", *extra])


def test_describe_endpoint_cached_per_class_and_read_by_labels(server, tmp_path):  # noqa: F811
    out = tmp_path / "descriptions.json"
    ep = ["--endpoint", server.url, "--model", "tiny-llm", "--retries", "1"]
    r = _describe(out, "--classes", "red car,golden_retriever", "--per-class", "2", *ep)
    assert r.exit_code == 0 and "2/2 classes described (2 new, 0 cached)" in r.output, r.output
    asked = {q["body"]["messages"][1]["content"] for q in server.requests}
    assert all(q["body"]["messages"][0]["role"] == "system" for q in server.requests)
    assert "Describe what a red car looks like in a photo, in one sentence." in asked
    assert "Describe what a golden retriever looks like in a photo, in one sentence." in asked  # _ -> space
    data = json.loads(out.read_text())
    assert list(data) == ["red car", "golden_retriever"] and all(len(v) == 2 for v in data.values())
    assert all(d.startswith("A typical thing") for v in data.values() for d in v)
    n = len(server.requests)
    r = _describe(out, "--classes", "red car,golden_retriever,cat", "--per-class", "2", *ep)
    assert "3/3 classes described (1 new, 2 cached)" in r.output and len(server.requests) == n + 2  # only "cat"
    r = _describe(out, "--classes", "cat", "--per-class", "2", *ep)
    assert "(0 new, 1 cached)" in r.output and len(server.requests) == n + 2  # a re-run is free
    r = _describe(out, "--classes", "cat", "--per-class", "1", *ep)
    assert r.exit_code == 1 and "other prompts" in r.output

    assert load_descriptions(out, ["red car", "golden_retriever", "cat"]) == json.loads(out.read_text())
    pack_path = tmp_path / "labels.npz"
    r = CliRunner().invoke(cli, ["labels", "--classes", "red car,golden_retriever,cat", "--templates", "single",
                                 "--descriptions", str(out), "--out", str(pack_path), "--teacher", TINY_TEACHER,
                                 "--random-teacher", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    pack = load_label_pack(pack_path)
    assert pack.meta["num_descriptions"] == 6
    assert any(p.startswith("a photo of red car . A typical thing") for p in pack.prompts["red car"])


def test_describe_refusals_are_not_descriptions(server, tmp_path):  # noqa: F811
    server.default = "refuse"
    out = tmp_path / "d.json"
    r = _describe(out, "--classes", "cat", "--endpoint", server.url, "--model", "m", "--empty-retries", "1")
    assert r.exit_code == 0 and "0/1 classes described" in r.output and "got no usable description" in r.output
    assert json.loads(out.read_text()) == {}
    server.default = "ok"
    r = _describe(out, "--classes", "cat", "--endpoint", server.url, "--model", "m", "--empty-retries", "1")
    assert "1/1 classes described (1 new, 0 cached)" in r.output  # missing classes are asked again


def test_describe_with_a_local_model(tmp_path):
    model = save_tiny_llm(tmp_path / "llm")
    out = tmp_path / "d.json"
    r = _describe(out, "--classes", "bird,dog", "--model", str(model), "--device", "cpu", "--max-new-tokens", "8",
                  "--per-class", "2")
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert set(data) <= {"bird", "dog"} and all(isinstance(d, str) and d for v in data.values() for d in v)


def test_describe_bad_inputs(tmp_path):
    r = _describe(tmp_path / "d.json", "--model", "m")
    assert r.exit_code == 1 and "give exactly one of --classes" in r.output
    (tmp_path / "p.txt").write_text("Describe a thing.\n")
    r = _describe(tmp_path / "d.json", "--classes", "a", "--model", "m", "--prompt-file", str(tmp_path / "p.txt"))
    assert r.exit_code == 1 and "needs {label}" in r.output
    (tmp_path / "mine.json").write_text('{"a": "hand-written"}')
    r = _describe(tmp_path / "mine.json", "--classes", "a", "--model", "m", "--endpoint", "http://127.0.0.1:9/v1")
    assert r.exit_code == 1 and "not written by edgekd describe" in r.output
