"""Distillation end to end on a tiny random teacher cache: data, task, loop, resume, recipes, errors, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY_STUDENT

from edgekd import EdgekdError
from edgekd.cli import cli
from edgekd.distill.config import DistillConfig, recipe_loss_config
from edgekd.distill.loop import train

IMG = 32  # the tiny teacher's and the test student's resolution


def build_tiny_cache(src: Path, work: Path, teacher, unlabeled: int = 0, captions: bool = False,
                     views: int = 3) -> Path:
    """Cache of `src` (ImageFolder) via a CSV list; the first `unlabeled` images lose their label."""
    from edgekd.teacher.cache import build_cache

    data = work / "data"
    shutil.copytree(src, data)
    files = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.jpg"))
    rows = [f if i < unlabeled else f"{f},{f.split('/')[0]}" for i, f in enumerate(files)]
    (data / "list.csv").write_text("\n".join(rows) + "\n")
    cap_file = None
    if captions:
        cap_file = work / "captions.jsonl"
        with open(cap_file, "w") as f:
            for i, p in enumerate(files):
                if i % 4 != 3:  # some images without a caption
                    f.write(json.dumps({"path": p, "captions": [f"a {p.split('/')[0]} thing", "a small photo"]}) + "\n")
    out = work / "cache"
    build_cache(data / "list.csv", out, teacher, views=views, captions=cap_file, workers=0, progress=False)
    return out


@pytest.fixture(scope="module")
def cache(image_folder, tiny_teacher, tmp_path_factory) -> Path:
    return build_tiny_cache(image_folder, tmp_path_factory.mktemp("c"), tiny_teacher)


@pytest.fixture(scope="module")
def mixed_cache(image_folder, tiny_teacher, tmp_path_factory) -> Path:
    return build_tiny_cache(image_folder, tmp_path_factory.mktemp("m"), tiny_teacher, unlabeled=5, captions=True)


def cfg_for(cache: Path, out: Path, recipe: str = "default", weights: dict | None = None,
            settings: dict | None = None, **kw) -> DistillConfig:
    loss = recipe_loss_config(recipe, weights, **(settings or {}))
    base = dict(student=TINY_STUDENT, img_size=IMG, epochs=2, batch_size=6, lr=2e-3, workers=0, device="cpu")
    base.update(kw)
    return DistillConfig(cache=str(cache), out=str(out), loss=loss, recipe=recipe, **base)


def fidelity(run_or_student, cache_path: Path) -> float:
    """Mean cosine between the student and the cached teacher embedding of view 0 (the eval view)."""
    from edgekd.data.images import load_rgb
    from edgekd.students.io import load_student
    from edgekd.teacher.cache import TeacherCache

    c = TeacherCache.open(cache_path)
    student = load_student(run_or_student) if isinstance(run_or_student, Path) else run_or_student.eval()
    pp = student.cfg.get_preprocess()
    x = np.stack([pp(load_rgb(p), tuple(c.views[i, 0])) for i, p in enumerate(c.paths)])
    with torch.no_grad():
        s = student(torch.from_numpy(x))
    t = torch.from_numpy(np.asarray(c.image_embeds[:, 0], dtype=np.float32))
    return float(torch.nn.functional.cosine_similarity(s, t).mean())


def test_dataset_renders_the_cached_view(cache, tiny_teacher):
    """The student's pixels come from the same box the teacher embedded: re-embedding it gives the cached vector."""
    from edgekd.distill.data import CachedViewDataset
    from edgekd.preprocess import render_view
    from edgekd.teacher.cache import TeacherCache

    c = TeacherCache.open(cache)
    ds = CachedViewDataset(cache, tiny_teacher.preprocess, seed=0)
    seen_views = set()
    for row in range(6):
        item = ds[(row, 1)]
        k = int(item["view"])
        seen_views.add(k)
        assert torch.equal(item["teacher"], torch.from_numpy(c.image_embeds[row, k].astype(np.float32)))
        t = tiny_teacher.encode_images(item["pixels"][None])[0]
        assert torch.nn.functional.cosine_similarity(t, item["teacher"], dim=0) > 0.999
        # a student at another resolution renders the same box
        ds_small = CachedViewDataset(cache, tiny_teacher.preprocess.with_size(16), seed=0)
        small = ds_small[(row, 1)]
        assert int(small["view"]) == k
        from edgekd.data.images import load_rgb

        img = load_rgb(c.paths[row])
        expect = tiny_teacher.preprocess.with_size(16).normalize(render_view(img, tuple(c.views[row, k]), (16, 16)))
        assert np.allclose(small["pixels"].numpy(), expect)
    assert len(seen_views) > 1  # views are sampled, not always view 0
    assert ds[(0, 1)]["view"] == ds[(0, 1)]["view"] and any(ds[(r, 1)]["view"] != ds[(r, 2)]["view"] for r in range(6))


def test_global_batch_sampler_shards_exactly():
    from edgekd.distill.data import GlobalBatchSampler

    rows = np.arange(20)
    one = GlobalBatchSampler(rows, 8, seed=3)
    ranks = [GlobalBatchSampler(rows, 8, seed=3, rank=r, world_size=2) for r in range(2)]
    for s in (one, *ranks):
        s.set_epoch(1)
    for full, a, b in zip(one, *ranks):
        assert full == a + b and len(full) == 8
    assert len(list(one)) == 2  # tail dropped
    one.set_epoch(1, start=1)
    assert len(list(one)) == 1
    with pytest.raises(EdgekdError, match="divisible"):
        GlobalBatchSampler(rows, 7, world_size=2)


def test_training_reduces_loss_and_beats_untrained(cache, tmp_path):
    from edgekd.students.model import create_student
    from edgekd.teacher.cache import TeacherCache

    c = TeacherCache.open(cache)
    torch.manual_seed(0)
    untrained = create_student(TINY_STUDENT, c.embed_dim, IMG, preprocess=c.preprocess)
    losses: list[float] = []
    cfg = cfg_for(cache, tmp_path / "run", epochs=8, lr=3e-3, weights={"cos": 1.0, "rel": 1.0, "cls": 0.0,
                                                                        "kl": 0.0})
    res = train(cfg, progress=False, on_step=lambda step, parts: losses.append(parts["loss"]) and False)
    assert res.step == 8 * 3 and not res.interrupted
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])
    assert fidelity(tmp_path / "run", cache) > fidelity(untrained, cache) + 0.1
    run = tmp_path / "run"
    for f in ("model.safetensors", "config.json", "config.yaml", "metrics.csv", "train_state.pt", "labels.npz"):
        assert (run / f).is_file(), f
    conf = json.loads((run / "config.json").read_text())["edgekd"]
    assert conf["teacher"]["id"] == c.teacher_id and conf["cache"]["index_sha256"] == c.index_sha256
    assert conf["epoch"] == 8 and conf["step"] == 24
    assert conf["student"]["preprocess"]["size"] == [IMG, IMG]
    assert conf["student"]["preprocess"]["mean"] == list(c.preprocess.mean)
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"step", "lr", "loss", "cos", "rel", "images_per_s"} <= set(header)
    state = torch.load(run / "train_state.pt", weights_only=True)
    assert {"model", "optimizer", "rng", "step", "epoch"} <= set(state)


def test_mixed_labels_captions_default_and_recipes(mixed_cache, tmp_path):
    from edgekd.teacher.cache import TeacherCache

    c = TeacherCache.open(mixed_cache)
    assert (c.labels == -1).sum() == 5 and c.caption_embeds is not None
    seen: dict[str, dict] = {}
    for name, recipe, weights in [("default", "default", None), ("ood", "ood2023", {"cap": 1.0}),
                                  ("vlmkd", "vlmkd", None)]:
        cfg = cfg_for(mixed_cache, tmp_path / name, recipe=recipe, weights=weights, max_steps=2)
        res = train(cfg, progress=False)
        seen[name] = res.last
        assert all(np.isfinite(v) for v in res.last.values())
    assert set(seen["default"]) == {"loss", "cos", "capcon"}  # the study's default: imitation (+ captions)
    assert set(seen["ood"]) == {"loss", "cls", "vlalign", "mse", "cst", "cap"}
    assert set(seen["vlmkd"]) == {"loss", "cls", "kl", "capcon"}


def test_online_teacher_and_simple_labels(cache, tmp_path):
    cfg = cfg_for(cache, tmp_path / "on", online_teacher=True, max_steps=2, label_text="simple",
                  weights={"cos": 1.0, "cls": 1.0}, settings={"ce_lt": "balanced"})
    res = train(cfg, progress=False)
    assert res.step == 2 and np.isfinite(res.last["loss"])
    assert "cls" in res.last


def test_bad_inputs(cache, tmp_path, image_folder, tiny_teacher):
    with pytest.raises(EdgekdError, match="no such cache directory"):
        train(cfg_for(tmp_path / "nope", tmp_path / "r0"), progress=False)
    with pytest.raises(EdgekdError, match="neither a preset nor a timm model|nor a timm model"):
        train(cfg_for(cache, tmp_path / "r1", student="no_such_net_xyz"), progress=False)
    # a label pack made by another teacher
    from edgekd.labelpack import load_label_pack

    pack = load_label_pack(cache / "labels.npz")
    pack.meta["teacher_id"] = "ViT-B-32@0123456789abcdef"
    pack.save(tmp_path / "other.npz")
    with pytest.raises(EdgekdError, match="made by teacher ViT-B-32@0123456789abcdef"):
        train(cfg_for(cache, tmp_path / "r2", labels=str(tmp_path / "other.npz")), progress=False)
    # labeled loss on unlabeled data
    unl = build_tiny_cache(image_folder, tmp_path / "u", tiny_teacher, unlabeled=18, views=1)
    with pytest.raises(EdgekdError, match="'cls' needs labels"):
        train(cfg_for(unl, tmp_path / "r3", weights={"cls": 1.0}), progress=False)
    with pytest.raises(EdgekdError, match="needs captions"):
        train(cfg_for(cache, tmp_path / "r4", recipe="vlmkd"), progress=False)
    # an existing run is not overwritten silently
    train(cfg_for(cache, tmp_path / "r5", max_steps=1), progress=False)
    with pytest.raises(EdgekdError, match="--resume"):
        train(cfg_for(cache, tmp_path / "r5", max_steps=1), progress=False)
    with pytest.raises(EdgekdError, match="different lr"):
        train(cfg_for(cache, tmp_path / "r5", max_steps=2, lr=0.5), resume=True, progress=False)


def test_nan_loss_stops_with_part_and_step(cache, tmp_path):
    bad = tmp_path / "badcache"
    shutil.copytree(cache, bad)
    emb = np.load(bad / "image_embeds.npy", mmap_mode="r+")
    emb[:] = np.nan
    emb.flush()
    with pytest.raises(EdgekdError, match=r"loss part 'cos' is nan at step 0"):
        train(cfg_for(bad, tmp_path / "run", weights={"cos": 1.0}), progress=False)
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_cli_help_students_and_distill(cache, tmp_path):
    runner = CliRunner()
    r = runner.invoke(cli, ["distill", "--help"])
    assert r.exit_code == 0 and "--recipe" in r.output and "--w-vlalign" in r.output and "--online-teacher" in r.output
    r = runner.invoke(cli, ["students", "resnet18", TINY_STUDENT, "--img-size", "64", "--embed-dim", "32"])
    assert r.exit_code == 0, r.output
    assert "resnet18" in r.output and "MACs" in r.output
    r = runner.invoke(cli, ["students", "resnet18", "--img-size", "64", "--json"])
    row = json.loads(r.output)[0]
    # resnet18 at 224 is ~1.8 GMACs; at 64 it scales by (64/224)^2
    assert 0.13e9 < row["macs"] < 0.17e9 and 11.0e6 < row["params"] < 11.8e6
    r = runner.invoke(cli, ["students", "nonexistent_model_q"])
    assert r.exit_code == 1 and "Error:" in r.output and "nor a timm model" in r.output
    out = tmp_path / "run"
    args = ["distill", "--cache", str(cache), "--student", TINY_STUDENT, "--out", str(out), "--img-size", str(IMG),
            "--batch-size", "6", "--workers", "0", "--device", "cpu", "--max-steps", "2", "--no-progress",
            "--w-mse", "0.5"]
    r = runner.invoke(cli, [*args, "--interpolation", "box"])
    assert r.exit_code == 0, r.output
    assert "done: 2 steps" in r.output and "mse" in r.output
    from edgekd.students.io import load_student_config

    pp = load_student_config(out).get_preprocess()  # the student's own filter, used in training and at runtime
    assert pp.interpolation == "box" and pp.size == (IMG, IMG)
    r = runner.invoke(cli, [*args[:-2], "--recipe", "nope"])
    assert r.exit_code == 2 and "nope" in r.output
    r = runner.invoke(cli, ["distill", "--cache", str(tmp_path / "missing"), "--student", TINY_STUDENT, "--out",
                            str(tmp_path / "x")])
    assert r.exit_code == 1 and "no such cache directory" in r.output


@pytest.mark.slow  # a subprocess start (~5 s of imports) plus waiting for steps; resume itself is tested above
def test_sigterm_checkpoints_then_resume(cache, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "edgekd", "distill", "--cache", str(cache), "--student", TINY_STUDENT, "--out",
           str(out), "--img-size", str(IMG), "--batch-size", "6", "--epochs", "200", "--workers", "0", "--device",
           "cpu", "--log-every", "1", "--no-progress", "--lr", "2e-3"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        metrics = out / "metrics.csv"
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted at step" in err and "--resume" in err
    state = torch.load(out / "train_state.pt", weights_only=True)
    conf = json.loads((out / "config.json").read_text())["edgekd"]
    assert state["step"] == conf["step"] >= 2
    cfg = cfg_for(cache, out, epochs=200, lr=2e-3, log_every=1, max_steps=state["step"] + 2)
    # max_steps / epochs may change on resume (e.g. to finish early); the math options may not
    res = train(cfg, resume=True, progress=False)
    assert res.step == state["step"] + 2


def test_grad_accumulation_equals_large_batch(cache, tmp_path):
    """With per-image terms only, 2 x 3 accumulated micro-batches are the same step as one batch of 6."""
    from safetensors.torch import load_file

    w = {"cos": 1.0, "mse": 0.5, "cls": 1.0, "kl": 1.0, "rel": 0.0}  # rel is in-batch: it would differ
    train(cfg_for(cache, tmp_path / "big", weights=w, batch_size=6, epochs=1), progress=False)
    train(cfg_for(cache, tmp_path / "acc", weights=w, batch_size=3, accum=2, epochs=1), progress=False)
    a = load_file(str(tmp_path / "big" / "model.safetensors"))
    b = load_file(str(tmp_path / "acc" / "model.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
