"""DDP: 2 gloo CPU processes (torchrun) train exactly what 1 process trains with the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from conftest import TINY_STUDENT
from test_distill import IMG, build_tiny_cache, cfg_for

from edgekd.distill.loop import train


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_equal_one(image_folder, tiny_teacher, tmp_path):
    from safetensors.torch import load_file

    cache = build_tiny_cache(image_folder, tmp_path / "c", tiny_teacher, unlabeled=4, captions=True, views=2)
    # every in-batch term on: they need the gathered global batch to match
    weights = {"cos": 1.0, "rel": 1.0, "cst": 1.0, "cls": 1.0, "kl": 1.0, "capcon": 1.0}
    train(cfg_for(cache, tmp_path / "one", weights=weights, epochs=2), progress=False)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "edgekd", "distill", "--cache", str(cache), "--student",
           TINY_STUDENT, "--img-size", str(IMG), "--out", str(tmp_path / "two"), "--epochs", "2", "--batch-size", "6",
           "--lr", "2e-3", "--workers", "0", "--device", "cpu", "--no-progress",
           *[a for t, w in weights.items() for a in (f"--w-{t}", str(w))]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
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
