"""`edgekd eval` end to end on a tiny run: structure, known answers via a constructed teacher cache, errors."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import CLASSES, TINY_STUDENT

from edgekd.cli import cli
from edgekd.labelpack import LabelPack


def make_pack(teacher, classes, teacher_id=None) -> LabelPack:
    emb = teacher.encode_texts([f"a photo of a {c}." for c in classes]).numpy()
    return LabelPack(list(classes), emb, {c: [f"a photo of a {c}."] for c in classes},
                     {"teacher_id": teacher_id or teacher.teacher_id, "teacher": teacher.describe()})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_teacher) -> Path:
    from edgekd.students.io import save_student
    from edgekd.students.model import create_student

    run = tmp_path_factory.mktemp("run")
    student = create_student(TINY_STUDENT, tiny_teacher.embed_dim, img_size=32, teacher_id=tiny_teacher.teacher_id)
    save_student(run, student, extra={"teacher": tiny_teacher.describe(), "epoch": 3, "step": 30})
    make_pack(tiny_teacher, CLASSES + ("purple",)).save(run / "labels.npz")
    return run


def invoke(*args: str):
    return CliRunner().invoke(cli, ["eval", *map(str, args), "--workers", "0"], catch_exceptions=False)


def student_embeddings(run_dir: Path, image_folder: Path) -> tuple:
    import torch

    from edgekd.data.images import load_rgb
    from edgekd.data.index import build_index
    from edgekd.students.io import load_student

    student = load_student(run_dir)
    pp = student.cfg.get_preprocess()
    index = build_index(image_folder)
    x = torch.from_numpy(np.stack([pp(load_rgb(index.abs_path(i))) for i in range(len(index))]))
    with torch.no_grad():
        return index, student(x).numpy()


def fake_cache(path: Path, index, embeds: np.ndarray, teacher, valid=None) -> Path:
    """A teacher cache per docs/FORMATS.md whose view-0 embeddings are `embeds` (rows in index order)."""
    path.mkdir(parents=True, exist_ok=True)
    manifest = {"format": "edgekd.cache", "version": 1, "teacher": teacher.describe(), "complete": True,
                "dataset": index.describe()}
    (path / "manifest.json").write_text(json.dumps(manifest))
    (path / "index.json").write_text(json.dumps(index.to_json()))
    np.save(path / "image_embeds.npy", np.repeat(embeds[:, None], 2, axis=1).astype(np.float16))
    np.save(path / "valid.npy", np.ones(len(index), bool) if valid is None else valid)
    np.save(path / "views.npy", np.zeros((len(index), 2, 5), np.float32))
    np.save(path / "image_sizes.npy", np.zeros((len(index), 2), np.int32))
    return path


def test_help():
    res = CliRunner().invoke(cli, ["eval", "--help"])
    assert res.exit_code == 0
    for flag in ("--data", "--unseen", "--split-file", "--train-index", "--shots", "--teacher-cache", "--json"):
        assert flag in res.output


def test_run_with_live_teacher_split_json_and_metrics_csv(run_dir, image_folder, tmp_path, tiny_teacher):
    out = tmp_path / "eval.json"
    res = invoke(run_dir, "--data", image_folder, "--unseen", "blue", "--shots", "1,5", "--json", "--out", out)
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    assert json.loads(out.read_text()) == r
    assert r["format"] == "edgekd.eval" and r["source"]["kind"] == "run"
    assert r["data"]["evaluated"] == 18 and r["data"]["skipped"] == []
    assert r["split"] == {"seen": ["green", "red"], "unseen": ["blue"]}
    for who in ("student", "teacher"):
        zs = r["zero_shot"][who]
        assert zs["all"]["images"] == 18 and zs["all"]["classes"] == 3
        assert zs["seen"]["images"] == 12 and zs["seen"]["classes"] == 2
        assert zs["unseen"]["images"] == 6 and zs["unseen"]["classes"] == 1
        assert zs["unseen"]["top1"] == 1.0  # one unseen class: among unseen texts only, always right
        assert 0.0 <= zs["all"]["top1"] <= zs["all"]["top5"] == 1.0  # 3 classes: top-5 covers all
        fs = r["few_shot"][who]
        assert set(fs) == {"1", "5"} and fs["5"]["queries"] == 1  # few-shot on the 1 unseen class, 6 images
    assert r["teacher"]["id"] == tiny_teacher.teacher_id
    fid = r["fidelity"]
    assert -1.0 <= fid["mean_cosine"] <= 1.0 and fid["images"] == 18 and "top1_agreement" in fid
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert rows[-1]["phase"] == "eval" and rows[-1]["epoch"] == "3"
    assert float(rows[-1]["eval_unseen_mpc_top1"]) == 1.0
    assert float(rows[-1]["eval_mean_cosine"]) == pytest.approx(fid["mean_cosine"], abs=1e-5)
    # a table run appends a second row; columns stay aligned
    res = invoke(run_dir, "--data", image_folder, "--shots", "0")
    assert res.exit_code == 0, res.output
    assert "zero-shot top-1 (3 classes)" in res.output and "teacher fidelity: mean cosine" in res.output
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert len(rows) == 2 and rows[1]["eval_seen_mpc_top1"] == "" and rows[1]["eval_top1"] != ""


def test_teacher_numbers_match_direct_computation(run_dir, image_folder, tiny_teacher):
    import torch

    from edgekd.data.images import load_rgb
    from edgekd.data.index import build_index
    from edgekd.evaluation import metrics as M

    index = build_index(image_folder)
    pp = tiny_teacher.preprocess
    x = torch.from_numpy(np.stack([pp(load_rgb(index.abs_path(i))) for i in range(len(index))]))
    t = tiny_teacher.encode_images(x).numpy()
    texts = make_pack(tiny_teacher, CLASSES).embeddings
    expected = M.zero_shot_scores(t, np.array(index.labels), texts)
    res = invoke(run_dir, "--data", image_folder, "--shots", "0", "--json", "--no-metrics-csv")
    r = json.loads(res.output)
    assert r["zero_shot"]["teacher"]["all"]["top1"] == pytest.approx(expected["top1"])
    assert r["zero_shot"]["teacher"]["all"]["mean_per_class_top1"] == pytest.approx(expected["mean_per_class_top1"])


def test_teacher_cache_known_answers(run_dir, image_folder, tmp_path, tiny_teacher):
    index, s = student_embeddings(run_dir, image_folder)
    # a "teacher" that embeds exactly like the student: fidelity is perfect and the numbers coincide
    cache = fake_cache(tmp_path / "same", index, s, tiny_teacher)
    r = json.loads(invoke(run_dir, "--data", image_folder, "--teacher-cache", cache, "--shots", "1",
                          "--json", "--no-metrics-csv").output)
    assert r["teacher"]["source"] == "cache"
    assert r["fidelity"]["mean_cosine"] == pytest.approx(1.0, abs=2e-3)  # fp16 cache
    assert r["fidelity"]["retrieval_at_1"] == 1.0 and r["fidelity"]["top1_agreement"] == 1.0
    assert r["zero_shot"]["student"]["all"]["top1"] == r["zero_shot"]["teacher"]["all"]["top1"]
    # the cache's rows are a cyclic shift of the images: retrieval@1 drops to 0 (rows matched by path, not order)
    shifted = fake_cache(tmp_path / "shift", index, np.roll(s, 1, axis=0), tiny_teacher)
    r = json.loads(invoke(run_dir, "--data", image_folder, "--teacher-cache", shifted, "--shots", "0",
                          "--json", "--no-metrics-csv").output)
    assert r["fidelity"]["retrieval_at_1"] < 0.2
    # a cache-skipped image is left out of every number
    valid = np.ones(len(index), bool)
    valid[0] = False
    partial = fake_cache(tmp_path / "partial", index, s, tiny_teacher, valid)
    r = json.loads(invoke(run_dir, "--data", image_folder, "--teacher-cache", partial, "--shots", "0",
                          "--json", "--no-metrics-csv").output)
    assert r["data"]["evaluated"] == 17 and r["fidelity"]["images"] == 17


def test_long_tail_from_training_index(run_dir, image_folder, tmp_path, tiny_teacher):
    train = tmp_path / "traincache"
    train.mkdir()
    entries = [{"path": f"x/{i}.jpg", "label": lab} for i, lab in enumerate([0] * 150 + [1] * 50 + [2] * 5)]
    (train / "index.json").write_text(json.dumps(entries))
    (train / "manifest.json").write_text(json.dumps({"format": "edgekd.cache", "dataset": {"classes": list(
        sorted(CLASSES))}}))
    r = json.loads(invoke(run_dir, "--data", image_folder, "--train-index", train, "--no-teacher", "--shots", "0",
                          "--json", "--no-metrics-csv").output)
    assert r["train_counts"] == {"blue": 150, "green": 50, "red": 5}
    lt = r["long_tail"]["student"]
    assert {k: v["classes"] for k, v in lt.items()} == {"many": 1, "medium": 1, "few": 1}
    assert lt["many"]["images"] == 6 and r["teacher"] is None and "fidelity" not in r


def test_skips_unreadable_images(run_dir, image_folder, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(image_folder, data)
    (data / "red" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (data / "green" / "empty.png").write_bytes(b"")
    res = invoke(run_dir, "--data", data, "--no-teacher", "--shots", "0", "--no-metrics-csv")
    assert res.exit_code == 0, res.output
    assert "(18/20 images, 2 skipped)" in res.output
    assert "skipped red/broken.jpg" in res.output and "skipped green/empty.png: empty file" in res.output


def test_unlabeled_folder_gives_fidelity_only(run_dir, image_folder, tmp_path):
    data = tmp_path / "flat"
    data.mkdir()
    for p in sorted(image_folder.rglob("*.jpg"))[:5]:
        shutil.copy(p, data / f"{p.parent.name}_{p.name}")
    r = json.loads(invoke(run_dir, "--data", data, "--json", "--no-metrics-csv").output)
    assert "zero_shot" not in r and r["fidelity"]["images"] == 5 and "top1_agreement" in r["fidelity"]
    res = CliRunner().invoke(cli, ["eval", str(run_dir), "--data", str(data), "--unseen", "red"])
    assert res.exit_code == 1 and "is unlabeled, but --unseen" in res.output


@pytest.mark.parametrize("args, message", [
    (["--unseen", "pink"], "unseen class(es) pink not in the label pack"),
    (["--unseen", "red,green,blue"], "every class is unseen"),
    (["--split-file", "missing.json"], "--split-file missing.json: no such file"),
    (["--shots", "1,x"], "expected comma-separated integers"),
    (["--no-teacher", "--teacher-cache", "."], "--no-teacher contradicts"),
    (["--train-index", "/nonexistent/cache"], "no such cache"),
])
def test_bad_options(run_dir, image_folder, args, message):
    res = CliRunner().invoke(cli, ["eval", str(run_dir), "--data", str(image_folder), "--workers", "0", *args])
    assert res.exit_code != 0 and message in res.output, res.output


def test_split_file_json(run_dir, image_folder, tmp_path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"seen": ["red", "green"], "unseen": ["blue", "purple"]}))
    r = json.loads(invoke(run_dir, "--data", image_folder, "--split-file", split, "--no-teacher", "--shots", "0",
                          "--json", "--no-metrics-csv").output)
    # purple has no images but is a distractor text among the unseen classes
    assert r["zero_shot"]["student"]["unseen"]["classes"] == 2 and r["zero_shot"]["student"]["unseen"]["images"] == 6


def test_errors_missing_inputs(run_dir, image_folder, tmp_path, tiny_teacher):
    res = CliRunner().invoke(cli, ["eval", str(tmp_path / "nope"), "--data", str(image_folder)])
    assert res.exit_code == 1 and "no such run or bundle directory" in res.output
    empty = tmp_path / "empty"
    (empty / "cls").mkdir(parents=True)
    (empty / "cls" / "notes.txt").write_text("hi")
    res = CliRunner().invoke(cli, ["eval", str(run_dir), "--data", str(empty)])
    assert res.exit_code == 1 and "no image files found" in res.output
    # a label pack made by another teacher is refused
    other = make_pack(tiny_teacher, CLASSES, teacher_id="ViT-B-32@0123456789abcdef")
    other.save(tmp_path / "other.npz")
    res = CliRunner().invoke(cli, ["eval", str(run_dir), "--data", str(image_folder), "--labels",
                                   str(tmp_path / "other.npz")])
    assert res.exit_code == 1 and "was made by teacher ViT-B-32@0123456789abcdef" in res.output
    # a pack without one of the data's classes
    make_pack(tiny_teacher, ("red", "green")).save(tmp_path / "rg.npz")
    res = CliRunner().invoke(cli, ["eval", str(run_dir), "--data", str(image_folder), "--labels",
                                   str(tmp_path / "rg.npz")])
    assert res.exit_code == 1 and "class(es) blue not in the label pack" in res.output
    # a cache from another dataset
    index, s = student_embeddings(run_dir, image_folder)
    index.entries = index.entries[1:]
    cache = fake_cache(tmp_path / "c", index, s[1:], tiny_teacher)
    res = CliRunner().invoke(cli, ["eval", str(run_dir), "--data", str(image_folder), "--teacher-cache", str(cache)])
    assert res.exit_code == 1 and "1 of 18 images of --data are not in the cache" in res.output


def make_bundle(run_dir: Path, out: Path, in_graph: bool) -> Path:
    """An ONNX export bundle of the run's student, per docs/FORMATS.md (edgekd.json written here, not by export)."""
    from edgekd._io import sha256_file
    from edgekd.export.onnx import export_student_onnx
    from edgekd.students.io import load_student, load_student_config

    cfg = load_student_config(run_dir)
    pp = cfg.get_preprocess()
    io = export_student_onnx(load_student(run_dir), out / "model.onnx", pp, preprocess_in_graph=in_graph)
    shutil.copy(run_dir / "labels.npz", out / "labels.npz")
    meta = {"format": "edgekd.bundle", "version": 1, "target": "onnx", "precision": "fp32",
            "files": {"model": "model.onnx", "labels": "labels.npz"},
            "sha256": {f: sha256_file(out / f) for f in ("model.onnx", "labels.npz")},
            "input": io["input"], "output": io["output"], "preprocess": pp.to_dict(), "preprocess_in_graph": in_graph,
            "embed_dim": cfg.embed_dim, "logit_scale": 100.0, "teacher_id": cfg.teacher_id, "student": cfg.to_dict(),
            "source_run": {"path": str(run_dir)}}
    (out / "edgekd.json").write_text(json.dumps(meta))
    return out


@pytest.mark.parametrize("in_graph", [False, True])
def test_bundle_matches_run(run_dir, image_folder, tmp_path, tiny_teacher, in_graph):
    pytest.importorskip("onnxruntime")
    bundle = make_bundle(run_dir, tmp_path / "bundle", in_graph)
    index, s = student_embeddings(run_dir, image_folder)
    cache = fake_cache(tmp_path / "cache", index, s, tiny_teacher)  # "teacher" = the run's student in torch
    before = (run_dir / "metrics.csv").read_text() if (run_dir / "metrics.csv").exists() else None
    res = invoke(bundle, "--data", image_folder, "--teacher-cache", cache, "--unseen", "red", "--shots", "1",
                 "--json")
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    assert r["source"]["kind"] == "bundle" and r["source"]["backend"] == "onnxruntime"
    # the ONNX student embeds like the torch student: fidelity to it is perfect (fp16 cache)
    assert r["fidelity"]["mean_cosine"] == pytest.approx(1.0, abs=2e-3)
    assert r["fidelity"]["retrieval_at_1"] == 1.0 and r["fidelity"]["top1_agreement"] == 1.0
    assert r["zero_shot"]["student"]["seen"] == r["zero_shot"]["teacher"]["seen"]
    assert not list(bundle.glob("*.csv")) and not (bundle / "eval.json").exists()  # bundles stay immutable
    after = (run_dir / "metrics.csv").read_text() if (run_dir / "metrics.csv").exists() else None
    assert before == after


def test_bundle_with_tampered_model_is_refused(run_dir, image_folder, tmp_path):
    pytest.importorskip("onnxruntime")
    bundle = make_bundle(run_dir, tmp_path / "bundle", False)
    with open(bundle / "model.onnx", "ab") as f:
        f.write(b"\0")
    res = CliRunner().invoke(cli, ["eval", str(bundle), "--data", str(image_folder), "--no-teacher"])
    assert res.exit_code == 1 and "model.onnx" in res.output


def test_real_teacher_cache_matches_live_teacher(run_dir, image_folder, tmp_path, tiny_teacher):
    from edgekd.teacher.cache import build_cache

    cache = tmp_path / "cache"
    build_cache(image_folder, cache, tiny_teacher, views=1, workers=0, progress=False)
    live = json.loads(invoke(run_dir, "--data", image_folder, "--shots", "0", "--json", "--no-metrics-csv").output)
    cached = json.loads(invoke(run_dir, "--data", image_folder, "--teacher-cache", cache, "--shots", "0", "--json",
                               "--no-metrics-csv").output)
    assert cached["teacher"]["id"] == live["teacher"]["id"] == tiny_teacher.teacher_id
    assert cached["fidelity"]["mean_cosine"] == pytest.approx(live["fidelity"]["mean_cosine"], abs=2e-3)
    assert cached["zero_shot"]["teacher"]["all"]["top1"] == live["zero_shot"]["teacher"]["all"]["top1"]
