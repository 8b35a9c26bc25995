"""The CUDA paths on a real GPU (marker `gpu`; skipped without CUDA): teacher cache, bf16 distillation with
channels_last, BatchNorm students, and --sync-bn under 2 NCCL processes (skipped with fewer than 2 GPUs).
Run them with `pytest -m gpu` (benchmarks/gpu_check.sh does)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import TINY_STUDENT
from test_distill import IMG, build_tiny_cache, cfg_for, fidelity
from test_distill_ddp import BN_STUDENT, _free_port

from edgekd.distill.loop import train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def cuda_teacher():
    from conftest import TINY_TEACHER

    from edgekd.teacher.clip import load_teacher

    return load_teacher(TINY_TEACHER, random_init=True, device="cuda")


def _first_losses(run) -> list[float]:
    with open(run / "metrics.csv", newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_cache_on_cuda_matches_cpu(image_folder, tiny_teacher, cuda_teacher, tmp_path):
    """Same seeded teacher, same views: the bf16 CUDA embeddings are the fp32 CPU ones up to bf16 rounding."""
    from edgekd.teacher.cache import TeacherCache

    assert cuda_teacher.teacher_id == tiny_teacher.teacher_id
    a = TeacherCache.open(build_tiny_cache(image_folder, tmp_path / "cpu", tiny_teacher))
    b = TeacherCache.open(build_tiny_cache(image_folder, tmp_path / "cuda", cuda_teacher))
    ea = np.asarray(a.image_embeds, np.float32).reshape(-1, a.embed_dim)
    eb = np.asarray(b.image_embeds, np.float32).reshape(-1, b.embed_dim)
    cos = (ea * eb).sum(1) / (np.linalg.norm(ea, axis=1) * np.linalg.norm(eb, axis=1))
    assert cos.min() > 0.99, cos.min()
    assert np.array_equal(np.asarray(a.views), np.asarray(b.views))


def test_distill_on_cuda_learns_and_saves(image_folder, cuda_teacher, tmp_path):
    """bf16 autocast + channels_last on CUDA: the loss falls, the student gets closer to the teacher, and the saved
    run loads on CPU."""
    from edgekd.students.model import create_student
    from edgekd.teacher.cache import TeacherCache

    cache = build_tiny_cache(image_folder, tmp_path / "c", cuda_teacher)
    c = TeacherCache.open(cache)
    torch.manual_seed(0)
    untrained = create_student(TINY_STUDENT, c.embed_dim, IMG, preprocess=c.preprocess)
    losses: list[float] = []
    cfg = cfg_for(cache, tmp_path / "run", epochs=8, lr=3e-3, device="cuda",
                  weights={"cos": 1.0, "rel": 1.0, "cls": 0.0, "kl": 0.0})
    res = train(cfg, progress=False, on_step=lambda step, parts: losses.append(parts["loss"]) and False)
    assert res.step == 24 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])
    assert fidelity(tmp_path / "run", cache) > fidelity(untrained, cache) + 0.1


def test_first_step_loss_cuda_equals_cpu(image_folder, tiny_teacher, tmp_path):
    """Same seed, same batch, same initial weights: the CUDA (bf16) first-step loss is the CPU (fp32) one."""
    cache = build_tiny_cache(image_folder, tmp_path / "c", tiny_teacher)
    out = {}
    for dev in ("cpu", "cuda"):
        # cos alone (loss near 1): no temperature-0.07 softmax to magnify bf16 rounding
        cfg = cfg_for(cache, tmp_path / dev, weights={"cos": 1.0, "rel": 0.0, "cls": 0.0, "kl": 0.0}, max_steps=1,
                      log_every=1, device=dev)
        train(cfg, progress=False)
        out[dev] = _first_losses(tmp_path / dev)[0]
    assert out["cuda"] == pytest.approx(out["cpu"], rel=2e-2), out


def test_batchnorm_student_on_cuda(image_folder, cuda_teacher, tmp_path):
    """A BatchNorm student (BatchNormAct2d, channels_last) trains on CUDA and its running statistics move."""
    from safetensors.torch import load_file

    cache = build_tiny_cache(image_folder, tmp_path / "c", cuda_teacher)
    res = train(cfg_for(cache, tmp_path / "run", student=BN_STUDENT, weights={"cos": 1.0}, epochs=2, device="cuda"),
                progress=False)
    assert res.step == 6 and np.isfinite(res.last["loss"])
    state = load_file(str(tmp_path / "run" / "model.safetensors"))
    means = [k for k in state if k.endswith("running_mean")]
    assert means and any(float(state[k].abs().max()) > 0 for k in means)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="--sync-bn needs 2 GPUs (one NCCL rank per GPU)")
def test_sync_bn_two_gpus_first_step_equals_one(image_folder, tiny_teacher, tmp_path):
    """With --sync-bn the first step's loss of a BatchNorm student under 2 NCCL ranks is the one-process loss
    (global-batch statistics); without it each rank normalises its 3-image slice and the loss differs."""
    cache = build_tiny_cache(image_folder, tmp_path / "c", tiny_teacher)
    weights = {"cos": 1.0, "rel": 0.0, "cls": 0.0, "kl": 0.0}  # per-sample only: BatchNorm is the one coupling
    train(cfg_for(cache, tmp_path / "one", student=BN_STUDENT, weights=weights, max_steps=2, log_every=1,
                  device="cuda"), progress=False)
    one = _first_losses(tmp_path / "one")
    two = {}
    for name, extra in (("sync", ["--sync-bn"]), ("plain", [])):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), "-m", "edgekd", "distill", "--cache", str(cache), "--student",
               BN_STUDENT, "--img-size", str(IMG), "--out", str(tmp_path / name), "--batch-size", "6", "--lr", "2e-3",
               "--workers", "0", "--device", "cuda", "--max-steps", "2", "--log-every", "1", "--no-progress",
               *[a for t, w in weights.items() for a in (f"--w-{t}", str(w))], *extra]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
        two[name] = _first_losses(tmp_path / name)
    assert two["sync"][0] == pytest.approx(one[0], rel=1e-2), (two, one)
    assert abs(two["plain"][0] - one[0]) > 5 * abs(two["sync"][0] - one[0]), (two, one)

