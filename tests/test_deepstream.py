"""edgekd.deepstream: nvinfer configs whose preprocessing, replayed as nvinfer documents it, feeds the student exactly
what the runtime does (checked in onnxruntime; DeepStream itself is not available here); what nvinfer reads per bundle
(ONNX / TensorRT, fp32 / fp16 / INT8) and what it is refused; every key written is one NVIDIA documents."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import pytest
from click.testing import CliRunner
from test_export_tensorrt import no_trt, student_onnx  # noqa: F401  (fixtures: a tiny student; no TensorRT here)
from test_runtime_support import gate_images, make_bundle

from edgekd import EdgekdError
from edgekd.cli import EXIT_NEEDS_DEVICE, cli
from edgekd.deepstream import (
    SecondaryGie,
    asymmetric_qdq,
    build_nvinfer_config,
    centre_crop,
    read_nvinfer_config,
    write_deepstream_config,
)
from edgekd.preprocess import Preprocess
from edgekd.runtime.bundle import UngatedBundleError, read_bundle

# The [property] keys gst-nvinfer reads, as NVIDIA publishes them for DeepStream 7.1 / 8.0: the "Gst-nvinfer Property
# Group Supported Keys" table of the Gst-nvinfer plugin page (docs.nvidia.com/metropolis/deepstream/dev-guide/text/
# DS_plugin_gst-nvinfer.html) documents the keys of the plugin's config parser, whose macros NVIDIA publishes in the
# DeepStream 8.0 SDK API reference (sdk-api/gstnvinfer__property__parser_8h.html, CONFIG_GROUP_INFER_*). Only the
# parser listing could be read here: its DS 8.0 reference and NVIDIA's released DS 6.2 source of the same header
# (sources/gst-plugins/gst-nvinfer/gstnvinfer_property_parser.h); the detector/classifier-only keys are left out.
NVINFER_PROPERTY_KEYS = frozenset({
    "gie-unique-id", "process-mode", "interval", "labelfile-path", "gpu-id", "secondary-reinfer-interval",
    "output-tensor-meta", "enable-dla", "use-dla-core", "batch-size", "tensor-meta-pool-size", "network-mode",
    "model-engine-file", "int8-calib-file", "workspace-size", "output-blob-names", "network-type",
    "force-implicit-batch-dim", "infer-dims", "output-io-formats", "layer-device-precision", "model-color-format",
    "net-scale-factor", "offsets", "mean-file", "maintain-aspect-ratio", "symmetric-padding", "scaling-filter",
    "scaling-compute-hw", "network-input-order", "input-tensor-from-meta", "custom-lib-path", "engine-create-func-name",
    "custom-network-config", "model-file", "proto-file", "uff-file", "tlt-encoded-model", "tlt-model-key", "onnx-file",
    "input-object-min-width", "input-object-min-height", "input-object-max-width", "input-object-max-height",
    "operate-on-gie-id", "operate-on-class-ids", "filter-out-class-ids",
})


def documented(path: Path) -> dict[str, str]:
    """The config at `path`, after checking that every key in it is one NVIDIA documents (every test reads it so)."""
    props = read_nvinfer_config(path)
    assert set(props) <= NVINFER_PROPERTY_KEYS, set(props) - NVINFER_PROPERTY_KEYS
    return props


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("ds") / "b")  # gated, float32 NCHW `pixels`, CLIP's per-channel stds


@pytest.fixture(scope="module")
def ungated(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("ds") / "u", gate=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, student_onnx) -> Path:  # noqa: F811
    """A run directory of test_export_tensorrt's tiny student (CLIP's per-channel stds), to export with the CLI."""
    from edgekd.students.io import save_student

    run = tmp_path_factory.mktemp("run")
    save_student(run, student_onnx[0])
    return run


def qdq_onnx(path: Path, zero_point: np.ndarray | None, op: str = "QuantizeLinear") -> Path:
    """x -> QuantizeLinear -> DequantizeLinear -> y with scale 0.1 and `zero_point` (None: omitted); `op` another
    quantized op instead (e.g. QLinearMatMul)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s")]
    qparams = ["s"]
    if zero_point is not None:
        inits.append(numpy_helper.from_array(zero_point, "zp"))
        qparams.append("zp")
    nodes = [helper.make_node(op, ["x", *qparams], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", *qparams], ["y"], name="dq")]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def export_cli(run_dir: Path, out: Path, target: str, precision: str, *options: str) -> Path:
    """`edgekd export` as a user runs it; TensorRT without tensorrt (the no_trt fixture) prepares the device bundle."""
    res = CliRunner().invoke(cli, ["export", str(run_dir), "--target", target, "--precision", precision, "--out",
                                   str(out), "--small-gate-ok", *options])
    assert res.exit_code == (EXIT_NEEDS_DEVICE if target == "tensorrt" else 0), res.output
    return out


def with_fake_engine(src: Path, dst: Path, precision: str) -> Path:
    """A copy of bundle `src` as `edgekd export --from-onnx` leaves it on the device: model.engine as files.model (its
    sha256 recorded), precision, and the engine's parity verdict."""
    shutil.copytree(src, dst)
    (dst / "model.engine").write_bytes(b"serialized engine stand-in")
    meta = json.loads((dst / "edgekd.json").read_text())
    meta["files"]["model"] = "model.engine"
    meta["sha256"]["model.engine"] = hashlib.sha256((dst / "model.engine").read_bytes()).hexdigest()
    meta["precision"] = precision
    meta["parity"] = {"passed": True, "skipped": False, "reasons": [], "where": "device (--from-onnx)"}
    (dst / "edgekd.json").write_text(json.dumps(meta))
    return dst


def nvinfer_input(frame: np.ndarray, props: dict[str, str]) -> np.ndarray:
    """nvinfer's documented preprocessing of an RGB frame already at network size: y = nsf * (x - offsets[c])."""
    offsets = np.array([float(v) for v in props["offsets"].split(";")], np.float32)
    y = float(props["net-scale-factor"]) * (frame.astype(np.float32) - offsets)
    return np.ascontiguousarray(y.transpose(2, 0, 1)[None])


def test_config_feeds_the_student_what_the_runtime_does(bundle, tmp_path):
    import onnxruntime as ort

    from edgekd.runtime.classifier import OpenVocabClassifier

    path, cfg = write_deepstream_config(bundle, tmp_path / "ds", frame_size=(1280, 720))
    props = documented(path)
    assert props["output-tensor-meta"] == "1" and props["network-type"] == "100" and props["network-mode"] == "0"
    assert props["infer-dims"] == "3;32;32" and props["model-color-format"] == "0"
    assert props["output-blob-names"] == "embedding" and props["batch-size"] == "1"
    assert props["onnx-file"].endswith("model_deepstream.onnx") and Path(props["onnx-file"]).is_file()
    assert props["model-engine-file"] == props["onnx-file"] + "_b1_gpu0_fp32.engine"
    assert "int8-calib-file" not in props and not any("parity gate" in n for n in cfg.notes)
    assert cfg.src_crop == "280:0:720:720" and "UNTESTED" in path.read_text()
    clf = OpenVocabClassifier.load(bundle)
    sess = ort.InferenceSession(props["onnx-file"], providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for _ in range(3):
        frame = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)  # at network size: no resizing on either side
        emb = sess.run(["embedding"], {"pixels": nvinfer_input(frame, props)})[0][0]
        np.testing.assert_allclose(emb / np.linalg.norm(emb), clf.embed(frame), atol=1e-5)


def test_engine_bundle_keeps_the_engine_and_says_what_is_approximate(bundle, tmp_path):
    eng = with_fake_engine(bundle, tmp_path / "eng", "fp16")
    (eng / "model.onnx").unlink()
    path, cfg = write_deepstream_config(eng)
    props = documented(path)
    assert path.parent == eng / "deepstream" and "onnx-file" not in props
    assert props["model-engine-file"] == str((eng / "model.engine").resolve()) and props["network-mode"] == "2"
    assert any("per-channel" in n and "2.8%" in n for n in cfg.notes)


def test_every_written_key_is_documented_at_every_precision(bundle):
    """fp32 / fp16 / int8 (with a calibration cache), ONNX and engine, primary and secondary mode (every optional
    key of it): no key outside NVIDIA's documented set."""
    info = read_bundle(bundle)
    full = SecondaryGie(operate_on_class_ids=(0, 2), reinfer_interval=5, min_object_size=(16, 16))
    for precision in ("fp32", "fp16", "int8"):
        meta = {**info.meta, "precision": precision}
        for model, calib in (("/m/model.onnx", "/m/calib.cache" if precision == "int8" else None),
                             ("/m/model.engine", None)):
            for secondary, frame_size in ((None, (640, 480)), (SecondaryGie(), None), (full, None)):
                cfg = build_nvinfer_config(replace(info, meta=meta), model, frame_size, 4, 1, calib, secondary)
                assert set(cfg.properties) <= NVINFER_PROPERTY_KEYS, (precision, model, secondary)
                assert cfg.properties["network-mode"] == {"fp32": 0, "int8": 1, "fp16": 2}[precision]
                assert cfg.properties["process-mode"] == (1 if secondary is None else 2)
                if model.endswith(".onnx"):
                    assert cfg.properties["model-engine-file"] == f"{model}_b4_gpu1_{precision}.engine"
    with pytest.raises(EdgekdError, match="int8-calib-file"):  # nvinfer would quietly build FP16
        build_nvinfer_config(replace(info, meta={**info.meta, "precision": "int8"}), "/m/model.onnx")


SECONDARY_KEYS = {"process-mode", "gie-unique-id", "operate-on-gie-id", "operate-on-class-ids",
                  "secondary-reinfer-interval", "input-object-min-width", "input-object-min-height"}


def test_secondary_mode_embeds_the_detectors_objects(bundle, tmp_path):
    """process-mode=2 on the objects of GIE 1 (classes 0 and 2, ';' as GKeyFile's integer lists take them), with its
    own unique id; the preprocessing keys are those of the primary config, and no whole-frame crop."""
    gie = SecondaryGie(operate_on_class_ids=(2, 0, 2), reinfer_interval=10, min_object_size=(32, 64))
    path, cfg = write_deepstream_config(bundle, tmp_path / "sgie", batch_size=16, secondary=gie)
    props = documented(path)
    assert props["process-mode"] == "2" and props["gie-unique-id"] == "2" and props["operate-on-gie-id"] == "1"
    assert props["operate-on-class-ids"] == "0;2" and props["secondary-reinfer-interval"] == "10"
    assert props["input-object-min-width"] == "32" and props["input-object-min-height"] == "64"
    assert props["output-tensor-meta"] == "1" and props["network-type"] == "100" and props["batch-size"] == "16"
    text = path.read_text()
    assert "UNTESTED" in text and "obj_user_meta_list (unique_id 2)" in text
    primary = documented(write_deepstream_config(bundle, tmp_path / "sgie", batch_size=16)[0])  # overwrites it
    assert primary["process-mode"] == "1" and primary["gie-unique-id"] == "1"
    assert {k: v for k, v in props.items() if k not in SECONDARY_KEYS} == \
        {k: v for k, v in primary.items() if k not in SECONDARY_KEYS}  # same model, same preprocessing
    assert cfg.src_crop is None and not any("src-crop" in n for n in cfg.notes)
    assert any("stretches the whole box to 32x32" in n and "classify_regions" in n for n in cfg.notes)
    assert any("secondary-reinfer-interval" in n and "network-type=100" in n for n in cfg.notes)
    assert not any("batch-size=1" in n for n in cfg.notes)

    props = documented(write_deepstream_config(bundle, tmp_path / "dflt", secondary=SecondaryGie())[0])
    assert props["process-mode"] == "2" and props["operate-on-gie-id"] == "1" and props["gie-unique-id"] == "2"
    assert not {"operate-on-class-ids", "secondary-reinfer-interval", "input-object-min-width"} & set(props)


def test_secondary_mode_refuses_what_nvinfer_would_misread(bundle, tmp_path):
    with pytest.raises(EdgekdError, match="leave out --frame-size"):  # the crop would cut the detector's input
        write_deepstream_config(bundle, tmp_path / "no", frame_size=(640, 480), secondary=SecondaryGie())
    assert not (tmp_path / "no").exists()
    for kwargs, match in (({"gie_unique_id": 1}, "id of its own"), ({"gie_unique_id": 0}, ">= 1"),
                          ({"operate_on_gie_id": 0}, "primary detector's gie-unique-id"),
                          ({"operate_on_class_ids": (0, -1)}, r"class indices \(>= 0\), got \[-1\]"),
                          ({"reinfer_interval": -1}, ">= 0 frames"), ({"min_object_size": (0, 8)}, "leave it out")):
        with pytest.raises(EdgekdError, match=match):
            SecondaryGie(**kwargs)


def test_ungated_bundles_are_refused_unless_allowed(ungated, tmp_path):
    with pytest.raises(UngatedBundleError, match="--allow-ungated"):
        write_deepstream_config(ungated, tmp_path / "no")
    path, cfg = write_deepstream_config(ungated, tmp_path / "yes", allow_ungated=True)
    assert documented(path)["network-mode"] == "0" and any("allow_ungated" in n for n in cfg.notes)
    res = CliRunner().invoke(cli, ["deepstream-config", str(ungated), "--out", str(tmp_path / "cli")])
    assert res.exit_code == 1 and "--allow-ungated" in res.output and not (tmp_path / "cli").exists()
    res = CliRunner().invoke(cli, ["deepstream-config", str(ungated), "--out", str(tmp_path / "cli"),
                                   "--allow-ungated"])
    assert res.exit_code == 0, res.output


def test_frame_bundles_are_refused_with_a_fix_that_export_takes(bundle, tmp_path):
    fr = tmp_path / "fr"
    shutil.copytree(bundle, fr)
    meta = json.loads((fr / "edgekd.json").read_text())
    meta["input"].update({"name": "frames", "dtype": "uint8", "layout": "NHWC"})
    (fr / "edgekd.json").write_text(json.dumps(meta))
    with pytest.raises(EdgekdError, match="export the bundle again without --preprocess-in-graph") as err:
        write_deepstream_config(fr)
    assert "--preprocess-in-graph none" not in str(err.value)
    res = CliRunner().invoke(cli, ["export", str(bundle), "--preprocess-in-graph", "none"])
    assert res.exit_code == 2 and "'none' is not one of" in res.output  # the old hint: rejected by export


# --- TensorRT bundles, made as a user makes them on a machine without TensorRT -----------------------------------

def test_tensorrt_fp16_bundle_reads_its_fp16_onnx(run_dir, tmp_path, no_trt):  # noqa: F811
    trt = export_cli(run_dir, tmp_path / "trt16", "tensorrt", "fp16", "--val", str(gate_images()))
    meta = json.loads((trt / "edgekd.json").read_text())
    assert "model" not in meta["files"] and meta["files"]["onnx_fp16"] == "model.fp16.onnx"
    path, cfg = write_deepstream_config(trt, batch_size=2)  # gated: parity.onnx_gate passed on model.fp16.onnx
    props = documented(path)
    assert props["network-mode"] == "2" and props["batch-size"] == "2"
    assert Path(props["onnx-file"]).name == "model_deepstream.fp16.onnx"  # model.fp16.onnx with the std folded in
    assert props["model-engine-file"] == props["onnx-file"] + "_b2_gpu0_fp16.engine"  # nvinfer's own cache name
    assert any("model.fp16.onnx" in n and "exact" in n for n in cfg.notes)


def test_tensorrt_int8_needs_the_engine_edgekd_built(run_dir, tmp_path, no_trt):  # noqa: F811
    trt = export_cli(run_dir, tmp_path / "trt8", "tensorrt", "int8", "--calib", str(gate_images()), "--no-gate")
    with pytest.raises(EdgekdError, match="engine is not built yet") as err:
        write_deepstream_config(trt)
    assert f"edgekd export {trt} --target tensorrt --precision int8 --from-onnx" in str(err.value)
    assert "--precision fp16" in str(err.value) and "\n" not in str(err.value)
    eng = with_fake_engine(trt, tmp_path / "built", "int8")
    path, cfg = write_deepstream_config(eng)
    props = documented(path)
    assert props["network-mode"] == "1" and props["model-engine-file"] == str((eng / "model.engine").resolve())
    assert "onnx-file" not in props and "int8-calib-file" not in props


def test_engine_left_by_build_engine_sh_is_used(run_dir, tmp_path, no_trt):  # noqa: F811
    """trtexec (export/jetson/build_engine.sh) writes model.engine + engine.json and leaves edgekd.json as it was."""
    trt = export_cli(run_dir, tmp_path / "sh", "tensorrt", "fp16", "--val", str(gate_images()))
    (trt / "model.engine").write_bytes(b"trtexec engine stand-in")
    digest = hashlib.sha256(b"trtexec engine stand-in").hexdigest()
    (trt / "engine.json").write_text(json.dumps({"engine_file": "model.engine", "engine_sha256": digest}))
    with pytest.raises(UngatedBundleError, match="--from-onnx"):  # nobody checked that engine's embeddings
        write_deepstream_config(trt)
    props = documented(write_deepstream_config(trt, allow_ungated=True)[0])
    assert props["model-engine-file"] == str((trt / "model.engine").resolve()) and props["network-mode"] == "2"
    (trt / "model.engine").write_bytes(b"another engine")
    with pytest.raises(EdgekdError, match="sha256 differs"):
        write_deepstream_config(trt, allow_ungated=True)


def test_tensorrt_int8_with_a_calibration_cache(run_dir, tmp_path, no_trt):  # noqa: F811
    """--trt-calibrator: model.onnx + the calibration cache nvinfer's IInt8EntropyCalibrator2 reads."""
    from edgekd.export.tensorrt import calib_cache_name

    trt = export_cli(run_dir, tmp_path / "cal", "tensorrt", "int8", "--calib", str(gate_images()), "--no-gate",
                     "--trt-calibrator")
    cache = trt / calib_cache_name(trt / "model.onnx")
    cache.write_text("TRT-8601-EntropyCalibration2\npixels: 3c010a14\n")
    path, _ = write_deepstream_config(trt, allow_ungated=True)  # the engine nvinfer builds is not gated
    props = documented(path)
    assert props["network-mode"] == "1" and props["int8-calib-file"] == str(cache.resolve())
    assert Path(props["onnx-file"]).name == "model_deepstream.onnx"
    assert props["model-engine-file"] == props["onnx-file"] + "_b1_gpu0_int8.engine"
    cache.write_text("TRT-8601-MinMaxCalibration\n")
    with pytest.raises(EdgekdError, match="--calib-method entropy"):
        write_deepstream_config(trt, allow_ungated=True)


def test_symmetric_qdq_check(tmp_path):
    """TensorRT's explicit quantization: int8 Q/DQ with zero points 0 (ONNX's default without one is uint8)."""
    assert asymmetric_qdq(qdq_onnx(tmp_path / "sym.onnx", np.array(0, np.int8))) is None
    u8 = qdq_onnx(tmp_path / "u8.onnx", np.array(128, np.uint8))  # onnxruntime's default activations
    assert asymmetric_qdq(u8).startswith("QuantizeLinear 'q': ") and "UINT8" in asymmetric_qdq(u8)
    assert "non-zero zero point" in asymmetric_qdq(qdq_onnx(tmp_path / "zp.onnx", np.array(3, np.int8)))
    assert "no zero point: ONNX quantizes to uint8" in asymmetric_qdq(qdq_onnx(tmp_path / "none.onnx", None))
    assert "INT32 zero point" in asymmetric_qdq(qdq_onnx(tmp_path / "i32.onnx", np.array(0, np.int32)))
    assert asymmetric_qdq(qdq_onnx(tmp_path / "qop.onnx", None, "QLinearMatMul")).startswith("QLinearMatMul")


def test_onnx_int8_bundles_are_refused_with_the_fix(run_dir, tmp_path):
    ort8 = export_cli(run_dir, tmp_path / "ort8", "onnx", "int8", "--calib", str(gate_images()), "--no-gate")
    with pytest.raises(EdgekdError, match="INT8 that TensorRT cannot take") as err:  # onnxruntime flavour
        write_deepstream_config(ort8, allow_ungated=True)
    msg = str(err.value)
    assert "symmetric int8" in msg and "--target tensorrt --precision int8" in msg and "fp16" in msg
    assert "\n" not in msg
    # symmetric Q/DQ in an ONNX bundle: still no engine and no calibration file, so nvinfer would build FP16
    qdq_onnx(ort8 / "model.onnx", np.array(0, np.int8))
    meta = json.loads((ort8 / "edgekd.json").read_text())
    meta["sha256"]["model.onnx"] = hashlib.sha256((ort8 / "model.onnx").read_bytes()).hexdigest()
    (ort8 / "edgekd.json").write_text(json.dumps(meta))
    with pytest.raises(EdgekdError, match="without an engine or a calibration file"):
        write_deepstream_config(ort8, allow_ungated=True)


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
    assert res.exit_code == 0 and "UNTESTED" in res.output and "--allow-ungated" in res.output
    out = tmp_path / "o"
    res = runner.invoke(cli, ["deepstream-config", str(bundle), "--out", str(out), "--frame-size", "640x480"])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1] == str(tmp_path / "o" / "nvinfer_config.txt")
    assert "src-crop=80:0:480:480" in res.output
    res = runner.invoke(cli, ["deepstream-config", str(bundle), "--frame-size", "wide"])
    assert res.exit_code == 2 and "WIDTHxHEIGHT" in res.output


def test_cli_secondary(bundle, tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["deepstream-config", "--help"])
    assert res.exit_code == 0 and "--secondary" in res.output and "--operate-on-class-ids" in res.output
    out = tmp_path / "s"
    res = runner.invoke(cli, ["deepstream-config", str(bundle), "--out", str(out), "--secondary",
                              "--operate-on-gie-id", "4", "--operate-on-class-ids", "2,0", "--gie-unique-id", "7",
                              "--reinfer-interval", "5", "--min-object-size", "32x48", "--batch-size", "8"])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1] == str(out / "nvinfer_config.txt")
    props = documented(out / "nvinfer_config.txt")
    assert (props["process-mode"], props["operate-on-gie-id"], props["operate-on-class-ids"]) == ("2", "4", "0;2")
    assert (props["gie-unique-id"], props["secondary-reinfer-interval"]) == ("7", "5")
    assert (props["input-object-min-width"], props["input-object-min-height"], props["batch-size"]) == ("32", "48", "8")
    assert "note: the student sees a centre crop of each box" in res.output
    for args, code, message in (
            (["--secondary", "--operate-on-class-ids", "person"], 2, "not a comma list of the detector's class ids"),
            (["--secondary", "--operate-on-class-ids", "0,-2"], 2, "class indices, >= 0"),
            (["--secondary", "--min-object-size", "0x5"], 2, "width and height must be positive"),
            (["--secondary", "--gie-unique-id", "0"], 2, "--gie-unique-id"),
            (["--operate-on-class-ids", "0", "--reinfer-interval", "3"], 2,
             "--operate-on-class-ids, --reinfer-interval apply to secondary mode only: add --secondary"),
            (["--secondary", "--gie-unique-id", "1"], 1, "give the secondary an id of its own"),
            (["--secondary", "--frame-size", "640x480"], 1, "leave out --frame-size")):
        res = runner.invoke(cli, ["deepstream-config", str(bundle), "--out", str(tmp_path / "bad"), *args])
        assert res.exit_code == code and message in res.output, (args, res.output)
        assert len([line for line in res.output.splitlines() if line.startswith("Error")]) == 1, res.output


def linked(items):
    """A GList stand-in (data, next) over `items`; None when empty, as pyds gives an empty list."""
    node = None
    for item in reversed(items):
        node = NS(data=item, next=node)
    return node


def fake_pyds():
    """Stand-ins for the pyds calls the probe makes, with the contract of NVIDIA's bindings and of gst-nvinfer
    (deepstream_python_apps for DeepStream 6.x: bindings/src/bindfunctions.cpp get_nvds_LayerInfo points the layer's
    buffer at the meta's own out_buf_ptrs_host[j]; gstnvinfer_meta_utils.cpp attach_tensor_output_meta gives every
    tensor meta of one nvinfer the same output_layers_info array, so a layer read late would hold another object's
    buffer). Casts are identities; get_ptr is the buffer's address."""
    def layer_info(meta, j):
        if not 0 <= j < meta.num_output_layers:
            raise IndexError(j)
        info = meta.output_layers_info[j]
        info.buffer = meta.out_buf_ptrs_host[j]
        return info

    cast = NS(cast=lambda x: x)
    return NS(NvDsFrameMeta=cast, NvDsObjectMeta=cast, NvDsUserMeta=cast, NvDsInferTensorMeta=cast,
              NvDsMetaType=NS(NVDSINFER_TENSOR_OUTPUT_META="tensor-output"), get_nvds_LayerInfo=layer_info,
              get_ptr=lambda buf: buf.ctypes.data)


def tensor_user_meta(unique_id: int, out: np.ndarray, layers: list) -> NS:
    """NvDsUserMeta carrying the NvDsInferTensorMeta of nvinfer `unique_id` (one output layer, `layers` shared)."""
    meta = NS(unique_id=unique_id, num_output_layers=1, output_layers_info=layers, out_buf_ptrs_host=[out])
    return NS(base_meta=NS(meta_type="tensor-output"), user_meta_data=meta)


OTHER_META = NS(base_meta=NS(meta_type="other"), user_meta_data=None)


def test_probe_example_scores_the_tensor_meta(bundle):
    """examples/gstreamer/deepstream_probe.py's meta walk and scoring, on stand-ins for pyds' objects (the real
    bindings need DeepStream): frames (primary nvinfer), and objects (secondary nvinfer)."""
    from conftest import load_benchmark

    from edgekd.labelpack import load_label_pack
    from edgekd.runtime.labels import LabelSet

    probe = load_benchmark("deepstream_probe", "examples/gstreamer")
    labels = LabelSet.from_pack(load_label_pack(bundle / "labels.npz"))
    dim, pyds, layers = labels.pack.embed_dim, fake_pyds(), [NS(buffer=None)]
    rng = np.random.default_rng(0)
    outs = [rng.normal(size=dim).astype(np.float32) for _ in range(2)]
    frames = [NS(frame_num=i, obj_meta_list=None,
                 frame_user_meta_list=linked([OTHER_META, tensor_user_meta(1, out, layers)]))
              for i, out in enumerate(outs)]
    got = list(probe.embeddings(NS(frame_meta_list=linked(frames)), pyds, dim))
    assert [n for n, _ in got] == [0, 1]
    for (_, emb), out in zip(got, outs):
        np.testing.assert_allclose(emb, out / np.linalg.norm(out), rtol=1e-6)
    lines = list(probe.scored(NS(frame_meta_list=linked(frames)), pyds, labels, 2))
    assert len(lines) == 2 and lines[0].startswith("frame 0: ") and lines[0].count(", ") == 1


def test_probe_example_scores_each_object_of_the_secondary(bundle):
    """Objects: the tensor meta of the secondary nvinfer (unique_id 2) in each object's obj_user_meta_list; another
    nvinfer's tensor meta (3), other user meta, objects without any (skipped by nvinfer) and a detector's own tensor
    meta on the frame are not read as embeddings."""
    from conftest import load_benchmark

    from edgekd.labelpack import load_label_pack
    from edgekd.runtime.labels import LabelSet

    probe = load_benchmark("deepstream_probe", "examples/gstreamer")
    labels = LabelSet.from_pack(load_label_pack(bundle / "labels.npz"))
    dim, pyds, layers = labels.pack.embed_dim, fake_pyds(), [NS(buffer=None)]
    rng = np.random.default_rng(1)
    a, b, c, other = (rng.normal(size=dim).astype(np.float32) for _ in range(4))

    def obj(object_id, class_id, label, rect, metas):
        return NS(object_id=object_id, class_id=class_id, obj_label=label, obj_user_meta_list=linked(metas),
                  rect_params=NS(left=rect[0], top=rect[1], width=rect[2], height=rect[3]))

    frame0 = NS(frame_num=0, frame_user_meta_list=linked([tensor_user_meta(1, np.zeros(5, np.float32), layers)]),
                obj_meta_list=linked([
                    obj(7, 2, "person", (10, 20, 64, 128),
                        [OTHER_META, tensor_user_meta(2, a, layers), tensor_user_meta(3, other, layers)]),
                    obj(probe.UNTRACKED_OBJECT_ID, 0, "", (0, 0, 32, 32), [tensor_user_meta(2, b, layers)]),
                    obj(8, 1, "car", (5, 5, 8, 8), [])]))
    frame1 = NS(frame_num=1, frame_user_meta_list=None,
                obj_meta_list=linked([obj(7, 2, "person", (12, 20, 64, 128), [tensor_user_meta(2, c, layers)])]))
    batch = NS(frame_meta_list=linked([frame0, frame1]))
    got = list(probe.object_embeddings(batch, pyds, dim, unique_id=2))
    assert [(n, o.object_id) for n, o, _ in got] == [(0, 7), (0, probe.UNTRACKED_OBJECT_ID), (1, 7)]
    for (_, _, emb), out in zip(got, (a, b, c)):
        np.testing.assert_allclose(emb, out / np.linalg.norm(out), rtol=1e-6)
    lines = list(probe.scored(batch, pyds, labels, 1, unique_id=2))
    top = labels.predict((a / np.linalg.norm(a))[None], 1)[0][0]
    assert lines[0] == f"frame 0 object 7 (person, class 2) at 10,20 64x128: {top.label} {top.score:.3f}"
    assert lines[1].startswith("frame 0 object untracked (class 0) at 0,0 32x32: ") and len(lines) == 3
    args = NS(video="v.mp4", src_crop="", width=1280, height=720, config="ds/nvinfer_config.txt",
              detector="pgie.txt", tracker="libnvds_nvmultiobjecttracker.so", tracker_config="")
    assert ("nvinfer name=detector config-file-path=pgie.txt ! nvtracker ll-lib-file=libnvds_nvmultiobjecttracker.so"
            " ! nvinfer name=infer config-file-path=ds/nvinfer_config.txt ! fakesink") in probe.pipeline_text(args)
