"""benchmarks/gpu_check.sh without a GPU (one line, exit 0, nothing written) and the pieces of its driver that do not
need one: image subset, stage failure recording, utilisation windows, the data-path verdict, the Markdown."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gc():
    return load_benchmark("gpu_check")


def test_no_gpu_mode_says_so_in_one_line_and_exits_0(tmp_path):
    results = ROOT / "benchmarks" / "results" / "gpu"
    before = sorted(p.stat().st_mtime_ns for p in results.glob("*")) if results.is_dir() else None
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                       timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no CUDA GPU on this host ("), r.stdout
    assert "nothing to check" in lines[0]
    after = sorted(p.stat().st_mtime_ns for p in results.glob("*")) if results.is_dir() else None
    assert after == before  # the committed GPU figures are untouched
    assert not (tmp_path / "edgekd-gpu-check").exists()  # nothing installed, nothing run


def _fake_cifar(path: Path, per_class: int) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test"):
            for cls in ("cat", "dog"):
                for i in range(per_class):
                    data = f"{split}/{cls}/{i}".encode()
                    info = tarfile.TarInfo(f"cifar10-images/{split}/{cls}/{i:04d}.jpg")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return path


def test_unpack_subset_takes_the_first_n_per_class_and_is_idempotent(gc, tmp_path):
    tar = _fake_cifar(tmp_path / "cifar10-jpg.tar.gz", per_class=5)
    out = gc.unpack_subset(tar, tmp_path / "data", train_per_class=3, val_per_class=2)
    train = sorted(p.relative_to(out["train"]).as_posix() for p in out["train"].rglob("*.jpg"))
    assert train == [f"{c}/{i:04d}.jpg" for c in ("cat", "dog") for i in range(3)]
    val = sorted(p.relative_to(out["val"]).as_posix() for p in out["val"].rglob("*.jpg"))
    assert val == [f"{c}/{i:04d}.jpg" for c in ("cat", "dog") for i in range(2)]
    assert (out["val"] / "dog" / "0001.jpg").read_bytes() == b"test/dog/1"  # held-out images come from test
    tar.unlink()
    assert gc.unpack_subset(tar, tmp_path / "data") == out  # done: the tarball is not needed again
    with pytest.raises(FileNotFoundError, match="--assets DIR"):
        gc.unpack_subset(tar, tmp_path / "elsewhere")


def test_a_failing_stage_is_recorded_with_its_error_and_log(gc, tmp_path):
    """The loader stage on an empty work dir (no cache): its own process fails, the parent records why."""
    ctx = {"device": "cpu", "work": str(tmp_path), "images": {}, "batch": 4, "workers": 0, "steps": 2,
           "warmup_steps": 1, "student": "mobilenetv4_conv_small", "img_size": 224}
    ctx_file = tmp_path / "ctx.json"
    ctx_file.write_text(json.dumps(ctx))
    import time

    r = gc.run_stage("loader", ctx_file, tmp_path, time.monotonic() + 120, set())
    assert r["status"] == "failed" and "cache" in r["error"].lower(), r
    assert "Traceback" in r["log_tail"]
    skipped = gc.run_stage("distill", ctx_file, tmp_path, time.monotonic() + 120, {"cache"})
    assert skipped == {"status": "skipped", "reason": "needs the cache stage, which did not succeed"}
    late = gc.run_stage("onnx", ctx_file, tmp_path, time.monotonic() + 5, set())
    assert late["status"] == "failed" and "time budget" in late["error"]


def test_sampler_summary_averages_the_window(gc):
    s = gc.GpuSampler(0)
    s.samples = [(1.0, 10.0, 100.0), (2.0, 90.0, 300.0), (3.0, 70.0, 200.0), (4.0, 0.0, 50.0)]
    s.source = "test"
    w = s.summary(1.5, 3.5)
    assert w["samples"] == 2 and w["util_mean"] == 80.0 and w["util_min"] == 70.0
    assert w["memory_used_max_mib"] == 300
    assert s.summary(10, 11) == {"source": "test", "samples": 0, "period_s": 0.1}


def test_sampler_reads_nvml_when_importable(gc, monkeypatch):
    """nvidia-ml-py's calls as the sampler makes them, through a stand-in module."""
    import types

    fake = types.ModuleType("pynvml")
    fake.NVMLError = type("NVMLError", (Exception,), {})
    fake.nvmlInit = lambda: None
    fake.nvmlDeviceGetHandleByIndex = lambda i: f"gpu{i}"
    fake.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=87, memory=20)
    fake.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=3 * 2**30, total=140 * 2**30)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    import time

    with gc.GpuSampler(1, period=0.01) as s:
        time.sleep(0.1)
    w = s.summary()
    assert w["source"] == "nvml (nvidia-ml-py)" and w["samples"] >= 2 and w["util_mean"] == 87.0
    assert w["memory_used_max_mib"] == 3072 and "note" not in w


def test_sampler_falls_back_to_nvidia_smi(gc, monkeypatch, tmp_path):
    """No nvidia-ml-py: a background `nvidia-smi --query-gpu=utilization.gpu,memory.used ... -lms N` is read."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho \"$@\" > \"$(dirname \"$0\")/args\"\n"
                    "while true; do echo '42, 1000'; sleep 0.02; done\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    import time

    with gc.GpuSampler(0, period=0.1) as s:
        time.sleep(0.3)
    w = s.summary()
    assert w["source"] == "nvidia-smi -lms" and w["samples"] >= 2 and w["util_mean"] == 42.0
    assert "nvidia-ml-py is not installed" in w["note"]
    assert (tmp_path / "args").read_text().split() == ["-i", "0", "--query-gpu=utilization.gpu,memory.used",
                                                       "--format=csv,noheader,nounits", "-lms", "100"]


def _stages(util: float, train_ips: float, loader_ips: float) -> dict:
    return {"distill": {"status": "ok", "images_per_s": train_ips, "gpu": {"util_mean": util}, "steps_per_epoch": 15,
                        "batch_size": 128},
            "loader": {"status": "ok", "images_per_s": loader_ips, "workers": 14, "bytes_per_image": 602112}}


def test_data_path_verdict(gc):
    assert "keeps up" in gc.verdict_on_data_path(_stages(91, 9000, 20000))
    v = gc.verdict_on_data_path(_stages(55, 4800, 5000))
    assert "limited by the data path" in v and "5,000 img/s" in v and "0.57 MiB" in v
    v = gc.verdict_on_data_path(_stages(55, 3000, 20000))
    assert "the step itself leaves the GPU idle" in v and "every 15 steps" in v
    assert gc.verdict_on_data_path({"distill": {"status": "failed"}}).startswith("not measured")


def test_markdown_names_the_machine_and_every_stage(gc, tmp_path):
    stages = {"environment": {"status": "ok", "wall_s": 3.0, "gpu_name": "NVIDIA H200", "gpu_memory_gib": 139.8,
                              "compute_capability": "9.0", "driver": "580.1", "torch": "2.11.0", "cuda": "13.0",
                              "cudnn": 91000, "host_cpu": "AMD EPYC", "cpu_cores_usable": 16, "python": "3.12.3"},
              "onnx": {"status": "skipped", "wall_s": 9.0, "reason": "ort-cuda: no CUDAExecutionProvider",
                       "cpu_gate": {"passed": True, "cosine_mean": 1.0, "cosine_min": 0.99}},
              "tensorrt": {"status": "failed", "wall_s": 1.0, "error": "RuntimeError: boom | bad"}}
    doc = {"created": "2026-12-01T00:00:00+00:00", "gpu": "NVIDIA H200", "ok": False, "settings": {"steps": 3},
           "stages": stages, "data_path": "not measured"}
    gc.write_results(tmp_path, doc)
    md = (tmp_path / "results.md").read_text()
    assert "NVIDIA H200 (139.8 GiB, compute 9.0), driver 580.1, torch 2.11.0 (CUDA 13.0" in md
    assert "host CPU AMD EPYC" in md and "**FAILED**" in md
    assert "| onnx | skipped | 9.0 |" in md and "cpu_gate: passed=True" in md
    assert "RuntimeError: boom / bad" in md  # a | in a message cannot break the table
    assert json.loads((tmp_path / "results.json").read_text())["stages"]["tensorrt"]["status"] == "failed"
