"""TensorRT target: device-ready bundle (fp16 / Q/DQ ONNX, gated) + exit 4 without tensorrt; the builder against
fake tensorrt modules of 8.6, 10.3 and 11.4 (tests/fake_tensorrt.py: each version's documented API, present and
absent); trtexec commands and build_engine.sh per version; engine checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_tensorrt import make_fake_trt

from edgekd import EdgekdError

IMG = 32
DIM = 16


# --- fakes (tests/fake_tensorrt.py: one module per TensorRT family) -------------------------------------------

def make_fake_cudart(name: bytes = b"Orin", cc: tuple[int, int] = (8, 7)) -> types.SimpleNamespace:
    copies: list[int] = []

    def memcpy(dst, src, nbytes, kind):
        copies.append(nbytes)
        return (0,)

    return types.SimpleNamespace(
        copies=copies, cudaGetDeviceCount=lambda: (0, 1),
        cudaGetDeviceProperties=lambda d: (0, types.SimpleNamespace(name=name, major=cc[0], minor=cc[1])),
        cudaMalloc=lambda n: (0, 4096), cudaFree=lambda p: (0,), cudaMemcpy=memcpy,
        cudaMemcpyKind=types.SimpleNamespace(cudaMemcpyHostToDevice=1))


@pytest.fixture
def fake_trt(monkeypatch):
    trt, cudart = make_fake_trt(), make_fake_cudart()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr("edgekd.runtime.engine_check.import_cudart", lambda: cudart)
    trt.cudart = cudart
    return trt


@pytest.fixture
def no_trt(monkeypatch):
    import edgekd._optional as optional

    real = optional.is_available
    monkeypatch.setattr(optional, "is_available", lambda m: False if m == "tensorrt" else real(m))
    monkeypatch.setattr("edgekd.export.tensorrt.is_available", lambda m: False if m == "tensorrt" else real(m))


# --- a tiny student and its ONNX ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def student_onnx(tmp_path_factory):
    from edgekd.students.model import create_student

    torch.manual_seed(0)
    student = create_student("test_efficientnet", embed_dim=DIM, img_size=IMG).eval()
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    torch.onnx.export(student, (torch.zeros(1, 3, IMG, IMG),), str(path), input_names=["pixels"],
                      output_names=["embedding"], dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}},
                      opset_version=17, dynamo=False)
    return student, path


def _request(student_onnx, out: Path, precision: str, n_calib: int = 20, **options):
    import shutil

    from edgekd.export.targets import ExportRequest

    student, onnx_path = student_onnx
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, out / "model.onnx")
    rng = np.random.default_rng(0)
    return ExportRequest(student=student, preprocess=student.cfg.get_preprocess(), out_dir=out, precision=precision,
                         onnx_path=out / "model.onnx",
                         calib=rng.normal(size=(n_calib, 3, IMG, IMG)).astype(np.float32),
                         val=rng.normal(size=(6, 3, IMG, IMG)).astype(np.float32), options=options)


def _target():
    from edgekd.export.targets import get_target

    return get_target("tensorrt")


# --- settings and commands ------------------------------------------------------------------------------------------

def test_settings_validation():
    from edgekd.export.tensorrt import TrtBuildSettings

    with pytest.raises(EdgekdError, match="min <= opt <= max"):
        TrtBuildSettings("fp16", "pixels", (3, 8, 8), min_batch=4, opt_batch=2, max_batch=8)
    with pytest.raises(EdgekdError, match="DLA runs fp16 or int8"):
        TrtBuildSettings("fp32", "pixels", (3, 8, 8), dla_core=0)
    with pytest.raises(EdgekdError, match="--calib-method"):
        TrtBuildSettings("int8", "pixels", (3, 8, 8), calib_method="percentile")
    with pytest.raises(EdgekdError, match="--trt-calibrator is for --precision int8"):
        TrtBuildSettings("fp16", "pixels", (3, 8, 8), trt_calibrator=True)
    s = TrtBuildSettings("fp16", "pixels", (3, 8, 8)).with_options({"max_batch": "16", "keep_fp16": "a, b",
                                                                     "dla_core": None})
    assert s.max_batch == 16 and s.keep_fp16 == ("a", "b") and s.dla_core is None
    assert TrtBuildSettings.from_dict(s.to_dict()) == s
    dla = TrtBuildSettings("fp16", "pixels", (3, 8, 8), min_batch=1, opt_batch=4, max_batch=8, dla_core=0)
    assert (dla.min_batch, dla.opt_batch, dla.max_batch) == (4, 4, 4)  # DLA: a static shape


@pytest.mark.parametrize("version", ["8.6.1", "10.3.0", "11.4.0"])
def test_capabilities_read_from_the_module_match_the_documented_ones(version):
    from edgekd.export.tensorrt_plan import TrtCapabilities

    assert TrtCapabilities.detect(make_fake_trt(version)) == TrtCapabilities.documented(version)


@pytest.mark.parametrize("version, precision, onnx, strong, flags", [
    ("8.6.1", "fp32", "onnx", False, ()), ("8.6.1", "fp16", "onnx", False, ("FP16",)),
    ("8.6.1", "int8", "onnx_qdq", False, ("FP16", "INT8")),
    ("10.3.0", "fp16", "onnx_fp16", True, ()), ("10.3.0", "int8", "onnx_qdq_fp16", True, ()),
    ("11.4.0", "fp16", "onnx_fp16", True, ()), ("11.4.0", "int8", "onnx_qdq_fp16", True, ())])
def test_plan_per_version(version, precision, onnx, strong, flags):
    from edgekd.export.tensorrt_plan import TrtCapabilities, plan_build

    plan = plan_build(TrtCapabilities.documented(version), precision)
    assert (plan.onnx_role, plan.strongly_typed, plan.flags) == (onnx, strong, flags)
    assert plan.quantization == ("explicit_qdq" if precision == "int8" else None)


def test_plan_refuses_what_a_version_lacks():
    from edgekd.export.tensorrt_plan import TrtCapabilities, plan_build

    v8, v10, v11 = (TrtCapabilities.documented(v) for v in ("8.6", "10.3", "11.4"))
    legacy = plan_build(v8, "int8", trt_calibrator=True)
    assert legacy.quantization == "implicit_calibration" and legacy.onnx_role == "onnx"
    for caps in (v10, v11):
        with pytest.raises(EdgekdError, match="--trt-calibrator: TensorRT 1[01].* Q/DQ ONNX"):
            plan_build(caps, "int8", trt_calibrator=True)
        with pytest.raises(EdgekdError, match="--keep-fp16: .* strongly typed .* --keep-fp32"):
            plan_build(caps, "int8", keep_fp16=("conv",))
    assert "OBEY_PRECISION_CONSTRAINTS" in plan_build(v8, "int8", keep_fp16=("conv",)).flags
    # DLA before 11.x keeps the precision flags (JetPack 6); 11.x DLA (from 11.4.1) is strongly typed
    dla10 = plan_build(v10, "fp16", dla_core=0)
    assert not dla10.strongly_typed and dla10.flags == ("FP16", "GPU_FALLBACK")
    assert plan_build(TrtCapabilities.documented("11.4.1"), "fp16", dla_core=0).strongly_typed


def test_trtexec_commands_follow_each_versions_migration_notes():
    from edgekd.export.tensorrt import TrtBuildSettings
    from edgekd.export.tensorrt_plan import TrtCapabilities
    from edgekd.export.trtexec import trtexec_command

    files = {"onnx": "model.onnx", "onnx_fp16": "model.fp16.onnx", "onnx_qdq": "model.qdq.onnx",
             "onnx_qdq_fp16": "model.qdq.fp16.onnx"}
    s = TrtBuildSettings("int8", "pixels", (3, 224, 224), min_batch=1, opt_batch=4, max_batch=8, workspace_gb=1.5)
    common = ["--minShapes=pixels:1x3x224x224", "--optShapes=pixels:4x3x224x224", "--maxShapes=pixels:8x3x224x224",
              "--memPoolSize=workspace:1536", "--timingCacheFile=timing.cache", "--saveEngine=model.engine"]
    cmd = {v: trtexec_command(s, TrtCapabilities.documented(v), files) for v in ("8.6", "10.3", "11.4")}
    for v, c in cmd.items():
        qdq = "model.qdq.onnx" if v == "8.6" else "model.qdq.fp16.onnx"  # strongly typed: the fp16 Q/DQ graph
        assert set(common) <= set(c) and f"--onnx={qdq}" in c and not any("--calib" in a for a in c)
    assert {"--fp16", "--int8"} <= set(cmd["8.6"]) and "--stronglyTyped" not in cmd["8.6"]
    assert "--stronglyTyped" in cmd["10.3"] and not {"--fp16", "--int8"} & set(cmd["10.3"])
    assert not {"--fp16", "--int8", "--stronglyTyped", "--best"} & set(cmd["11.4"])
    fp16 = replace_settings(s, precision="fp16")
    assert "--onnx=model.fp16.onnx" in trtexec_command(fp16, TrtCapabilities.documented("11.4"), files)
    assert {"--onnx=model.onnx", "--fp16"} <= set(trtexec_command(fp16, TrtCapabilities.documented("8.6"), files))
    legacy = replace_settings(s, trt_calibrator=True, dla_core=1)
    c = trtexec_command(legacy, TrtCapabilities.documented("8.6"), files, calib_cache="calib-x.cache")
    assert {"--onnx=model.onnx", "--int8", "--calib=calib-x.cache", "--useDLACore=1", "--allowGPUFallback",
            "--maxShapes=pixels:4x3x224x224"} <= set(c)


def replace_settings(settings, **changes):
    from dataclasses import replace

    return replace(settings, **changes)


# --- without tensorrt: device-ready files (gated ONNX) + exit 4 -----------------------------------------------------

def _passing_gate(calls):
    def gate(path, backend):
        calls.append((Path(path).name, backend))
        return {"passed": True, "reasons": [], "backend": backend, "metrics": {"cosine_mean": 1.0}}

    return gate


def test_without_tensorrt_writes_gated_onnx_files_and_exits_4(student_onnx, tmp_path, no_trt):
    from edgekd.export.tensorrt import EnginePendingError

    req = _request(student_onnx, tmp_path, "int8", max_batch=4)
    req.gate_model = _passing_gate(gated := [])
    with pytest.raises(EnginePendingError) as info:
        _target().build(req)
    err = info.value
    assert err.exit_code == 4 and gated == [("model.qdq.fp16.onnx", "onnxruntime"), ("model.qdq.onnx", "onnxruntime")]
    msg = str(err)
    assert "tensorrt is not installed" in msg and "--onnx=model.qdq.fp16.onnx" in msg and "--stronglyTyped" in msg
    assert "--onnx=model.qdq.onnx" in msg  # TensorRT 8.6, with its --fp16 --int8 flags
    assert f"edgekd export {tmp_path} --target tensorrt --precision int8 --from-onnx" in msg
    files, meta = err.result.files, err.result.metadata["tensorrt"]
    assert "model" not in files and files["onnx"] == "model.onnx" and files["onnx_qdq"] == "model.qdq.onnx"
    assert files["onnx_qdq_fp16"] == "model.qdq.fp16.onnx"
    assert meta["engine"] == "pending" and meta["onnx_gate"]["passed"]
    q = meta["quantization"]
    assert q["flavour"] == "tensorrt" and q["activation_type"] == "int8" and q["per_channel"]
    assert "calib" not in files  # explicit quantization: the scales are in the Q/DQ ONNX
    _assert_tensorrt_friendly_qdq(tmp_path / "model.qdq.onnx")
    ref = np.load(tmp_path / files["val_reference"])
    assert ref.shape == (6, DIM) and np.allclose(np.linalg.norm(ref, axis=1), 1, atol=1e-5)
    build = json.loads((tmp_path / files["build"]).read_text())
    assert build["settings"]["max_batch"] == 4 and build["onnx_files"]["onnx_qdq"] == "model.qdq.onnx"
    assert set(build["commands"]["trtexec"]) == {"TensorRT 11.x (x86_64 / SBSA GPUs)", "TensorRT 10.x (JetPack 6)",
                                                 "TensorRT 8.6 (JetPack 5: 8.5)"}
    assert not (tmp_path / "model.engine").exists()


def _assert_tensorrt_friendly_qdq(path: Path) -> None:
    """Symmetric int8 (zero points 0), per-channel weight scales, weights kept float with a Q/DQ pair."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert qs
    for node in qs:
        zp = inits.get(node.input[2]) if len(node.input) > 2 else None
        assert zp is not None and zp.dtype == np.int8 and not zp.any(), node.name
    weight_scales = [inits[n.input[1]] for n in qs if n.input[0] in inits and inits[n.input[0]].ndim == 4]
    assert weight_scales and all(s.ndim == 1 and s.size > 1 for s in weight_scales)  # per output channel


def test_fp16_onnx_keeps_float32_io_and_the_l2_norm(student_onnx, tmp_path, no_trt):
    import onnx
    import onnxruntime as ort

    from edgekd.export.tensorrt import EnginePendingError

    req = _request(student_onnx, tmp_path, "fp16")
    with pytest.raises(EnginePendingError) as info:
        _target().build(req)
    assert info.value.result.files["onnx_fp16"] == "model.fp16.onnx"
    model = onnx.load(str(tmp_path / "model.fp16.onnx"))
    assert {o.type.tensor_type.elem_type for o in [*model.graph.input, *model.graph.output]} == {1}  # float32
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    out = ort.InferenceSession(str(tmp_path / "model.fp16.onnx")).run(None, {"pixels": req.val})[0]
    assert out.dtype == np.float32 and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-3)
    with torch.no_grad():
        ref = req.student(torch.from_numpy(req.val)).numpy()
    assert np.min(np.sum(out * ref, axis=1)) > 0.999


def test_a_failing_onnx_gate_builds_nothing(student_onnx, tmp_path, fake_trt):
    from edgekd.export.tensorrt import EngineOnnxGateError

    req = _request(student_onnx, tmp_path, "fp16")
    req.gate_model = lambda path, backend: {"passed": False, "reasons": ["cosine p1 0.9 < 0.999"],
                                            "metrics": {"cosine_mean": 0.95}}
    with pytest.raises(EngineOnnxGateError, match="model.fp16.onnx failed the parity gate") as info:
        _target().build(req)
    assert info.value.exit_code == 3 and info.value.report["where"].startswith("model.fp16.onnx on onnxruntime")
    assert "config" not in fake_trt.calls and not (tmp_path / "model.engine").exists()


def test_int8_needs_calibration_images(student_onnx, tmp_path, no_trt):
    req = _request(student_onnx, tmp_path, "int8")
    req.calib = None
    with pytest.raises(EdgekdError, match="--calib DIR"):
        _target().build(req)
    legacy = _request(student_onnx, tmp_path, "int8", n_calib=4, calib_batch=8, trt_calibrator=True)
    with pytest.raises(EdgekdError, match="fewer than --calib-batch 8"):
        _target().build(legacy)


# --- the builder against each version's fake tensorrt ---------------------------------------------------------------

def _use(monkeypatch, version, **kwargs):
    trt, cudart = make_fake_trt(version, **kwargs), make_fake_cudart()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr("edgekd.runtime.engine_check.import_cudart", lambda: cudart)
    trt.cudart = cudart
    return trt


@pytest.mark.parametrize("version, precision, parsed, network_flags, flags", [
    ("8.6.1", "fp32", "model.onnx", 1, set()), ("8.6.1", "fp16", "model.onnx", 1, {"FP16"}),
    ("8.6.1", "int8", "model.qdq.onnx", 1, {"FP16", "INT8"}),
    ("10.3.0", "fp32", "model.onnx", 2, set()), ("10.3.0", "fp16", "model.fp16.onnx", 2, set()),
    ("10.3.0", "int8", "model.qdq.fp16.onnx", 2, set()),
    ("11.4.0", "fp32", "model.onnx", 0, set()), ("11.4.0", "fp16", "model.fp16.onnx", 0, set()),
    ("11.4.0", "int8", "model.qdq.fp16.onnx", 0, set())])
def test_builder_takes_each_versions_path(student_onnx, tmp_path, monkeypatch, version, precision, parsed,
                                          network_flags, flags):
    trt = _use(monkeypatch, version)
    result = _target().build(_request(student_onnx, tmp_path, precision, min_batch=1, opt_batch=2, max_batch=8,
                                      workspace_gb=0.5))
    cfg = trt.calls["config"]
    assert Path(trt.calls["parsed"]).name == parsed and trt.calls["network_flags"] == network_flags
    assert cfg.flags == flags and not hasattr(cfg, "calibration_profile")
    assert cfg.pool == {"WORKSPACE": 1 << 29}
    assert cfg.profiles[0].shapes == ("pixels", (1, 3, IMG, IMG), (2, 3, IMG, IMG), (8, 3, IMG, IMG))
    assert result.backend == "tensorrt" and result.files["model"] == "model.engine"
    assert (tmp_path / "model.engine").read_bytes() == b"serialized-engine"
    manifest = json.loads((tmp_path / "engine.json").read_text())
    assert manifest["tensorrt_version"] == version and manifest["gpu_name"] == "Orin"
    assert manifest["compute_capability"] == "8.7" and manifest["precision"] == precision
    assert manifest["onnx"] == parsed and len(manifest["onnx_sha256"]) == 64
    assert manifest["plan"]["strongly_typed"] == (version != "8.6.1")
    assert manifest["built_by"] == "edgekd.export.tensorrt.build_engine"


def test_timing_cache_is_written_and_reused(student_onnx, tmp_path, monkeypatch):
    trt = _use(monkeypatch, "10.3.0")
    req = _request(student_onnx, tmp_path, "fp32")
    _target().build(req)
    assert (tmp_path / "timing.cache").read_bytes() == b"|tactics"
    _target().build(req)
    assert trt.calls["timing_cache_in"] == [b"", b"|tactics"]


def test_a_wrong_onnx_for_a_strongly_typed_build_is_refused(student_onnx, tmp_path, monkeypatch):
    from edgekd.export.tensorrt import TrtBuildSettings, build_engine

    _use(monkeypatch, "11.4.0")
    settings = TrtBuildSettings("fp16", "pixels", (3, IMG, IMG))
    onnx_path = student_onnx[1]
    with pytest.raises(EdgekdError, match="no fp16 tensors, so a strongly typed build would run in fp32"):
        build_engine({"onnx_fp16": onnx_path}, tmp_path / "model.engine", settings)
    with pytest.raises(EdgekdError, match="no Q/DQ nodes"):
        build_engine({"onnx_qdq_fp16": onnx_path}, tmp_path / "model.engine",
                     replace_settings(settings, precision="int8"))


def test_dla_forces_a_static_profile_and_reports_gpu_fallback(student_onnx, tmp_path, monkeypatch, caplog):
    trt = _use(monkeypatch, "10.3.0")
    result = _target().build(_request(student_onnx, tmp_path, "fp16", min_batch=1, opt_batch=2, max_batch=8,
                                      dla_core=1))
    cfg = trt.calls["config"]
    assert cfg.profiles[0].shapes[1:] == ((2, 3, IMG, IMG),) * 3  # min = opt = max
    assert cfg.default_device_type == "DLA" and cfg.DLA_core == 1 and cfg.flags == {"FP16", "GPU_FALLBACK"}
    assert Path(trt.calls["parsed"]).name == "model.onnx"  # JetPack 6 DLA: weak typing from the fp32 ONNX
    dla = result.metadata["tensorrt"]["dla"]
    assert dla["core"] == 1 and dla["static_batch"] == 2 and "ReduceL2" in " ".join(dla["gpu_fallback_layers"])
    assert 0 < len(dla["gpu_fallback_layers"]) < dla["layers"]
    assert "fall back to the GPU" in caplog.text
    _use(monkeypatch, "10.3.0", dla_ops=set())  # a network DLA runs none of
    with pytest.raises(EdgekdError, match="none of the .* layers can run on DLA"):
        _target().build(_request(student_onnx, tmp_path, "fp16", dla_core=0))
    _use(monkeypatch, "8.6.1", dla_cores=0)
    with pytest.raises(EdgekdError, match="--dla-core 0: this device has 0 DLA core"):
        _target().build(_request(student_onnx, tmp_path, "fp16", dla_core=0))


def test_legacy_calibrator_on_tensorrt8_with_a_cache_keyed_by_the_onnx(student_onnx, tmp_path, monkeypatch):
    trt = _use(monkeypatch, "8.6.1")
    req = _request(student_onnx, tmp_path, "int8", n_calib=20, calib_batch=8, calib_method="minmax",
                   trt_calibrator=True)
    result = _target().build(req)
    cfg = trt.calls["config"]
    assert {"INT8", "FP16"} <= cfg.flags and Path(trt.calls["parsed"]).name == "model.onnx"
    assert trt.calls["calibrator_base"] == "minmax" and trt.calls["calib_batches"] == 2  # 20 images, batches of 8
    assert trt.cudart.copies == [8 * 3 * IMG * IMG * 4] * 2
    assert cfg.calibration_profile.shapes[1] == (8, 3, IMG, IMG)
    cache = result.files["calib_cache"]
    assert cache.startswith("calib-") and (tmp_path / cache).read_bytes().startswith(b"TRT-")
    assert result.metadata["tensorrt"]["int8"]["mode"].startswith("implicit_calibration")
    _target().build(req)  # the same ONNX: the cache is reused instead of calibrating
    assert trt.calls["calib_cache_read"].startswith(b"TRT-")

    # another model in the same folder never reads the old cache
    other = _request(student_onnx, tmp_path, "int8", n_calib=20, calib_batch=8, trt_calibrator=True)
    import onnx

    model = onnx.load(str(other.onnx_path))
    model.doc_string = "another model"
    onnx.save(model, str(other.onnx_path))
    result2 = _target().build(other)
    assert result2.files["calib_cache"] != cache and trt.calls["calib_cache_read"] is None

    for version in ("10.3.0", "11.4.0"):
        _use(monkeypatch, version)
        with pytest.raises(EdgekdError, match=f"--trt-calibrator: TensorRT {version} has no implicit"):
            _target().build(req)


def test_keep_fp16_layers_only_on_weak_typing(student_onnx, tmp_path, monkeypatch):
    import onnx

    trt = _use(monkeypatch, "8.6.1")
    req = _request(student_onnx, tmp_path, "int8")
    _target().build(req)
    qdq = onnx.load(str(tmp_path / "model.qdq.onnx"))
    conv = next(n.name for n in qdq.graph.node if n.op_type == "Conv")
    _target().build(_request(student_onnx, tmp_path, "int8", keep_fp16=[conv]))
    assert "OBEY_PRECISION_CONSTRAINTS" in trt.calls["config"].flags
    with pytest.raises(EdgekdError, match="--keep-fp16 'nope': no such layer"):
        _target().build(_request(student_onnx, tmp_path, "int8", keep_fp16=["nope"]))
    _use(monkeypatch, "11.4.0")
    with pytest.raises(EdgekdError, match="strongly typed"):
        _target().build(_request(student_onnx, tmp_path, "int8", keep_fp16=[conv]))


def test_from_onnx_builds_checks_parity_and_updates_bundle(student_onnx, tmp_path, monkeypatch):
    from edgekd.export.bundle import load_bundle_manifest, write_manifest
    from edgekd.export.tensorrt import EnginePendingError, build_from_onnx
    from edgekd.runtime import backends

    bundle = tmp_path / "bundle"
    real = backends.is_available
    monkeypatch.setattr("edgekd.export.tensorrt.is_available", lambda m: False if m == "tensorrt" else real(m))
    with pytest.raises(EnginePendingError) as info:
        _target().build(_request(student_onnx, bundle, "fp16", max_batch=4))
    result = info.value.result  # what the pipeline records in the pending edgekd.json (see the e2e test)
    assert result.metadata["tensorrt"]["engine"] == "pending" and "model" not in result.files
    write_manifest(bundle, {"target": "tensorrt", "precision": "fp16", "backend": "tensorrt", "files": result.files,
                            "parity": {"passed": None, "skipped": True}, "target_metadata": result.metadata})
    monkeypatch.undo()

    # on "the device": TensorRT 10.3; the engine is stood in for by onnxruntime on the fp16 ONNX
    trt = _use(monkeypatch, "10.3.0")
    monkeypatch.setitem(backends.BACKENDS, "tensorrt",
                        lambda path, threads=None, device=None, **kw: backends.BACKENDS["onnxruntime"](
                            Path(path).parent / "model.fp16.onnx", threads=1))
    engine = build_from_onnx(bundle, max_batch=16)  # no file given: the plan picks model.fp16.onnx
    assert engine == bundle / "model.engine" and trt.calls["config"].profiles[0].shapes[3][0] == 16
    assert Path(trt.calls["parsed"]).name == "model.fp16.onnx"
    manifest = load_bundle_manifest(bundle)  # verifies every sha256, the engine's included
    assert manifest["files"]["model"] == "model.engine"
    assert manifest["target_metadata"]["tensorrt"]["engine"] == "built"
    assert manifest["versions"]["tensorrt"] == "10.3.0"
    assert manifest["parity"]["passed"] and manifest["parity"]["metrics"]["cosine_mean"] > 0.999

    # a wrong reference (as if the student changed) fails the device gate with exit status 3
    np.save(bundle / "val_reference.npy", -np.load(bundle / "val_reference.npy"))
    with pytest.raises(EdgekdError, match="parity failed") as info:
        build_from_onnx(bundle)
    assert info.value.exit_code == 3
    with pytest.raises(EdgekdError, match="no tensorrt_build.json"):
        build_from_onnx(tmp_path)


# --- export/jetson/build_engine.sh: trtexec only, engine.json from the same Python writer ---------------------------

FAKE_TRTEXEC = """#!/usr/bin/env bash
if [[ "$1" == "--help" ]]; then echo "&&&& RUNNING TensorRT.trtexec [TensorRT v{code}] # trtexec --help"; exit 0; fi
echo "$@" > "$(dirname "$0")/args.txt"
for a in "$@"; do case "$a" in --saveEngine=*) echo engine > "${{a#--saveEngine=}}";; esac; done
"""


@pytest.mark.parametrize("code, version, expect, absent", [
    ("110400", "11.4.0", "--onnx=BUNDLE/model.fp16.onnx", ["--fp16", "--stronglyTyped"]),
    ("100300", "10.3.0", "--stronglyTyped", ["--fp16"]), ("8601", "8.6.1", "--fp16", ["--stronglyTyped"])])
def test_build_engine_sh_uses_the_python_plan_and_writer(student_onnx, tmp_path, no_trt, code, version, expect,
                                                         absent):
    from edgekd.export.tensorrt import EnginePendingError

    bundle = tmp_path / "bundle"
    with pytest.raises(EnginePendingError):
        _target().build(_request(student_onnx, bundle, "fp16", max_batch=4))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "trtexec").write_text(FAKE_TRTEXEC.format(code=code))
    (bin_dir / "trtexec").chmod(0o755)
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHONPATH": str(repo), "EDGEKD_PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(repo / "export/jetson/build_engine.sh"), str(bundle)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    args = (bin_dir / "args.txt").read_text().replace(str(bundle), "BUNDLE").split()
    assert expect in args and not set(absent) & set(args)
    assert "--maxShapes=pixels:4x3x32x32" in args
    manifest = json.loads((bundle / "engine.json").read_text())
    assert manifest["tensorrt_version"] == version and manifest["built_by"].startswith("trtexec")
    assert manifest["engine_sha256"] and manifest["format"] == "edgekd.engine"
    assert manifest["onnx"] == ("model.onnx" if version == "8.6.1" else "model.fp16.onnx")


# --- engine.json checks at load time --------------------------------------------------------------------------------

def test_engine_check_refuses_mismatches(tmp_path):
    from edgekd.runtime.engine_check import EngineMismatchError, check_engine_manifest

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"x")
    (tmp_path / "engine.json").write_text(json.dumps({"tensorrt_version": "8.6.1", "gpu_name": "Orin",
                                                      "compute_capability": "8.7", "onnx": "model.onnx"}))
    check_engine_manifest(engine, "8.6.2", "Orin", "8.7")  # patch releases are compatible
    with pytest.raises(EngineMismatchError, match="built with TensorRT 8.6.1, this machine has 10.3.0") as info:
        check_engine_manifest(engine, "10.3.0", "Orin", "8.7")
    assert "--from-onnx" in str(info.value) and info.value.exit_code == 5
    with pytest.raises(EngineMismatchError, match="built for GPU Orin, this machine has NVIDIA A100"):
        check_engine_manifest(engine, "8.6.1", "NVIDIA A100", "8.7")
    with pytest.raises(EngineMismatchError, match="compute capability 8.7"):
        check_engine_manifest(engine, "8.6.1", None, "7.2")


def test_gpu_info_reads_cudart():
    from edgekd.runtime.engine_check import gpu_info

    assert gpu_info(0, make_fake_cudart(b"Xavier\x00\x00", (7, 2))) == {"name": "Xavier", "compute_capability": "7.2"}
    none = make_fake_cudart()
    none.cudaGetDeviceCount = lambda: (0, 0)
    assert gpu_info(0, none) is None


# --- a real TensorRT (only where it is installed, with a GPU) -------------------------------------------------------

@pytest.mark.tensorrt
@pytest.mark.parametrize("precision, floor", [("fp32", 0.9999), ("fp16", 0.999), ("int8", 0.95)])
def test_real_tensorrt_engine_parity(student_onnx, tmp_path, precision, floor):
    """On a host with TensorRT and a GPU: the installed version's own plan, built and run for real."""
    pytest.importorskip("tensorrt")
    from edgekd.export.tensorrt import tensorrt_unavailable_reason
    from edgekd.runtime.backends import create_backend
    from edgekd.runtime.batching import run_batched

    reason = tensorrt_unavailable_reason()
    if reason:
        pytest.skip(reason)
    req = _request(student_onnx, tmp_path, precision, n_calib=64, max_batch=4)
    result = _target().build(req)
    out = run_batched(create_backend(tmp_path / result.files["model"], backend="tensorrt"), req.val)["embedding"]
    with torch.no_grad():
        ref = student_onnx[0](torch.from_numpy(req.val)).numpy()
    assert np.mean(np.sum(out * ref, axis=1)) > floor
