"""Native crashes never kill the caller: CPU facts, isolated jobs, the runtime's canary, OpenVINO's AMX guard."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import load_benchmark
from test_runtime_support import make_bundle

from edgekd import EdgekdError
from edgekd.cpu import cpu_facts, cpu_key, describe
from edgekd.runtime.isolated import NativeCrashError, call_isolated, infer_isolated, run_model

AMX_CPUINFO = """vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16
"""
AVX2_CPUINFO = """vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse2 avx avx2 fma
"""
CRASHER = "import os\n\ndef canary_job(**kwargs):\n    os.abort()\n"


def test_cpu_facts_levels_and_isa_cap():
    amx = cpu_facts(AMX_CPUINFO, env={})
    assert amx["vendor"] == "GenuineIntel" and amx["model"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert amx["onednn_isa_levels"] == ["AVX2", "AVX512_CORE", "AVX512_CORE_VNNI", "AVX512_CORE_BF16",
                                        "AVX512_CORE_AMX"]
    assert amx["onednn_isa"] == "AVX512_CORE_AMX" and "amx_int8" in amx["flags"] and "sse2" not in amx["flags"]
    capped = cpu_facts(AMX_CPUINFO, env={"ONEDNN_MAX_CPU_ISA": "avx512_core_vnni"})
    assert capped["onednn_isa"] == "AVX512_CORE_VNNI" and capped["onednn_max_cpu_isa"] == "AVX512_CORE_VNNI"
    assert cpu_key(capped) != cpu_key(amx)  # a bundle validated under a cap is not validated for AMX
    assert describe(capped) == "Intel(R) Xeon(R) Platinum 8480+ (AVX512_CORE_VNNI of AVX512_CORE_AMX)"
    amd = cpu_facts(AVX2_CPUINFO, env={"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"})  # a cap above the CPU: no effect
    assert amd["onednn_isa_levels"] == ["AVX2"] and amd["onednn_isa"] == "AVX2"


@pytest.mark.parametrize("target, kwargs, signal", [("os:abort", {}, "SIGABRT"),
                                                    ("faulthandler:_sigsegv", {}, "SIGSEGV")])
def test_a_crash_in_the_child_is_one_error(target, kwargs, signal):
    with pytest.raises(NativeCrashError, match=rf"^a test job crashed \({signal}\) on this CPU, .+; do this") as e:
        call_isolated(target, kwargs, what="a test job", advice="do this")
    assert e.value.signal_name == signal and "\n" not in str(e.value)


def test_child_errors_come_back_as_edgekd_errors():
    with pytest.raises(EdgekdError, match="unknown model file type '.weird'"):
        call_isolated("edgekd.runtime.backends:resolve_backend", {"path": "model.weird"}, what="x")
    with pytest.raises(EdgekdError, match=r"x failed in its child process \(exit status 1"):
        call_isolated("json:loads", {"s": "{not json"}, what="x")
    assert call_isolated("json:loads", {"s": "[1, 2]"}, what="x") == [1, 2]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """An ungated bundle: no host record, so the canary runs on first load."""
    return make_bundle(tmp_path_factory.mktemp("iso") / "b", gate=False)


def test_infer_isolated_equals_in_process(bundle):
    from edgekd.runtime.backends import create_backend

    model = bundle / "model.onnx"
    be = create_backend(model, "onnxruntime", threads=1)
    x = np.random.default_rng(0).standard_normal((5, *be.input_shape[1:])).astype(np.float32)
    here = run_model(be, x)["embedding"]
    there = infer_isolated(model, "onnxruntime", x, threads=1)["embedding"]
    np.testing.assert_array_equal(here, there)
    frames = infer_isolated(model, "onnxruntime", [x[i:i + 1] for i in range(5)], threads=1)["embedding"]
    np.testing.assert_allclose(frames, here, atol=1e-5)


def test_canary_runs_once_per_cpu_and_is_cached(bundle, tmp_path, monkeypatch):
    from edgekd.runtime.bundle import read_bundle
    from edgekd.runtime.canary import check_runs_here

    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path))
    info = read_bundle(bundle)
    assert check_runs_here(info, "onnxruntime") == "canary passed"
    cached = list((tmp_path / "canary").glob("*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["cpu_key"] == cpu_key(cpu_facts())
    assert check_runs_here(info, "onnxruntime") == "cached"
    expected = "cached" if cpu_facts()["onednn_isa"] in ("AVX2", None) else "canary passed"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # another ISA level is another CPU as far as kernels go
    assert check_runs_here(info, "onnxruntime") == expected
    assert check_runs_here(info, "tensorrt") == "skipped"


def test_validated_bundle_skips_the_canary(tmp_path, image_folder, monkeypatch):
    from edgekd.runtime.bundle import read_bundle
    from edgekd.runtime.canary import check_runs_here, host_record

    gated = make_bundle(tmp_path / "gated", val_dir=image_folder)
    meta = read_bundle(gated).meta
    host = json.loads(json.dumps(host_record("onnxruntime")))
    assert {k: meta["parity"]["validated_on"][k] for k in host} == host
    assert meta["parity"]["validated_on"]["onednn_isa_levels"] == []  # onnxruntime: no cap reaches its kernels
    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("edgekd.runtime.canary.CANARY_JOB", "os:abort")  # would crash if it ran
    assert check_runs_here(read_bundle(gated), "onnxruntime") == "validated here"


def test_crashing_canary_is_a_clear_error_not_a_dead_app(bundle, tmp_path, monkeypatch):
    """A bundle that crashes the engine: the child dies (os.abort), the app gets one line naming bundle and backend."""
    from edgekd.cli import cli
    from edgekd.runtime.classifier import OpenVocabClassifier

    (tmp_path / "crasher_module.py").write_text(CRASHER)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("edgekd.runtime.canary.CANARY_JOB", "crasher_module:canary_job")
    with pytest.raises(NativeCrashError, match=rf"a test inference of {bundle} on onnxruntime crashed \(SIGABRT\)"):
        OpenVocabClassifier.load(bundle, allow_ungated=True)
    assert not (tmp_path / "cache" / "canary").exists()  # a crash is not cached as a pass
    image = next(Path(__file__).parent.glob("*.py"))  # any path: the bundle fails before images are read
    res = CliRunner().invoke(cli, ["classify", str(bundle), str(image), "--allow-ungated"])
    assert res.exit_code == 1 and "crashed (SIGABRT)" in res.output and "re-export it on this machine" in res.output
    monkeypatch.setenv("EDGEKD_NO_CANARY", "1")
    assert OpenVocabClassifier.load(bundle, allow_ungated=True).embed_dim > 0


# --- OpenVINO on AMX ----------------------------------------------------------------------------------------------

def _repro():
    return load_benchmark("repro", "benchmarks/openvino_amx")


@pytest.mark.openvino
@pytest.mark.parametrize("variant, risky", [
    ((96, 192, 2, "asym", "pcdead", "dw"), True), ((32, 64, 1, "asym", "pc", "none"), True),
    ((96, 192, 3, "asym", "pcdead", "dw"), False), ((96, 192, 2, "sym", "pcdead", "dw"), False)])
def test_legacy_amx_detector_matches_the_reproduction(variant, risky):
    """The crash table (benchmarks/results/openvino_amx.md): asymmetric input + <= 4 output pixels is flagged."""
    pytest.importorskip("openvino")
    from edgekd.export.openvino import legacy_amx_convolutions

    found = legacy_amx_convolutions(_repro().build(*variant))
    assert bool(found) == risky, found


def test_ungated_bundles_are_refused_unless_allowed(bundle, tmp_path):
    from edgekd.cli import cli
    from edgekd.runtime.bundle import UngatedBundleError
    from edgekd.runtime.classifier import OpenVocabClassifier

    with pytest.raises(UngatedBundleError, match=r"its parity gate was skipped \(skipped \(--no-gate\)\).*"
                                                 "allow_ungated=True / --allow-ungated"):
        OpenVocabClassifier.load(bundle)
    res = CliRunner().invoke(cli, ["classify", str(bundle), str(tmp_path)])
    assert res.exit_code == 1 and "parity gate was skipped" in res.output and len(res.output.splitlines()) == 1
    info = CliRunner().invoke(cli, ["info", str(bundle)])
    assert info.exit_code == 0 and "parity_gate: skipped (--no-gate)" in info.output


def test_openvino_gate_runs_under_every_isa_level_up_to_the_one_in_force(monkeypatch):
    from edgekd.export.parity import gate_isa_levels

    monkeypatch.setattr("edgekd.cpu.read_cpuinfo", lambda: AMX_CPUINFO)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert gate_isa_levels("openvino") == ["AVX2", "AVX512_CORE_VNNI", "AVX512_CORE_AMX"]
    assert gate_isa_levels("openvino", "host") == [None] and gate_isa_levels("onnxruntime") == [None]
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")  # a cap: nothing above it, and the cap itself
    assert gate_isa_levels("openvino") == ["AVX2", "AVX512_CORE_VNNI", "AVX512_CORE_BF16"]
    monkeypatch.setattr("edgekd.cpu.read_cpuinfo", lambda: AVX2_CPUINFO)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert gate_isa_levels("openvino") == ["AVX2"]
    with pytest.raises(EdgekdError, match="--gate-isa"):
        gate_isa_levels("openvino", "some")
