"""benchmarks/gpu_check.sh without a GPU (one line, exit 0, nothing written) and the pieces of its driver that do not
need one: the time budget, what `prepare` carries, image subset, stage failure and timeout recording, the cudart stage
on a host-memory cudart, the latency rows on CPU, utilisation windows, the data-path verdict, the Markdown."""

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


# ---------------------------------------------------------------- time budget

def _sh_total_s() -> int:
    import re

    m = re.search(r"GPU_CHECK_TOTAL_S:-(\d+)", (ROOT / "benchmarks" / "gpu_check.sh").read_text())
    return int(m.group(1))


def test_every_stage_has_a_function_an_estimate_and_a_timeout(gc):
    assert set(gc.STAGE_TIME) == set(gc.STAGES) == set(gc.STAGE_FUNCS)
    assert gc.STAGES[:3] == ("environment", "cudart", "latency")  # the cheap, image-free checks first
    for name, (expected, timeout) in gc.STAGE_TIME.items():
        assert 0 < expected < timeout, name
        assert gc.STAGE_TIMEOUT[name] == timeout


def test_the_budget_fits_nine_minutes_even_with_one_stage_hung(gc):
    """One device call must end within 9 minutes: install + stages, each stage capped by its own timeout."""
    total = _sh_total_s()
    hard_stop = total + 30 + 10  # gpu_check.sh: timeout -k 10 (budget + 30), budget = total - install - 20
    assert hard_stop < 9 * 60
    install_s = 30
    assert gc.RUN_BUDGET_S <= total - install_s - 20
    expected = sum(e for e, _ in gc.STAGE_TIME.values())
    assert expected < 5 * 60
    worst_single_hang = max(t - e for e, t in gc.STAGE_TIME.values())
    assert expected + worst_single_hang <= gc.RUN_BUDGET_S  # the other stages still get their time


def test_a_stage_past_its_timeout_is_stopped_and_recorded(gc, tmp_path, monkeypatch):
    """A 1-second cap on the latency stage (its process needs longer to import torch): stopped and recorded, and the
    next stage would still run."""
    import time

    ctx_file = tmp_path / "ctx.json"
    ctx_file.write_text(json.dumps({"device": "cpu", "work": str(tmp_path)}))
    monkeypatch.setitem(gc.STAGE_TIMEOUT, "latency", 1)
    t = time.monotonic()
    r = gc.run_stage("latency", ctx_file, tmp_path, time.monotonic() + 300, set())
    assert time.monotonic() - t < 15
    assert r["status"] == "failed" and r["error"] == "timed out after 1 s" and r["wall_s"] < 15


# ---------------------------------------------------------------- what prepare carries

def test_carried_wheels_are_pinned_once_each_and_include_the_runtime_needs(gc):
    keys = [gc.spec_key(s) for s in gc.CARRIED_WHEELS]
    names = [k[0] for k in keys]
    assert len(set(names)) == len(names)  # two versions of one package stop pip's install
    assert {"open-clip-torch", "onnxconverter-common", "cuda-bindings", "cuda-pathfinder", "timm"} <= set(names)
    assert dict(keys)["cuda-bindings"].startswith("13.")  # CUDA 13 hosts
    assert gc.wheel_key(Path("open_clip_torch-3.3.0-py3-none-any.whl")) == ("open-clip-torch", "3.3.0")
    with pytest.raises(ValueError, match="NAME==VERSION"):
        gc.spec_key("timm>=1.0")


def _fake_download(sizes: dict[str, int]):
    """Writes a wheel file per spec (named as pip names them) of the given size, as pip download would."""
    def download(dest: Path, specs: tuple[str, ...]) -> None:
        for spec in specs:
            name, version = spec.split("==")
            (dest / f"{name.replace('-', '_')}-{version}-py3-none-any.whl").write_bytes(b"w" * sizes.get(name, 100))
    return download


def test_prepare_keeps_exactly_the_pinned_wheels_and_reports_the_size(gc, tmp_path):
    tar = _fake_cifar(tmp_path / "cifar10-jpg.tar.gz", per_class=3)
    carry = tmp_path / "carry"
    (carry / "wheels").mkdir(parents=True)
    (carry / "wheels" / "timm-1.0.9-py3-none-any.whl").write_bytes(b"old")  # an earlier pin
    specs = ("timm==1.0.31", "cuda-bindings==13.0.3")
    doc = gc.prepare_carry(carry, tar.parent, _fake_download({"cuda-bindings": 5000}), specs, limit_mib=1)
    assert doc["removed"] == ["timm-1.0.9-py3-none-any.whl"]
    assert sorted(doc["wheels"]) == ["cuda_bindings-13.0.3-py3-none-any.whl", "timm-1.0.31-py3-none-any.whl"]
    assert doc["images"] == {"train": 6, "val": 6}  # the fake tarball has 3 per class and split, 2 classes
    manifest = carry / "CARRIED.json"
    assert doc["carried_bytes"] == gc.tree_bytes(carry) - manifest.stat().st_size >= 5100
    assert json.loads((carry / "CARRIED.json").read_text())["wheels"] == doc["wheels"]
    line = gc.carry_summary(doc)
    assert "2 wheels" in line and "6 + 6 images" in line and "limit 1 MiB" in line and "removed timm-1.0.9" in line


def test_prepare_refuses_a_missing_wheel_or_an_oversized_folder(gc, tmp_path):
    tar = _fake_cifar(tmp_path / "cifar10-jpg.tar.gz", per_class=1)
    with pytest.raises(gc.CarryError, match="no wheel for onnxconverter-common==1.16.0"):
        gc.prepare_carry(tmp_path / "a", tar.parent, None, ("onnxconverter-common==1.16.0",))
    with pytest.raises(gc.CarryError, match=r"over the 0.001 MiB"):
        gc.prepare_carry(tmp_path / "b", tar.parent, _fake_download({"timm": 2000}), ("timm==1.0.31",),
                         limit_mib=0.001)


@pytest.mark.skipif(not (ROOT / ".gpucheck" / "CARRIED.json").is_file(),
                    reason="no .gpucheck/ here: run `bash benchmarks/gpu_check.sh --prepare` (needs PyPI)")
def test_the_prepared_carry_folder_matches_the_pins_and_the_limit(gc):
    """What `--prepare` left in .gpucheck/ (ignored by git) is what a device call would carry."""
    carry = ROOT / ".gpucheck"
    wheels = sorted((carry / "wheels").glob("*.whl"))
    assert sorted(gc.wheel_key(w) for w in wheels) == sorted(gc.spec_key(s) for s in gc.CARRIED_WHEELS)
    cuda = next(w.name for w in wheels if w.name.startswith("cuda_bindings-"))
    assert "cp312" in cuda and "x86_64" in cuda
    assert gc.tree_bytes(carry) <= gc.CARRY_LIMIT_MIB * 2**20
    assert sum(1 for _ in (carry / "data" / "train").rglob("*.jpg")) == 2000


# ---------------------------------------------------------------- cudart stage on a host-memory cudart

def _cudart(**overrides):
    """tests/fake_tensorrt_runtime.FakeCudart (host memory as device memory, stream capture recorded and replayed)
    with what the cudart stage also calls: device-to-device copies and the version queries."""
    import ctypes
    import types

    from fake_tensorrt_runtime import ERROR, FakeCudart

    class Cudart(FakeCudart):
        __name__ = "cuda.bindings.runtime"

        def __init__(self):
            super().__init__()
            self.cudaMemcpyKind.cudaMemcpyDeviceToDevice = 3

        def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
            if kind != self.cudaMemcpyKind.cudaMemcpyDeviceToDevice:
                return super().cudaMemcpyAsync(dst, src, nbytes, kind, stream)
            if not (self.check(src, nbytes) and self.check(dst, nbytes)):
                return (ERROR,)
            self.submit(lambda: ctypes.memmove(dst, src, nbytes))
            return (0,)

        def cudaRuntimeGetVersion(self):
            return 0, 13000

        def cudaDriverGetVersion(self):
            return 0, 13000

    cudart = Cudart()
    for k, v in overrides.items():
        setattr(cudart, k, types.MethodType(v, cudart))
    return cudart


def _stage_cudart(gc, monkeypatch, cudart):
    from edgekd.runtime import engine_check

    monkeypatch.setattr(engine_check, "import_cudart", lambda: cudart)
    return gc.stage_cudart({"device": "cuda"})


def test_cudart_stage_runs_the_runtime_helpers_end_to_end(gc, monkeypatch):
    cudart = _cudart()
    r = _stage_cudart(gc, monkeypatch, cudart)
    assert "error" not in r, r
    assert r["round_trip_equal"] and r["graph_captured"] and r["graph_replay_equal"] and r["closed"]
    assert r["gpu"] == {"name": "Orin", "compute_capability": "8.7"}
    assert (r["runtime_version"], r["driver_version"], r["binding"]) == ("13.0", "13.0", "cuda.bindings.runtime")
    assert cudart.captures == 1 and cudart.launches == 1 and cudart.mallocs == cudart.frees == 2
    assert cudart.graphs_destroyed == 1 and not cudart.buffers
    assert "stand-in" in r["note"] and "_capture" in r["exercised"]


def test_cudart_stage_fails_when_the_graph_replay_does_not_run(gc, monkeypatch):
    """A graph launch that returns success but runs nothing must not pass as a replay."""
    cudart = _cudart(cudaGraphLaunch=lambda self, g, s: (0,))
    r = _stage_cudart(gc, monkeypatch, cudart)
    assert r["round_trip_equal"] and r["graph_captured"] and not r["graph_replay_equal"]
    assert r["error"] == "cudart check failed: graph_replay_equal"


def test_cudart_stage_skips_without_a_device_or_a_binding(gc, monkeypatch):
    r = _stage_cudart(gc, monkeypatch, _cudart(cudaGetDeviceCount=lambda self: (35, 0)))
    assert r["status"] == "skipped" and r["reason"].startswith("cudart sees no CUDA device")
    from edgekd.runtime import engine_check

    def missing():
        raise ImportError("cuda-python is not installed: pip install cuda-python")

    monkeypatch.setattr(engine_check, "import_cudart", missing)
    r = gc.stage_cudart({"device": "cuda"})
    assert r == {"status": "skipped", "reason": "cuda-python is not importable (cuda-python is not installed: pip "
                                                "install cuda-python)"}


# ---------------------------------------------------------------- latency rows (CPU)

def test_latency_rows_time_each_layout_and_batch_and_skip_cpu_fp16(gc):
    import torch

    from edgekd.bench.timer import Timer

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    plan = {"batches": (1, 2)}
    rows = gc.latency_rows("student tiny", net, (16, 16), ("channels_last", "contiguous"), Timer(0, 0, 2),
                           {"device": "cpu"}, plan)
    ok = [r for r in rows if r["status"] == "ok"]
    assert [(r["layout"], r["batch"]) for r in ok] == [("channels_last", 1), ("channels_last", 2),
                                                       ("contiguous", 1), ("contiguous", 2)]
    assert all(r["precision"] == "fp32" and r["p50_ms"] > 0 and r["n"] >= 2 for r in ok)
    assert rows[-1] == {"model": "student tiny", "precision": "fp16", "status": "skipped",
                        "reason": "torch fp16 on CPU is no fast path; use --device cuda for it"}


def test_student_speedup_compares_each_side_at_its_fastest(gc):
    def row(model, precision, layout, batch, p50):
        return {"model": model, "precision": precision, "layout": layout, "batch": batch, "p50_ms": p50,
                "status": "ok"}

    rows = [row("student m", "fp32", "channels_last", 1, 2.0), row("student m", "fp16", "channels_last", 1, 1.0),
            row("teacher t", "fp32", "contiguous", 1, 9.0), row("teacher t", "fp16", "contiguous", 1, 5.0),
            row("student m", "fp16", "contiguous", 8, 4.0), {"model": "teacher t", "status": "skipped"}]
    assert gc.student_speedup(rows) == {"batch 1": {"ratio": 5.0, "student": "fp16 channels_last 1.0 ms",
                                                    "teacher": "fp16 contiguous 5.0 ms"}}


def test_one_line_and_markdown_show_skips_cudart_and_latency(gc, tmp_path):
    assert gc.one_line("tensorrt", {"status": "skipped", "wall_s": 2.0, "reason": "tensorrt is not importable"}) \
        == "[tensorrt] skipped: tensorrt is not importable, 2.0 s"
    cudart = {"status": "ok", "wall_s": 1.5, "binding": "cuda.bindings.runtime", "cuda_bindings": "13.0.3",
              "runtime_version": "13.0", "driver_version": "13.0", "gpu": {"name": "NVIDIA H100 80GB HBM3"},
              "round_trip_equal": True, "graph_captured": True, "graph_replay_equal": True, "closed": True}
    assert "graph capture ok, replay ok" in gc.one_line("cudart", cudart)
    lat = {"status": "ok", "wall_s": 40.0, "note": "torch eager",
           "rows": [{"model": "student m", "precision": "fp16", "layout": "channels_last", "batch": 128,
                     "status": "ok", "p50_ms": 2.5, "p90_ms": 2.7, "images_per_s": 51200.0, "cos_min": 0.9991},
                    {"model": "teacher t", "precision": "fp16", "status": "failed", "error": "non-finite embeddings"}],
           "speedup": {"batch 128": {"ratio": 6.0, "student": "fp16 channels_last 2.5 ms",
                                     "teacher": "fp16 contiguous 15.0 ms"}}}
    doc = {"created": "2026-12-01T00:00:00+00:00", "gpu": "H100", "ok": True, "settings": {},
           "stages": {"cudart": cudart, "latency": lat}, "data_path": "not measured"}
    gc.write_results(tmp_path, doc)
    md = (tmp_path / "results.md").read_text()
    assert "cuda.bindings.runtime 13.0.3 (runtime 13.0, driver 13.0) on NVIDIA H100 80GB HBM3" in md
    assert "| student m | fp16 | channels_last | 128 | 2.5 | 2.7 | 51,200 | 0.9991 |" in md
    assert "| teacher t | fp16 |  |  | failed: non-finite embeddings |" in md
    assert "At batch 128 the student is 6.0x faster than the teacher" in md
