"""One batching helper for every runtime path (edgekd.runtime.batching): the parity gate's run_model, the classifier,
`edgekd classify`, the text encoder and the on-device TensorRT check, each over 17 inputs with a model whose batch is
limited to 1, 3 or 8 (a static ONNX batch, or a profile-like range 1..k) -- results equal to one input at a time.

Torch-free: the models are tiny ONNX graphs written with onnx.helper (Flatten -> MatMul), so these tests take seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from fake_tensorrt_runtime import fake_engine_bytes, fake_model, install_fake_tensorrt_runtime

from edgekd import EdgekdError
from edgekd.runtime import backends
from edgekd.runtime.batching import accepted_batch, check_batch, chunk_size, run_batched

IMG, DIM, N = 16, 8, 17
CASES = [("static", 1), ("static", 3), ("static", 8), ("range", 1), ("range", 3), ("range", 8)]


class Limited:
    """A real backend behind a batch range, refusing other batches as a TensorRT profile does; records the batches."""

    name = "limited"

    def __init__(self, inner: Any, lo: int, hi: int):
        self.inner, self.batch_range, self.seen = inner, (lo, hi), []
        self.input_name, self.input_dtype, self.output_names = inner.input_name, inner.input_dtype, inner.output_names
        self.input_shape = ["batch", *inner.input_shape[1:]]

    def run(self, x: np.ndarray, feeds: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        lo, hi = self.batch_range
        if not lo <= len(x) <= hi:
            raise EdgekdError(f"batch {len(x)} is outside the profile {lo}..{hi}")
        self.seen.append(len(x))
        return self.inner.run(x, feeds)


def tiny_onnx(path: Path, batch: int | str = "batch") -> Path:
    """pixels float32 [batch, 3, IMG, IMG] -> embedding [batch, DIM] (Flatten, MatMul)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((3 * IMG * IMG, DIM)).astype(np.float32) / 20
    nodes = [helper.make_node("Flatten", ["pixels"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "W"], ["embedding"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("pixels", TensorProto.FLOAT,
                                                                            [batch, 3, IMG, IMG])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, DIM])],
                              [numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def tiny_bundle(root: Path, batch: int | str = "batch") -> Path:
    """An ungated fp32 bundle of tiny_onnx with a 3-class label pack."""
    from edgekd.export.bundle import write_manifest
    from edgekd.labelpack import LabelPack
    from edgekd.preprocess import Preprocess

    root.mkdir(parents=True)
    tiny_onnx(root / "model.onnx", batch)
    emb = np.random.default_rng(1).standard_normal((3, DIM)).astype(np.float32)
    LabelPack(["red", "green", "blue"], emb / np.linalg.norm(emb, axis=1, keepdims=True),
              meta={"teacher_id": "tiny", "embed_dim": DIM}).save(root / "labels.npz")
    files = {"model": "model.onnx", "labels": "labels.npz"}
    write_manifest(root, {"target": "onnx", "precision": "fp32", "files": files,
                          "input": {"name": "pixels", "shape": [batch, 3, IMG, IMG], "dtype": "float32",
                                    "layout": "NCHW"}, "output": {"name": "embedding"},
                          "preprocess": Preprocess(size=(IMG, IMG)).to_dict(), "embed_dim": DIM, "logit_scale": 100.0,
                          "teacher_id": "tiny", "parity": {"passed": None, "skipped": True}})
    return root


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[Any, Path]:
    """'dynamic' and a static-batch bundle per batch size of CASES."""
    root = tmp_path_factory.mktemp("batching")
    out: dict[Any, Path] = {"dynamic": tiny_bundle(root / "dynamic")}
    for k in sorted({k for kind, k in CASES if kind == "static"}):
        out[k] = tiny_bundle(root / f"static{k}", batch=k)
    return out


@pytest.fixture(scope="module")
def images(image_folder) -> list[Path]:
    return sorted(image_folder.rglob("*.jpg"))[:N]


@pytest.fixture(autouse=True)
def _no_canary(monkeypatch):
    monkeypatch.setenv("EDGEKD_NO_CANARY", "1")  # a child-process check per load; not what these tests are about


def _model(bundles: dict[Any, Path], kind: str, k: int, monkeypatch) -> Path:
    """The bundle of case (kind, k); for "range", loads through create_backend come back as Limited(1, k)."""
    if kind == "static":
        return bundles[k]
    real = backends.create_backend
    monkeypatch.setattr(backends, "create_backend", lambda *a, **kw: Limited(real(*a, **kw), 1, k))
    return bundles["dynamic"]


def _load(bundle: Path):
    from edgekd.runtime.classifier import OpenVocabClassifier

    return OpenVocabClassifier.load(bundle, threads=1, allow_ungated=True)


@pytest.mark.parametrize("kind,k", CASES)
def test_run_model_of_the_parity_gate(bundles, kind, k):
    from edgekd.runtime.isolated import run_model

    x = np.random.default_rng(2).standard_normal((N, 3, IMG, IMG)).astype(np.float32)
    free = backends.create_backend(bundles["dynamic"] / "model.onnx", "onnxruntime", threads=1)
    one_by_one = np.concatenate([free.run(x[i:i + 1])["embedding"] for i in range(N)])
    if kind == "static":
        be = backends.create_backend(bundles[k] / "model.onnx", "onnxruntime", threads=1)
        assert be.batch_range == (k, k)  # read from the ONNX input's fixed dim
    else:
        be = Limited(free, 1, k)
    np.testing.assert_allclose(run_model(be, x)["embedding"], one_by_one, rtol=1e-5, atol=1e-6)
    if kind == "range":
        assert max(be.seen) == k and sum(be.seen) == N  # full batches, no padding needed above the minimum


@pytest.mark.parametrize("kind,k", CASES)
def test_classifier_embeds_and_classifies_17_images(bundles, images, kind, k, monkeypatch):
    reference = _load(bundles["dynamic"])
    one_by_one = np.stack([reference.embed(p) for p in images])
    clf = _load(_model(bundles, kind, k, monkeypatch))
    assert clf.static_batch == (k if kind == "static" or k == 1 else None)  # a range 1..1 is a fixed batch
    np.testing.assert_allclose(clf.embed_batch(images), one_by_one, rtol=1e-5, atol=1e-6)
    got = clf.classify_batch(images, top_k=2, batch_size=5)
    assert [[p.label for p in preds] for preds in got] == \
        [[p.label for p in reference.classify(img, top_k=2)] for img in images]


@pytest.mark.parametrize("kind,k", CASES)
def test_classify_cli_over_17_images(bundles, images, kind, k, monkeypatch):
    from edgekd.cli import cli

    reference = _load(bundles["dynamic"])
    expected = {str(p): reference.classify(p, top_k=1)[0] for p in images}
    bundle = _model(bundles, kind, k, monkeypatch)
    res = CliRunner().invoke(cli, ["classify", str(bundle), *map(str, images), "--json", "--top-k", "1",
                                   "--allow-ungated"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.output.splitlines() if line.startswith("{")]
    assert len(rows) == N
    for row in rows:
        want = expected[row["image"]]
        assert row["predictions"][0]["label"] == want.label
        assert row["predictions"][0]["score"] == pytest.approx(want.score, abs=1e-5)


class _TokenModel:
    """A numpy text tower: tokens int64 [B, 77] -> [B, DIM], batch limited to lo..hi."""

    name, input_name, output_names, input_dtype = "numpy", "tokens", ["embedding"], np.dtype(np.int64)

    def __init__(self, lo: int, hi: int | None):
        self.batch_range, self.seen = (lo, hi), []
        self.input_shape = [lo if lo == hi else "batch", 77]
        self.w = np.random.default_rng(3).standard_normal((77, DIM)).astype(np.float32)

    def run(self, x: np.ndarray, feeds: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        lo, hi = self.batch_range
        assert x.dtype == np.int64 and lo <= len(x) <= (hi or len(x)), (x.dtype, len(x))
        self.seen.append(len(x))
        return {"embedding": np.sin(x.astype(np.float32) @ self.w / 100)}


@pytest.mark.parametrize("kind,k", CASES)
def test_text_encoder_over_17_prompts(tmp_path, kind, k):
    from edgekd.runtime.text import TextEncoder

    def tokenizer(texts):
        return np.array([[ord(c) for c in t.ljust(77)[:77]] for t in texts], np.int64)

    texts = [f"a photo of a thing number {i}" for i in range(N)]
    model = _TokenModel(k if kind == "static" else 1, k)
    enc = TextEncoder(tmp_path, {"embed_dim": DIM}, tokenizer, model)
    one_by_one = np.concatenate([TextEncoder(tmp_path, {"embed_dim": DIM}, tokenizer, _TokenModel(1, None)).encode([t])
                                 for t in texts])
    np.testing.assert_allclose(enc.encode(texts), one_by_one, rtol=1e-5, atol=1e-6)
    assert max(model.seen) == k


@pytest.mark.parametrize("kind,k", CASES)
def test_device_parity_with_engines_of_every_batch_range(tmp_path, monkeypatch, kind, k):
    from edgekd.export.tensorrt import ENGINE_FILE, VAL_FILE, VAL_REFERENCE, device_parity, load_inputs, save_inputs

    trt, _ = install_fake_tensorrt_runtime(monkeypatch)
    (tmp_path / ENGINE_FILE).write_bytes(fake_engine_bytes(max_batch=k, static=kind == "static"))
    save_inputs(tmp_path / VAL_FILE, np.random.default_rng(4).standard_normal((N, 3, 4, 4)))
    np.save(tmp_path / VAL_REFERENCE, fake_model(load_inputs(tmp_path / VAL_FILE)))
    report = device_parity(tmp_path, "fp32")
    assert report["passed"], report["reasons"]
    assert report["metrics"]["images"] == N and report["metrics"]["cosine_min"] > 0.99999
    assert max(s[0] for s in trt.calls["set_input_shape"]) == k


def test_openvino_reads_the_batch_range(bundles):
    pytest.importorskip("openvino")
    assert backends.create_backend(bundles[3] / "model.onnx", "openvino", threads=1).batch_range == (3, 3)
    assert backends.create_backend(bundles["dynamic"] / "model.onnx", "openvino", threads=1).batch_range == (1, None)


# --- the helper itself ------------------------------------------------------------------------------------------------

class _Echo:
    """Returns its input's first column and the feeds it got; accepts lo..hi."""

    name, input_dtype = "echo", np.dtype(np.float32)

    def __init__(self, lo: int, hi: int | None):
        self.batch_range, self.calls = (lo, hi), []

    def run(self, x: np.ndarray, feeds: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        self.calls.append((len(x), feeds))
        return {"y": x[:, 0].copy()}


def test_run_batched_chunks_pads_and_passes_feeds():
    x = np.arange(17, dtype=np.float64)[:, None]
    be = _Echo(4, 4)
    feeds = {"channel_order": np.array([2, 1, 0])}
    out = run_batched(be, x, feeds)["y"]
    assert out.dtype == np.float32 and out.tolist() == list(range(17))
    assert [n for n, _ in be.calls] == [4, 4, 4, 4, 4] and all(f is feeds for _, f in be.calls)
    assert chunk_size(_Echo(1, None)) == 32 and chunk_size(_Echo(1, None), 5) == 5
    assert chunk_size(_Echo(2, 8), 100) == 8 and chunk_size(_Echo(4, 8), 1) == 4


def test_run_batched_errors_are_clear():
    with pytest.raises(ValueError, match="empty input"):
        run_batched(_Echo(1, None), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        run_batched(_Echo(1, None), np.zeros((2, 3)), batch_size=0)
    bad = _Echo(1, None)
    bad.run = lambda x, feeds=None: {"y": np.zeros(3)}
    with pytest.raises(EdgekdError, match=r"output 'y' has shape \(3,\) for a batch of 2"):
        run_batched(bad, np.zeros((2, 3)))
    with pytest.raises(EdgekdError, match=r"batch 9 is outside what the model accepts \(1\.\.8\)"):
        check_batch(_Echo(1, 8), 9)
    with pytest.raises(EdgekdError, match=r"batch 2 is outside what the model accepts \(exactly 4\)"):
        check_batch(_Echo(4, 4), 2)
    assert accepted_batch(type("Shape", (), {"input_shape": [5, 3]})()) == (5, 5)
