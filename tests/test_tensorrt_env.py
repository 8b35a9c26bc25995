"""TensorRT environment: the per-CUDA-major extras, DLA by TensorRT release (NVIDIA's "Working with DLA"), DLA INT8 on
TensorRT 8.x (implicit calibration only), and `edgekd info --env` with fake tensorrt / cuda-python / NVML modules."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner
from fake_tensorrt import make_fake_trt

from edgekd import EdgekdError
from edgekd.cli import cli
from edgekd.export import trt_env
from edgekd.export.tensorrt_plan import TrtCapabilities, plan_build

ROOT = Path(__file__).resolve().parents[1]


# --- pyproject extras -----------------------------------------------------------------------------------------------

def _extras() -> dict[str, list[str]]:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _resolved(extra: str, machine: str) -> dict[str, str]:
    """name -> specifier of what `extra` installs on `machine` (markers evaluated, self-references followed)."""
    from packaging.requirements import Requirement

    out: dict[str, str] = {}
    for line in _extras()[extra]:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"platform_machine": machine}):
            continue
        if req.name == "edgekd":
            for sub in req.extras:
                out.update(_resolved(sub, machine))
        else:
            out[req.name] = str(req.specifier)
    return out


@pytest.mark.parametrize("major", [12, 13])
def test_each_cuda_major_gets_its_tensorrt_wheel_and_cuda_python(major):
    from packaging.specifiers import SpecifierSet

    x86 = _resolved(f"tensorrt-cu{major}", "x86_64")
    assert f"tensorrt-cu{major}" in x86 and "onnxruntime" in x86 and "onnxconverter-common" in x86
    cuda = SpecifierSet(x86["cuda-python"])
    assert f"{major}.9.4" in cuda and f"{major + 1}.0.0" not in cuda and f"{major - 1}.9.0" not in cuda
    assert _resolved(f"tensorrt-cu{major}", "AMD64") == x86


@pytest.mark.parametrize("extra", ["tensorrt", "tensorrt-cu12", "tensorrt-cu13"])
def test_aarch64_pulls_no_nvidia_wheel(extra):
    """Jetson (JetPack's apt TensorRT) and SBSA look the same to pip's markers: neither gets a TensorRT wheel."""
    arm = _resolved(extra, "aarch64")
    assert not {n for n in arm if n.startswith(("tensorrt", "cuda"))} and "onnx" in arm


def test_plain_tensorrt_extra_is_the_cuda13_one():
    """NVIDIA's `tensorrt` metapackage requires tensorrt_cu13 since 10.13.2; the plain extra follows it."""
    assert _resolved("tensorrt", "x86_64") == _resolved("tensorrt-cu13", "x86_64")


def test_bench_rows_record_any_tensorrt_wheel(monkeypatch):
    import edgekd.bench.env as env

    asked: dict[str, tuple[str, ...]] = {}
    monkeypatch.setattr(env, "installed_version", lambda *dists: asked.setdefault(dists[0], dists) and None)
    env.package_versions()
    assert {"tensorrt-cu12", "tensorrt-cu13"} <= set(asked["tensorrt"])


# --- DLA by release -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version, dla", [
    ("8.5.2.2", True), ("8.6.1", True), ("10.3.0", True), ("10.7.0", True),  # JetPack 5 / 6
    ("10.8.0", False), ("10.16.1.11", False),  # 10.7 was the last 10.x release with DLA
    ("11.0.0", False), ("11.3.0", False), ("11.4", False), ("11.4.0.106", False),  # 11.4.0: Windows on ARM only
    ("11.4.1", True), ("11.5.0", True)])  # 11.4.1+: AGX Orin under JetPack 7.2.2+
def test_dla_follows_nvidias_release_table(version, dla):
    assert TrtCapabilities.documented(version).dla is dla
    assert TrtCapabilities.detect(make_fake_trt(version)).dla is dla


def test_dla_needs_the_device_type_in_the_module():
    trt = make_fake_trt("10.3.0")
    trt.DeviceType = types.SimpleNamespace(GPU="GPU")
    caps = TrtCapabilities.detect(trt)
    assert not caps.dla
    with pytest.raises(EdgekdError, match="no DeviceType.DLA"):
        plan_build(caps, "fp16", dla_core=0)


@pytest.mark.parametrize("version", ["10.8.0", "11.2.1", "11.4.0"])
def test_dla_core_is_refused_where_tensorrt_has_no_dla(version):
    with pytest.raises(EdgekdError) as e:
        plan_build(TrtCapabilities.documented(version), "fp16", dla_core=0)
    msg = str(e.value)
    assert f"TensorRT {version} has no DLA" in msg and "build without --dla-core" in msg and "\n" not in msg


def test_fake_build_machines_report_dla_cores_only_where_dla_exists():
    cores = {v: make_fake_trt(v).Builder.num_DLA_cores for v in ("8.6.1", "10.3.0", "10.8.0", "11.4.0", "11.4.1")}
    assert cores == {"8.6.1": 2, "10.3.0": 2, "10.8.0": 0, "11.4.0": 0, "11.4.1": 2}


# --- DLA INT8 on TensorRT 8.x: implicit calibration only ------------------------------------------------------------

def test_dla_int8_on_tensorrt8_needs_the_calibrator():
    v8 = TrtCapabilities.documented("8.6")
    with pytest.raises(EdgekdError, match="no Q/DQ .*; add --trt-calibrator"):
        plan_build(v8, "int8", dla_core=0)
    plan = plan_build(v8, "int8", dla_core=0, trt_calibrator=True)
    assert (plan.onnx_role, plan.quantization) == ("onnx", "implicit_calibration")
    assert plan.flags == ("FP16", "INT8", "GPU_FALLBACK")
    assert plan_build(v8, "int8").quantization == "explicit_qdq"  # the GPU keeps the Q/DQ ONNX
    assert plan_build(v8, "fp16", dla_core=0).flags == ("FP16", "GPU_FALLBACK")


def test_dla_int8_bundle_prints_no_jetpack5_command_without_the_calibrator():
    from edgekd.export.tensorrt import TrtBuildSettings
    from edgekd.export.trtexec import device_commands

    files = {"onnx": "model.onnx", "onnx_qdq": "model.qdq.onnx"}
    s = TrtBuildSettings("int8", "pixels", (3, 32, 32), dla_core=0)
    labels = set(device_commands(Path("b"), s, files)["trtexec"])
    assert "TensorRT 10.x (JetPack 6)" in labels and not any("JetPack 5" in label for label in labels)


# --- edgekd info --env ----------------------------------------------------------------------------------------------

def _module(name: str, **attrs) -> types.ModuleType:
    m = types.ModuleType(name)
    m.__spec__ = importlib.machinery.ModuleSpec(name, None)
    m.__dict__.update(attrs)
    return m


@pytest.fixture
def machine(monkeypatch):
    """A machine whose pieces a test sets: no TensorRT, cuda-python, driver or Jetson until told otherwise."""
    state = {"wheels": {}, "cuda_python": None, "smi": None, "cuda": None, "jetson": None}
    monkeypatch.setattr(trt_env, "tensorrt_wheels", lambda: dict(state["wheels"]))
    monkeypatch.setattr(trt_env, "installed_version", lambda dist: state["cuda_python"])
    monkeypatch.setattr(trt_env, "_smi_driver", lambda: state["smi"])
    monkeypatch.setattr(trt_env, "_driver_cuda_version", lambda: state["cuda"])
    monkeypatch.setattr(trt_env, "_nvml", lambda: None)
    monkeypatch.setattr("edgekd.bench.env.jetson_info", lambda: state["jetson"])
    real = trt_env.is_available
    monkeypatch.setattr(trt_env, "is_available", lambda m: False if m == "tensorrt" else real(m))

    def with_trt(version: str) -> None:
        monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt(version))
        monkeypatch.setattr(trt_env, "is_available", real)

    state["with_trt"] = with_trt
    return state


def _checks(d):
    return {c["check"]: c["ok"] for c in d["checks"]}


def test_info_env_on_this_machine_says_what_is_missing_without_a_traceback():
    r = CliRunner().invoke(cli, ["info", "--env"])
    assert r.exit_code == 0, r.output
    assert "verdict:" in r.output and "Traceback" not in r.output


def test_nothing_installed_is_reported_plainly(machine):
    d = trt_env.collect_trt_env()
    text = trt_env.format_trt_env(d)
    assert "tensorrt     missing (pip install 'edgekd[tensorrt-cu13]'" in text and "JetPack" in text
    assert "driver       missing" in text and "cuda-python  missing" in text
    assert d["verdict"].startswith("incomplete: no TensorRT, no cuda-python, no NVIDIA driver")
    assert "cannot be built or run here" in d["verdict"]
    assert all(ok is None for ok in _checks(d).values())


def test_matching_wheel_bindings_and_driver_fit(machine):
    machine.update(wheels={"tensorrt-cu12": "10.3.0"}, cuda_python="12.9.4", smi="550.54.15", cuda="12.4")
    machine["with_trt"]("10.3.0")
    d = trt_env.collect_trt_env()
    assert d["tensorrt"]["cuda_major"] == 12 and d["tensorrt"]["dla"] is True
    assert set(_checks(d).values()) == {True} and d["verdict"] == "fits"
    assert "10.3.0 (pip wheel tensorrt-cu12, CUDA 12)" in trt_env.format_trt_env(d)


def test_cuda_python_of_another_major_is_a_mismatch_with_the_fix(machine):
    machine.update(wheels={"tensorrt-cu12": "10.3.0"}, cuda_python="13.0.0", smi="580.65", cuda="13.0")
    machine["with_trt"]("10.3.0")
    d = trt_env.collect_trt_env()
    bad = next(c for c in d["checks"] if c["check"] == "tensorrt vs cuda-python")
    assert bad["ok"] is False and "pip install 'cuda-python>=12.0,<13'" in bad["detail"]
    assert d["verdict"].startswith("does not fit")
    assert "FAIL tensorrt vs cuda-python" in trt_env.format_trt_env(d)


def test_a_cuda12_driver_cannot_run_tensorrt_cu13(machine):
    """Without cuDriverGetVersion the driver branch says the CUDA major (535 < 580: CUDA 12)."""
    machine.update(wheels={"tensorrt-cu13": "11.4.0.106"}, cuda_python="13.0.0", smi="535.104.05")
    machine["with_trt"]("11.4.0")
    d = trt_env.collect_trt_env()
    assert d["driver"]["cuda_major"] == 12 and "compatibility table" in d["driver"]["cuda_source"]
    bad = next(c for c in d["checks"] if c["check"] == "driver vs tensorrt")
    assert bad["ok"] is False and "needs driver >= 580" in bad["detail"]
    assert "pip install 'edgekd[tensorrt-cu12]'" in bad["detail"]
    assert d["tensorrt"]["dla"] is False and "11.0-11.4.0" in d["tensorrt"]["dla_why_not"]


def test_two_tensorrt_wheels_are_flagged(machine):
    machine.update(wheels={"tensorrt-cu12": "10.3.0", "tensorrt-cu13": "11.4.0.106"}, cuda_python="13.0.0")
    d = trt_env.collect_trt_env()
    assert _checks(d)["one TensorRT wheel"] is False and d["tensorrt"]["cuda_major"] is None


def test_jetpack_tensorrt_without_pip_metadata(machine):
    machine.update(jetson={"model": "Jetson AGX Orin", "l4t": "36.4.3", "jetpack": "6.1/6.2"}, cuda_python="12.6.0",
                   cuda="12.6")
    machine["with_trt"]("10.3.0")
    d = trt_env.collect_trt_env()
    assert d["tensorrt"]["source"].startswith("JetPack") and d["tensorrt"]["cuda_major"] is None
    assert _checks(d)["tensorrt vs cuda-python"] is None and _checks(d)["driver vs cuda-python"] is True
    assert "JetPack 6.1/6.2" in trt_env.format_trt_env(d) and not d["verdict"].startswith(("does not", "incomplete"))


def test_a_wheel_whose_libraries_do_not_load_is_reported(machine, monkeypatch):
    machine.update(wheels={"tensorrt-cu12": "10.3.0"})
    monkeypatch.setattr(trt_env, "is_available", lambda m: True)

    def broken(name, **kwargs):
        raise OSError("libnvinfer.so.10: cannot open shared object file")

    monkeypatch.setattr(trt_env, "require", broken)
    d = trt_env.collect_trt_env()
    assert d["tensorrt"]["version"] == "10.3.0" and "libnvinfer.so.10" in d["tensorrt"]["error"]
    assert "does not import: OSError" in trt_env.format_trt_env(d)


@pytest.mark.parametrize("version, major", [("580.65.06", 13), ("550.54.15", 12), ("525.60.13", 12),
                                            ("470.239", 11), ("390.1", None), (None, None)])
def test_driver_branch_to_cuda_major(version, major):
    assert trt_env.cuda_major_for_driver(version) == major


def test_driver_cuda_version_from_cuda_python(monkeypatch):
    ok = _module("cuda.bindings.driver", cuDriverGetVersion=lambda: (0, 12040))
    monkeypatch.setitem(sys.modules, "cuda.bindings.driver", ok)
    assert trt_env._driver_cuda_version() == "12.4"

    def no_libcuda():
        raise RuntimeError('"cuda" is an NVIDIA driver library and can only be found via system search')

    monkeypatch.setitem(sys.modules, "cuda.bindings.driver", _module("cuda.bindings.driver",
                                                                     cuDriverGetVersion=no_libcuda))
    monkeypatch.setitem(sys.modules, "cuda.cuda", None)  # the pre-12.6 location is not there either
    assert trt_env._driver_cuda_version() is None


def test_driver_from_nvml(monkeypatch):
    class NVMLError(Exception):
        pass

    calls = []
    fake = _module("pynvml", NVMLError=NVMLError, nvmlInit=lambda: calls.append("init"),
                   nvmlShutdown=lambda: calls.append("shutdown"),
                   nvmlSystemGetDriverVersion=lambda: b"550.54.15", nvmlSystemGetCudaDriverVersion=lambda: 12040)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert trt_env._nvml() == {"version": "550.54.15", "cuda": "12.4"} and calls == ["init", "shutdown"]

    def no_driver():
        raise NVMLError("NVML Shared Library Not Found")

    fake.nvmlInit = no_driver
    assert trt_env._nvml() is None


def test_info_env_cli(machine):
    r = CliRunner().invoke(cli, ["info", "--env", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["format"] == "edgekd.trt_env"
    r = CliRunner().invoke(cli, ["info"])
    assert r.exit_code == 2 and "--env" in r.output
    r = CliRunner().invoke(cli, ["info", "somewhere", "--env"])
    assert r.exit_code == 2 and "not both" in r.output


def test_dla_calibration_is_entropy_only():
    from edgekd.export.tensorrt import TrtBuildSettings

    with pytest.raises(EdgekdError, match="--calib-method minmax with --dla-core: .* entropy"):
        TrtBuildSettings("int8", "pixels", (3, 32, 32), dla_core=0, trt_calibrator=True, calib_method="minmax")
    TrtBuildSettings("int8", "pixels", (3, 32, 32), dla_core=0, trt_calibrator=True, calib_method="entropy")


def test_missing_tensorrt_hint_fits_the_machine(monkeypatch):
    import platform

    from edgekd._optional import install_hint

    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert "JetPack" in install_hint("tensorrt") and "edgekd[tensorrt]" not in install_hint("tensorrt")
    assert install_hint("openvino") == "pip install 'edgekd[openvino]'"
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert install_hint("tensorrt-cu12") == "pip install 'edgekd[tensorrt-cu12]'"


def test_dla_bundles_print_the_jetpack7_command_and_no_x86_11x_one():
    from edgekd.export.tensorrt import TrtBuildSettings
    from edgekd.export.trtexec import device_commands

    files = {"onnx": "model.onnx", "onnx_fp16": "model.fp16.onnx"}
    dla = device_commands(Path("b"), TrtBuildSettings("fp16", "pixels", (3, 32, 32), dla_core=0), files)["trtexec"]
    assert set(dla) == {"TensorRT 11.4.1 (JetPack 7.2.2+, AGX Orin)", "TensorRT 10.x (JetPack 6)",
                        "TensorRT 8.6 (JetPack 5: 8.5)"}  # 11.0-11.4.0 (the x86 family here) have no DLA
    assert "--useDLACore=0" in dla["TensorRT 11.4.1 (JetPack 7.2.2+, AGX Orin)"]
    gpu = device_commands(Path("b"), TrtBuildSettings("fp16", "pixels", (3, 32, 32)), files)["trtexec"]
    assert "TensorRT 11.x (x86_64 / SBSA GPUs)" in gpu and not any("11.4.1" in k for k in gpu)
