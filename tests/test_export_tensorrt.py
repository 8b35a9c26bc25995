"""TensorRT target: device-ready bundle + exit 4 without tensorrt; builder arguments against a FAKE tensorrt module
(only what we control: flags, profile shapes, DLA, calibrator batches, timing cache, engine.json); engine checks."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd import EdgekdError

IMG = 32
DIM = 16


# --- a fake tensorrt (records what the builder was asked to do) -----------------------------------------------------

def make_fake_trt(version: str = "10.3.0", dla_cores: int = 2) -> types.ModuleType:
    import onnx

    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__version__ = version
    trt.calls = {}
    trt.float16 = "float16"
    enum = types.SimpleNamespace
    trt.NetworkDefinitionCreationFlag = enum(EXPLICIT_BATCH=0)
    trt.MemoryPoolType = enum(WORKSPACE="WORKSPACE")
    trt.BuilderFlag = enum(FP16="FP16", INT8="INT8", GPU_FALLBACK="GPU_FALLBACK",
                           OBEY_PRECISION_CONSTRAINTS="OBEY_PRECISION_CONSTRAINTS")
    trt.DeviceType = enum(GPU="GPU", DLA="DLA")
    trt.LayerType = enum(QUANTIZE="QUANTIZE", DEQUANTIZE="DEQUANTIZE", OTHER="OTHER")

    class Logger:
        WARNING = 2

        def __init__(self, level):
            self.level = level

    class Tensor:
        def __init__(self, name):
            self.name = name

    class Layer:
        def __init__(self, node):
            self.name = node.name
            self.type = {"QuantizeLinear": "QUANTIZE", "DequantizeLinear": "DEQUANTIZE"}.get(node.op_type, "OTHER")
            self.precision = None

    class Network:
        def __init__(self, flags):
            trt.calls["network_flags"] = flags
            self.inputs, self.layers = [], []

        num_inputs = property(lambda self: len(self.inputs))
        num_layers = property(lambda self: len(self.layers))

        def get_input(self, i):
            return self.inputs[i]

        def get_layer(self, i):
            return self.layers[i]

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.num_errors = network, 0

        def parse_from_file(self, path):
            model = onnx.load(path, load_external_data=False)
            self.network.inputs = [Tensor(i.name) for i in model.graph.input]
            self.network.layers = [Layer(n) for n in model.graph.node]
            trt.calls["parsed"] = path
            return True

    class Profile:
        def set_shape(self, name, mn, opt, mx):
            self.shapes = (name, tuple(mn), tuple(opt), tuple(mx))

    class TimingCache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return self.data + b"|tactics"

    class Config:
        def __init__(self):
            self.flags, self.profiles, self.int8_calibrator, self.pool = set(), [], None, {}
            self.default_device_type, self.DLA_core, self.calibration_profile = "GPU", -1, None

        def set_memory_pool_limit(self, pool, size):
            self.pool[pool] = size

        def set_flag(self, flag):
            self.flags.add(flag)

        def add_optimization_profile(self, p):
            self.profiles.append(p)

        def set_calibration_profile(self, p):
            self.calibration_profile = p

        def create_timing_cache(self, data):
            trt.calls.setdefault("timing_cache_in", []).append(bytes(data))
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.timing = cache
            return True

        def get_timing_cache(self):
            return self.timing

    class Builder:
        platform_has_fast_fp16 = True
        num_DLA_cores = dla_cores

        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return Network(flags)

        def create_optimization_profile(self):
            return Profile()

        def create_builder_config(self):
            return Config()

        def build_serialized_network(self, network, config):
            trt.calls["config"] = config
            cal = config.int8_calibrator
            if cal is not None:  # what TensorRT does: read the cache, else pull batches and write the cache
                cached = cal.read_calibration_cache()
                trt.calls["calib_cache_read"] = cached
                if cached is None:
                    batches = 0
                    while cal.get_batch([network.get_input(0).name]) is not None:
                        batches += 1
                    trt.calls["calib_batches"] = batches
                    cal.write_calibration_cache(b"TRT-10300-EntropyCalibration2\n")
            return b"serialized-engine"

    class IInt8EntropyCalibrator2:
        def __init__(self):
            trt.calls["calibrator_base"] = "entropy"

    class IInt8MinMaxCalibrator:
        def __init__(self):
            trt.calls["calibrator_base"] = "minmax"

    for obj in (Logger, OnnxParser, Builder, IInt8EntropyCalibrator2, IInt8MinMaxCalibrator):
        setattr(trt, obj.__name__, obj)
    return trt


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
    monkeypatch.setattr("edgekd.runtime.backends._import_cudart", lambda: cudart)
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
    s = TrtBuildSettings("fp16", "pixels", (3, 8, 8)).with_options({"max_batch": "16", "keep_fp16": "a, b",
                                                                     "dla_core": None})
    assert s.max_batch == 16 and s.keep_fp16 == ("a", "b") and s.dla_core is None
    assert TrtBuildSettings.from_dict(s.to_dict()) == s


def test_trtexec_command_matches_settings():
    from edgekd.export.tensorrt import TrtBuildSettings, trtexec_command

    s = TrtBuildSettings("int8", "pixels", (3, 224, 224), min_batch=1, opt_batch=4, max_batch=8, workspace_gb=1.5,
                         dla_core=1)
    cmd = trtexec_command(s, "model.onnx", calib_cache="calib.cache")
    assert cmd[:3] == ["trtexec", "--onnx=model.onnx", "--saveEngine=model.engine"]
    for flag in ("--minShapes=pixels:1x3x224x224", "--optShapes=pixels:4x3x224x224",
                 "--maxShapes=pixels:8x3x224x224", "--memPoolSize=workspace:1536", "--fp16", "--int8",
                 "--calib=calib.cache", "--useDLACore=1", "--allowGPUFallback", "--timingCacheFile=timing.cache"):
        assert flag in cmd, flag
    fp32 = trtexec_command(TrtBuildSettings("fp32", "frames", (224, 224, 3)), "m.onnx")
    assert "--minShapes=frames:1x224x224x3" in fp32
    assert not {"--fp16", "--int8", "--allowGPUFallback"} & set(fp32)


# --- without tensorrt: device-ready files + exit 4 ------------------------------------------------------------------

def test_without_tensorrt_writes_device_files_and_exits_4(student_onnx, tmp_path, no_trt):
    from edgekd.export.tensorrt import EnginePendingError

    req = _request(student_onnx, tmp_path, "int8", max_batch=4, calib_batch=8)
    with pytest.raises(EnginePendingError) as info:
        _target().build(req)
    err = info.value
    assert err.exit_code == 4
    msg = str(err)
    assert "tensorrt is not installed" in msg and "trtexec --onnx=model.onnx" in msg
    assert f"edgekd export {tmp_path} --target tensorrt --precision int8 --from-onnx {tmp_path / 'model.onnx'}" in msg
    files = err.result.files
    assert "model" not in files and files["onnx"] == "model.onnx"
    assert err.result.metadata["tensorrt"]["engine"] == "pending"
    for role in ("calib", "val", "val_reference", "build"):
        assert (tmp_path / files[role]).is_file(), role
    calib = np.load(tmp_path / files["calib"])
    assert calib.shape == (20, 3, IMG, IMG) and calib.dtype == np.float16
    ref = np.load(tmp_path / files["val_reference"])
    assert ref.shape == (6, DIM) and np.allclose(np.linalg.norm(ref, axis=1), 1, atol=1e-5)
    build = json.loads((tmp_path / files["build"]).read_text())
    assert build["settings"]["max_batch"] == 4 and build["settings"]["input_shape"] == [3, IMG, IMG]
    assert not (tmp_path / "model.engine").exists()


def test_int8_needs_enough_calibration(student_onnx, tmp_path, no_trt):
    req = _request(student_onnx, tmp_path, "int8", n_calib=4, calib_batch=8)
    with pytest.raises(EdgekdError, match="fewer than --calib-batch 8"):
        _target().build(req)
    req.calib = None
    with pytest.raises(EdgekdError, match="--calib DIR"):
        _target().build(req)


# --- the builder against a fake tensorrt ----------------------------------------------------------------------------

def test_fp16_build_flags_profile_dla_and_timing_cache(student_onnx, tmp_path, fake_trt):
    req = _request(student_onnx, tmp_path, "fp16", min_batch=1, opt_batch=2, max_batch=8, workspace_gb=0.5,
                   dla_core=1)
    result = _target().build(req)
    cfg = fake_trt.calls["config"]
    assert cfg.flags == {"FP16", "GPU_FALLBACK"}
    assert cfg.default_device_type == "DLA" and cfg.DLA_core == 1
    assert cfg.pool == {"WORKSPACE": 1 << 29}
    assert cfg.profiles[0].shapes == ("pixels", (1, 3, IMG, IMG), (2, 3, IMG, IMG), (8, 3, IMG, IMG))
    assert fake_trt.calls["network_flags"] == 0  # TensorRT 10: explicit batch is implicit
    assert result.backend == "tensorrt" and result.files["model"] == "model.engine"
    assert (tmp_path / "model.engine").read_bytes() == b"serialized-engine"
    manifest = json.loads((tmp_path / "engine.json").read_text())
    assert manifest["tensorrt_version"] == "10.3.0" and manifest["gpu_name"] == "Orin"
    assert manifest["compute_capability"] == "8.7" and manifest["precision"] == "fp16"
    assert manifest["onnx"] == "model.onnx" and len(manifest["onnx_sha256"]) == 64
    assert manifest["profile"]["max"] == [8, 3, IMG, IMG] and manifest["dla_core"] == 1
    # the timing cache is written and fed back into the next build
    assert (tmp_path / "timing.cache").read_bytes() == b"|tactics"
    _target().build(req)
    assert fake_trt.calls["timing_cache_in"] == [b"", b"|tactics"]


def test_tensorrt8_uses_explicit_batch_and_dla_core_is_checked(student_onnx, tmp_path, monkeypatch):
    trt = make_fake_trt(version="8.6.1", dla_cores=0)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr("edgekd.runtime.backends._import_cudart", lambda: make_fake_cudart())
    _target().build(_request(student_onnx, tmp_path, "fp32"))
    assert trt.calls["network_flags"] == 1  # 1 << EXPLICIT_BATCH
    assert trt.calls["config"].flags == set()
    with pytest.raises(EdgekdError, match="--dla-core 0: this device has 0 DLA core"):
        _target().build(_request(student_onnx, tmp_path, "fp16", dla_core=0))


def test_int8_calibrator_feeds_batches_and_writes_cache(student_onnx, tmp_path, fake_trt):
    req = _request(student_onnx, tmp_path, "int8", n_calib=20, calib_batch=8, calib_method="minmax")
    result = _target().build(req)
    cfg = fake_trt.calls["config"]
    assert {"INT8", "FP16"} <= cfg.flags
    assert fake_trt.calls["calibrator_base"] == "minmax"
    assert fake_trt.calls["calib_batches"] == 2  # 20 images -> 2 full batches of 8
    assert fake_trt.cudart.copies == [8 * 3 * IMG * IMG * 4] * 2
    assert cfg.calibration_profile.shapes[1] == (8, 3, IMG, IMG)
    assert (tmp_path / "calib.cache").read_bytes().startswith(b"TRT-")
    int8 = result.metadata["tensorrt"]["int8"]
    assert int8["mode"] == "implicit_calibration" and int8["calibration_batches"] == 2
    assert result.files["calib_cache"] == "calib.cache"
    _target().build(req)  # second build reuses the cache instead of calibrating
    assert fake_trt.calls["calib_cache_read"].startswith(b"TRT-")


def test_int8_keep_fp16_layers(student_onnx, tmp_path, fake_trt):
    import onnx

    first = onnx.load(str(student_onnx[1])).graph.node[0].name
    _target().build(_request(student_onnx, tmp_path, "int8", keep_fp16=[first]))
    assert "OBEY_PRECISION_CONSTRAINTS" in fake_trt.calls["config"].flags
    with pytest.raises(EdgekdError, match="--keep-fp16 'nope': no such layer"):
        _target().build(_request(student_onnx, tmp_path, "int8", keep_fp16=["nope"]))


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

    # on "the device": fake tensorrt; the engine is stood in for by onnxruntime on the same ONNX
    trt = make_fake_trt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr("edgekd.runtime.backends._import_cudart", lambda: make_fake_cudart())
    monkeypatch.setitem(backends.BACKENDS, "tensorrt",
                        lambda path, threads=None, device=None: backends.BACKENDS["onnxruntime"](
                            Path(path).parent / "model.onnx", threads=1))
    engine = build_from_onnx(bundle, bundle / "model.onnx", max_batch=16)
    assert engine == bundle / "model.engine" and trt.calls["config"].profiles[0].shapes[3][0] == 16
    manifest = load_bundle_manifest(bundle)  # verifies every sha256, the engine's included
    assert manifest["files"]["model"] == "model.engine"
    assert manifest["target_metadata"]["tensorrt"]["engine"] == "built"
    assert manifest["versions"]["tensorrt"] == "10.3.0"
    assert manifest["parity"]["passed"] and manifest["parity"]["metrics"]["cosine_mean"] > 0.9999

    # a wrong reference (as if the student changed) fails the device gate with exit status 3
    np.save(bundle / "val_reference.npy", -np.load(bundle / "val_reference.npy"))
    with pytest.raises(EdgekdError, match="parity failed") as info:
        build_from_onnx(bundle, bundle / "model.onnx")
    assert info.value.exit_code == 3
    with pytest.raises(EdgekdError, match="no tensorrt_build.json"):
        build_from_onnx(tmp_path, bundle / "model.onnx")


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
def test_real_tensorrt_engine_parity(student_onnx, tmp_path):
    pytest.importorskip("tensorrt")
    from edgekd.export.tensorrt import tensorrt_unavailable_reason
    from edgekd.runtime.backends import create_backend

    reason = tensorrt_unavailable_reason()
    if reason:
        pytest.skip(reason)
    req = _request(student_onnx, tmp_path, "fp32", max_batch=4)
    result = _target().build(req)
    x = req.val[:4]
    out = create_backend(tmp_path / result.files["model"], backend="tensorrt").run(x)["embedding"]
    with torch.no_grad():
        ref = student_onnx[0](torch.from_numpy(x)).numpy()
    assert np.min(np.sum(out * ref, axis=1)) > 0.9999
