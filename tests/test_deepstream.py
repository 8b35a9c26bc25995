"""edgekd.deepstream: nvinfer configs whose preprocessing, replayed as nvinfer documents it, feeds the student exactly
what the runtime does (checked in onnxruntime; DeepStream itself is not available here)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_runtime_support import make_bundle

from edgekd import EdgekdError
from edgekd.cli import cli
from edgekd.deepstream import centre_crop, read_nvinfer_config, write_deepstream_config
from edgekd.preprocess import Preprocess


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("ds") / "b", gate=False)  # float32 NCHW `pixels`


def nvinfer_input(frame: np.ndarray, props: dict[str, str]) -> np.ndarray:
    """nvinfer's documented preprocessing of an RGB frame already at network size: y = nsf * (x - offsets[c])."""
    offsets = np.array([float(v) for v in props["offsets"].split(";")], np.float32)
    y = float(props["net-scale-factor"]) * (frame.astype(np.float32) - offsets)
    return np.ascontiguousarray(y.transpose(2, 0, 1)[None])


def test_config_feeds_the_student_what_the_runtime_does(bundle, tmp_path):
    import onnxruntime as ort

    from edgekd.runtime.classifier import OpenVocabClassifier

    path, cfg = write_deepstream_config(bundle, tmp_path / "ds", frame_size=(1280, 720))
    props = read_nvinfer_config(path)
    assert props["output-tensor-meta"] == "1" and props["network-type"] == "100" and props["network-mode"] == "0"
    assert props["infer-dims"] == "3;32;32" and props["model-color-format"] == "0"
    assert props["output-blob-names"] == "embedding" and props["batch-size"] == "1"
    assert props["onnx-file"].endswith("model_deepstream.onnx") and Path(props["onnx-file"]).is_file()
    assert cfg.src_crop == "280:0:720:720" and "UNTESTED" in path.read_text()
    clf = OpenVocabClassifier.load(bundle, allow_ungated=True)
    sess = ort.InferenceSession(props["onnx-file"], providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for _ in range(3):
        frame = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)  # at network size: no resizing on either side
        emb = sess.run(["embedding"], {"pixels": nvinfer_input(frame, props)})[0][0]
        np.testing.assert_allclose(emb / np.linalg.norm(emb), clf.embed(frame), atol=1e-5)


def test_engine_bundle_keeps_the_engine_and_says_what_is_approximate(bundle, tmp_path):
    eng = tmp_path / "eng"
    shutil.copytree(bundle, eng)
    (eng / "model.onnx").rename(eng / "model.engine")
    meta = json.loads((eng / "edgekd.json").read_text())
    meta["files"]["model"] = "model.engine"
    meta["sha256"]["model.engine"] = hashlib.sha256((eng / "model.engine").read_bytes()).hexdigest()
    del meta["sha256"]["model.onnx"]
    meta["precision"] = "fp16"
    (eng / "edgekd.json").write_text(json.dumps(meta))
    path, cfg = write_deepstream_config(eng)
    props = read_nvinfer_config(path)
    assert path.parent == eng / "deepstream" and "onnx-file" not in props
    assert props["model-engine-file"] == str((eng / "model.engine").resolve()) and props["network-mode"] == "2"
    assert any("per-channel" in n and "2.8%" in n for n in cfg.notes)


def test_frame_bundles_are_refused_with_the_fix(bundle, tmp_path):
    fr = tmp_path / "fr"
    shutil.copytree(bundle, fr)
    meta = json.loads((fr / "edgekd.json").read_text())
    meta["input"].update({"name": "frames", "dtype": "uint8", "layout": "NHWC"})
    (fr / "edgekd.json").write_text(json.dumps(meta))
    with pytest.raises(EdgekdError, match="--preprocess-in-graph none"):
        write_deepstream_config(fr)


def test_centre_crop_and_padding_modes():
    pp = Preprocess(size=(224, 224))
    assert centre_crop((1920, 1080), pp) == "420:0:1080:1080" and centre_crop((640, 480), pp) == "80:0:480:480"
    assert centre_crop((480, 640), Preprocess(size=(224, 224))) == "0:80:480:480"
    from edgekd.deepstream import nvinfer_preprocessing

    props, scale, _ = nvinfer_preprocessing(Preprocess(size=(224, 224), resize_mode="longest", std=(0.5, 0.5, 0.5)))
    assert props["maintain-aspect-ratio"] == 1 and props["symmetric-padding"] == 1 and scale == (1.0, 1.0, 1.0)
    assert props["net-scale-factor"] == pytest.approx(1 / 127.5)


def test_cli(bundle, tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["deepstream-config", "--help"])
    assert res.exit_code == 0 and "UNTESTED" in res.output
    out = tmp_path / "o"
    res = runner.invoke(cli, ["deepstream-config", str(bundle), "--out", str(out), "--frame-size", "640x480"])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1] == str(tmp_path / "o" / "nvinfer_config.txt")
    assert "src-crop=80:0:480:480" in res.output
    res = runner.invoke(cli, ["deepstream-config", str(bundle), "--frame-size", "wide"])
    assert res.exit_code == 2 and "WIDTHxHEIGHT" in res.output


def test_probe_example_scores_the_tensor_meta(bundle):
    """examples/gstreamer/deepstream_probe.py's meta walk and scoring, on stand-ins for pyds' objects (the real
    bindings need DeepStream)."""
    from types import SimpleNamespace as NS

    from conftest import load_benchmark

    from edgekd.labelpack import load_label_pack
    from edgekd.runtime.labels import LabelSet

    probe = load_benchmark("deepstream_probe", "examples/gstreamer")
    labels = LabelSet.from_pack(load_label_pack(bundle / "labels.npz"))
    rng = np.random.default_rng(0)
    outs = [rng.normal(size=labels.pack.embed_dim).astype(np.float32) for _ in range(2)]

    def linked(items):
        node = None
        for item in reversed(items):
            node = NS(data=item, next=node)
        return node

    tensor = "tensor-output"
    frames = [NS(frame_num=i, frame_user_meta_list=linked([NS(base_meta=NS(meta_type="other"), user_meta_data=None),
                                                           NS(base_meta=NS(meta_type=tensor), user_meta_data=out)]))
              for i, out in enumerate(outs)]
    pyds = NS(NvDsFrameMeta=NS(cast=lambda x: x), NvDsUserMeta=NS(cast=lambda x: x),
              NvDsInferTensorMeta=NS(cast=lambda x: x), NvDsMetaType=NS(NVDSINFER_TENSOR_OUTPUT_META=tensor),
              get_nvds_LayerInfo=lambda meta, i: NS(buffer=meta), get_ptr=lambda arr: arr.ctypes.data)
    got = list(probe.embeddings(NS(frame_meta_list=linked(frames)), pyds, labels.pack.embed_dim))
    assert [n for n, _ in got] == [0, 1]
    for (_, emb), out in zip(got, outs):
        np.testing.assert_allclose(emb, out / np.linalg.norm(out), rtol=1e-6)
