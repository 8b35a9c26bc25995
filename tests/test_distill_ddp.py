"""DDP: 2 gloo CPU processes (torchrun) train what 1 process trains with the same global batch, for students
without BatchNorm; BatchNorm students differ (per-rank statistics) unless --sync-bn, which needs CUDA."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from conftest import TINY_STUDENT
from test_distill import IMG, build_tiny_cache, cfg_for

from edgekd import EdgekdError
from edgekd.distill.loop import train


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun_distill(cache, out, student: str, epochs: int, weights: dict, *extra: str):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "edgekd", "distill", "--cache", str(cache), "--student",
           student, "--img-size", str(IMG), "--out", str(out), "--epochs", str(epochs), "--batch-size", "6",
           "--lr", "2e-3", "--workers", "0", "--device", "cpu", "--no-progress",
           *[a for t, w in weights.items() for a in (f"--w-{t}", str(w))], *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_two_gloo_processes_equal_one(image_folder, tiny_teacher, tmp_path):
    """test_vit has LayerNorm only: the exact case (no per-rank statistics anywhere)."""
    from safetensors.torch import load_file

    cache = build_tiny_cache(image_folder, tmp_path / "c", tiny_teacher, unlabeled=4, captions=True, views=2)
    # every in-batch term on: they need the gathered global batch to match
    weights = {"cos": 1.0, "rel": 1.0, "cst": 1.0, "cls": 1.0, "kl": 1.0, "capcon": 1.0}
    train(cfg_for(cache, tmp_path / "one", weights=weights, epochs=2), progress=False)
    r = _torchrun_distill(cache, tmp_path / "two", TINY_STUDENT, 2, weights)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert r.stdout.count("done: 6 steps") == 1  # only rank 0 reports
    a = load_file(str(tmp_path / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-5, worst  # same math; only float summation order differs
    la = (tmp_path / "one" / "metrics.csv").read_text().splitlines()
    lb = (tmp_path / "two" / "metrics.csv").read_text().splitlines()
    assert len(la) == len(lb) and la[0] == lb[0]
    for ra, rb in zip(la[1:], lb[1:]):
        va, vb = ra.split(",")[3:-1], rb.split(",")[3:-1]  # loss parts (not images/s)
        assert all(abs(float(x) - float(y)) < 1e-4 for x, y in zip(va, vb)), (ra, rb)


BN_STUDENT = "test_efficientnet"  # timm's tiny test model with 13 BatchNorm(Act) layers


def test_batchnorm_student_differs_without_sync_bn_and_cpu_refuses_it(image_folder, tiny_teacher, tmp_path):
    """The equality above does not hold for BatchNorm students: each rank normalises with its own slice's statistics.
    --sync-bn fixes that on CUDA only; on CPU (gloo) it is refused with a clear message."""
    from safetensors.torch import load_file

    cache = build_tiny_cache(image_folder, tmp_path / "c", tiny_teacher)
    weights = {"cos": 1.0, "rel": 0.0, "cls": 0.0, "kl": 0.0}  # per-sample only: BatchNorm is the one coupling
    train(cfg_for(cache, tmp_path / "one", weights=weights, student=BN_STUDENT, epochs=1), progress=False)
    r = _torchrun_distill(cache, tmp_path / "two", BN_STUDENT, 1, weights)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "BatchNorm layers: each of the 2 processes normalises with its own slice's statistics" in r.stderr
    a = load_file(str(tmp_path / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) > 1e-3

    r = _torchrun_distill(cache, tmp_path / "sync", BN_STUDENT, 1, weights, "--sync-bn")
    assert r.returncode != 0
    assert "--sync-bn needs CUDA devices" in r.stdout + r.stderr


def test_sync_bn_needs_several_processes(image_folder, tiny_teacher, tmp_path):
    cache = build_tiny_cache(image_folder, tmp_path / "c", tiny_teacher)
    with pytest.raises(EdgekdError, match="--sync-bn synchronises BatchNorm statistics across processes, but this "
                                          "run has one process"):
        train(cfg_for(cache, tmp_path / "one", weights={"cos": 1.0}, student=BN_STUDENT, sync_bn=True),
              progress=False)
