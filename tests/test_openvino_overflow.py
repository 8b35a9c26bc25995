"""OpenVINO INT8 and the saturation of 8-bit dot products on x86 CPUs without VNNI (edgekd/export/openvino.py,
"INT8 weights and the CPU's ISA"): a tiny model built to saturate, quantised by the openvino target with NNCF's
default overflow fix (--gate-isa host) and with the fix in every layer (--gate-isa all), judged by the parity gate
under every oneDNN ISA level of this CPU. AVX2 kernels run on any x86-64 CPU with AVX2, VNNI or not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("openvino")
pytest.importorskip("nncf")
pytestmark = pytest.mark.openvino

C1 = 16  # channels between the two convolutions; even, so that input-channel pairs line up


class Saturating(torch.nn.Module):
    """[B, 3, H, W] in [0.85, 1] -> [B, 4]: conv 1x1 -> ReLU -> conv 1x1 -> spatial mean.

    The first convolution copies input channel 0 into the first half of its outputs ("bright", near the top of the
    u8 range of the second convolution's input) and 0.4 x channel 1 into the second half ("dim", below half of it).
    The second convolution sums the bright channels with equal weights, which quantise to +127: each u8 x s8 pair
    summed into 16 bits (AVX2 vpmaddubsw) reaches about 255 * 127 * 2 = 64770 and saturates at 32767. Its other
    outputs read the dim channels (no saturation) or mix both, so a saturated output changes the embedding's
    direction, not only its length. The first convolution is the one NNCF's default overflow fix covers."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = torch.nn.Conv2d(3, C1, 1), torch.nn.Conv2d(C1, 4, 1)
        w1, w2 = torch.zeros(C1, 3, 1, 1), torch.zeros(4, C1, 1, 1)
        w1[:C1 // 2, 0], w1[C1 // 2:, 1] = 1.0, 0.4
        w2[0, :C1 // 2] = 1.0
        w2[1, C1 // 2:] = 2.5
        w2[2, :C1 // 2], w2[2, C1 // 2:] = 0.5, 1.0
        w2[3, :, 0, 0] = torch.linspace(-1, 1, C1)
        with torch.no_grad():
            self.c1.weight.copy_(w1), self.c2.weight.copy_(w2)
            self.c1.bias.zero_(), self.c2.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(torch.relu(self.c1(x))).mean((2, 3))


def _inputs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.85, 1.0, (n, 3, 8, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def saturating_onnx(tmp_path_factory):
    from edgekd.cpu import cpu_facts

    if "AVX2" not in cpu_facts(env={})["onednn_isa_levels"]:
        pytest.skip("this CPU has no AVX2: oneDNN's AVX2 INT8 kernels (where 8-bit dot products saturate) cannot run")
    model = Saturating().eval()
    path = tmp_path_factory.mktemp("saturating") / "model.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, 8, 8),), str(path), input_names=["pixels"],
                      output_names=["embedding"], dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}},
                      opset_version=17, dynamo=False)
    return model, path


def _int8_and_gate(saturating_onnx, out_dir, gate_isa):
    """The openvino target's INT8 of the model for `gate_isa`, and the parity gate's report over every ISA level."""
    from edgekd.export.parity import GateCriteria, check_parity
    from edgekd.export.targets import ExportRequest, get_target

    model, onnx_path = saturating_onnx
    out_dir.mkdir()
    req = ExportRequest(student=model, preprocess=None, out_dir=out_dir, precision="int8", onnx_path=onnx_path,
                        calib=_inputs(16, 1), options={"gate_isa": gate_isa})
    result = get_target("openvino").build(req)
    val = _inputs(8, 2)
    report = check_parity(model, out_dir / "model.xml", "openvino", val, val,
                          GateCriteria.default("int8", small_gate_ok=True), threads=1, gate_isa="all")
    return result.metadata["openvino"]["quantization"], report


def _worst_cosine_per_isa(report):
    """{ISA level: worst image's cosine} of a parity report (one level: the report's own metrics)."""
    per_isa = report.get("per_isa") or {report["validated_on"]["onednn_isa_levels"][0]: report["metrics"]}
    return {lvl: round(v["cosine_min"], 6) for lvl, v in per_isa.items()}


def test_overflow_fix_keeps_int8_exact_under_avx2(saturating_onnx, tmp_path):
    fixed_q, fixed = _int8_and_gate(saturating_onnx, tmp_path / "all", "all")
    plain_q, plain = _int8_and_gate(saturating_onnx, tmp_path / "host", "host")
    assert fixed_q["overflow_fix"] == "enable" and "any x86 CPU" in fixed_q["overflow_fix_because"]
    assert plain_q["overflow_fix"] == "first_layer" and "VNNI/AMX" in plain_q["overflow_fix_because"]
    plain_cos, fixed_cos = _worst_cosine_per_isa(plain), _worst_cosine_per_isa(fixed)
    # NNCF's default fixes the first convolution only; the second saturates in AVX2's 16-bit pair sums
    assert plain_cos["AVX2"] < 0.99 and not plain["passed"], (plain_cos, plain["reasons"])
    if "AVX512_CORE_VNNI" in plain_cos:  # VNNI sums u8 x s8 products into 32 bits: the same IR is exact there
        assert plain_cos["AVX512_CORE_VNNI"] > 0.9999 and plain["per_isa"]["AVX2"]["passed"] is False, plain_cos
    assert fixed["passed"] and min(fixed_cos.values()) > 0.9999, (fixed_cos, fixed["reasons"])


def test_overflow_fix_option_overrides_gate_isa(tmp_path):
    from edgekd import EdgekdError
    from edgekd.export.openvino import resolve_overflow_fix

    assert resolve_overflow_fix({})[0] == "enable"  # the pipeline's default --gate-isa all
    assert resolve_overflow_fix({"gate_isa": "host"})[0] == "first_layer"
    assert resolve_overflow_fix({"gate_isa": "host", "overflow_fix": "ENABLE"}) == ("enable",
                                                                                   "--option overflow_fix=enable")
    with pytest.raises(EdgekdError, match="overflow_fix=half: use one of enable, first_layer, disable"):
        resolve_overflow_fix({"overflow_fix": "half"})


def test_accuracy_control_sees_avx2_saturation(saturating_onnx, tmp_path):
    """--auto-mixed judges its candidates under the gate's lowest ISA level: with the overflow fix in the first layer
    only (as NNCF's default), the saturating convolution costs nothing on VNNI but fails under AVX2, so NNCF's
    accuracy control must see it there and keep that layer in float."""
    from edgekd.export.openvino import worst_gate_isa
    from edgekd.export.parity import GateCriteria, check_parity
    from edgekd.export.targets import ExportRequest, get_target

    model, onnx_path = saturating_onnx
    req = ExportRequest(student=model, preprocess=None, out_dir=tmp_path, precision="int8", onnx_path=onnx_path,
                        calib=_inputs(16, 1), options={"gate_isa": "all", "overflow_fix": "first_layer",
                                                       "max_drop": 0.5})
    q = get_target("openvino").build(req).metadata["openvino"]["quantization"]
    assert q["mode"] == "accuracy_control" and q["judged_under_isa"] == worst_gate_isa("all") == "AVX2"
    assert q["overflow_fix"] == "first_layer" and q["overflow_fix_because"] == "--option overflow_fix=first_layer"
    val = _inputs(8, 2)
    report = check_parity(model, tmp_path / "model.xml", "openvino", val, val,
                          GateCriteria.default("int8", small_gate_ok=True), threads=1, gate_isa="all")
    assert report["passed"], (_worst_cosine_per_isa(report), report["reasons"])


def test_auto_mixed_is_judged_by_the_gate_criteria_under_avx2(saturating_onnx, tmp_path):
    """--auto-mixed without --max-drop: NNCF maximises the gate's own margin (cosine mean/p1/worst, agreement) under
    AVX2 and keeps the saturating layer in float, so the bundle passes the gate under every ISA level."""
    from edgekd.export.openvino import GATE_HEADROOM
    from edgekd.export.parity import GateCriteria, check_parity
    from edgekd.export.targets import ExportRequest, get_target

    model, onnx_path = saturating_onnx
    req = ExportRequest(student=model, preprocess=None, out_dir=tmp_path, precision="int8", onnx_path=onnx_path,
                        calib=_inputs(16, 1), options={"gate_isa": "all", "overflow_fix": "first_layer",
                                                       "auto_mixed": True})
    q = get_target("openvino").build(req).metadata["openvino"]["quantization"]
    assert q["mode"] == "accuracy_control" and q["judged_by"] == "gate criteria" and q["metric"] == "gate_margin"
    assert q["judged_under_isa"] == "AVX2" and q["min_gate_margin"] == GATE_HEADROOM
    val = _inputs(8, 2)
    report = check_parity(model, tmp_path / "model.xml", "openvino", val, val,
                          GateCriteria.default("int8", small_gate_ok=True), threads=1, gate_isa="all")
    assert report["passed"], (_worst_cosine_per_isa(report), report["reasons"])
