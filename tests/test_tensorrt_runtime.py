"""TensorRTBackend through a fake TensorRT runtime and a host-backed fake cudart (tests/fake_tensorrt_runtime.py):
device buffers allocated once and reused, profile limits as clear errors, CUDA graphs captured once and replayed,
batch range read from the engine's profile on every TensorRT API generation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fake_tensorrt_runtime import fake_engine_bytes, fake_model, install_fake_tensorrt_runtime

from edgekd import EdgekdError
from edgekd.runtime.backends import create_backend
from edgekd.runtime.batching import run_batched

SAMPLE = (3, 4, 4)


def _engine(tmp_path: Path, **spec) -> Path:
    path = tmp_path / "model.engine"
    path.write_bytes(fake_engine_bytes(**spec))
    return path


def _x(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *SAMPLE)).astype(np.float32)


def test_device_buffers_are_allocated_once_and_reused(tmp_path, monkeypatch):
    _, cudart = install_fake_tensorrt_runtime(monkeypatch)
    be = create_backend(_engine(tmp_path, max_batch=8), backend="tensorrt")
    for seed in range(5):  # same shape: one input and one output buffer, never freed between calls
        x = _x(4, seed)
        np.testing.assert_allclose(be.run(x)["embedding"], fake_model(x), rtol=1e-6)
    assert (cudart.mallocs, cudart.frees) == (2, 0)
    be.run(_x(2))  # a smaller batch fits the buffers it has
    assert (cudart.mallocs, cudart.frees) == (2, 0)
    x = _x(8, 9)  # a larger one grows them once
    np.testing.assert_allclose(be.run(x)["embedding"], fake_model(x), rtol=1e-6)
    be.run(_x(4))
    be.run(x)
    assert (cudart.mallocs, cudart.frees) == (4, 2)
    be.close()
    assert cudart.frees == 4 and not cudart.buffers
    with pytest.raises(EdgekdError, match="closed"):
        be.run(x)


def test_shape_outside_the_profile_is_a_clear_error(tmp_path, monkeypatch):
    trt, _ = install_fake_tensorrt_runtime(monkeypatch)
    be = create_backend(_engine(tmp_path, min_batch=1, max_batch=3), backend="tensorrt")
    with pytest.raises(EdgekdError, match=r"refused input shape \[4, 3, 4, 4\].*batch 1\.\.3 .*run_batched"):
        be.run(_x(4))
    with pytest.raises(EdgekdError, match=r"refused input shape \[2, 3, 5, 5\]"):
        be.run(np.zeros((2, 3, 5, 5), np.float32))
    x = _x(3)  # the context recovers after a refused shape
    np.testing.assert_allclose(be.run(x)["embedding"], fake_model(x), rtol=1e-6)
    assert trt.calls["set_input_shape"][-1] == (3, *SAMPLE)


@pytest.mark.parametrize("version", ["8.4.3", "8.6.1", "10.3.0", "11.4.0"])
def test_batch_range_comes_from_the_engine(tmp_path, monkeypatch, version):
    install_fake_tensorrt_runtime(monkeypatch, version)
    assert create_backend(_engine(tmp_path, min_batch=2, max_batch=6), backend="tensorrt").batch_range == (2, 6)
    static = create_backend(_engine(tmp_path, max_batch=4, static=True), backend="tensorrt")
    assert static.batch_range == (4, 4) and static.input_shape == [4, *SAMPLE]


def test_cuda_graph_is_captured_once_per_shape_and_replayed(tmp_path, monkeypatch):
    trt, cudart = install_fake_tensorrt_runtime(monkeypatch)
    be = create_backend(_engine(tmp_path, max_batch=8), backend="tensorrt", cuda_graph=True)
    for seed in range(5):  # batch-1 latency: first call runs and captures, the next four replay the graph
        x = _x(1, seed)
        np.testing.assert_allclose(be.run(x)["embedding"], fake_model(x), rtol=1e-6)
    assert (cudart.captures, cudart.launches) == (1, 4)
    assert trt.calls["execute"] == 2  # one plain run + the captured one; replays do not call TensorRT
    assert len(trt.calls["set_input_shape"]) == 1  # the shape (and its addresses) stay set between calls
    x = _x(8, 5)  # a new shape: its own graph; growing the buffers drops the graphs holding the old addresses
    np.testing.assert_allclose(be.run(x)["embedding"], fake_model(x), rtol=1e-6)
    assert cudart.captures == 2 and cudart.graphs_destroyed == 1
    x = _x(1, 6)
    np.testing.assert_allclose(be.run(x)["embedding"], fake_model(x), rtol=1e-6)
    np.testing.assert_allclose(be.run(x)["embedding"], fake_model(x), rtol=1e-6)
    assert (cudart.captures, cudart.launches) == (3, 5)
    be.close()
    assert cudart.graphs_destroyed == 3 and not cudart.buffers


def test_cuda_graph_needs_tensorrt(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"refused before it is read")
    with pytest.raises(EdgekdError, match="cuda_graph=True needs the tensorrt backend"):
        create_backend(tmp_path / "model.onnx", backend="onnxruntime", cuda_graph=True)


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("max_batch", [1, 3, 8])
def test_run_batched_feeds_the_engine_what_its_profile_takes(tmp_path, monkeypatch, max_batch, static):
    trt, cudart = install_fake_tensorrt_runtime(monkeypatch)
    be = create_backend(_engine(tmp_path, max_batch=max_batch, static=static), backend="tensorrt")
    x = _x(17)
    out = run_batched(be, x)["embedding"]
    one_by_one = np.concatenate([fake_model(x[i:i + 1]) for i in range(17)])
    np.testing.assert_allclose(out, one_by_one, rtol=1e-5, atol=1e-6)
    assert {s[0] for s in trt.calls["set_input_shape"]} <= set(range(1 if not static else max_batch, max_batch + 1))
    assert cudart.mallocs == 2  # the largest batch comes first; the last (smaller or padded) chunk reuses buffers
