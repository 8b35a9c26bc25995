"""export-core: ONNX fp32/fp16/int8 bundles, parity gate, bundle hashes, bad inputs, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from conftest import make_image

from edgekd import EdgekdError
from edgekd.export.bundle import load_bundle_manifest
from edgekd.export.pipeline import GateFailedError
from edgekd.export.pipeline import export_bundle as _export_bundle
from edgekd.labelpack import LabelPack
from edgekd.runtime.bundle import CorruptBundleError


def export_bundle(*args, **kwargs) -> Path:
    """The test images are a few dozen: accept small gates unless a test says otherwise."""
    kwargs.setdefault("small_gate_ok", True)
    return _export_bundle(*args, **kwargs)


ARCH = "test_efficientnet"  # a tiny CNN: convolutions quantise well
COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
TEACHER = "test-teacher"


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny models on a shared 2-core machine: one thread is ~10x faster than oversubscribed intra-op threads."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """ImageFolder: 3 colour classes x 12 images."""
    root = tmp_path_factory.mktemp("export_images")
    for ci, (name, rgb) in enumerate(COLORS.items()):
        for i in range(12):
            make_image(root / name / f"{i:02d}.jpg", rgb, size=(36 + 2 * i, 40), seed=ci * 100 + i)
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data) -> Path:
    """A run dir whose student was trained a few steps to map each colour onto its class's label embedding."""
    from edgekd.data.images import load_rgb
    from edgekd.students.io import save_student
    from edgekd.students.model import create_student

    torch.manual_seed(0)
    student = create_student(ARCH, 32, img_size=32, teacher_id=TEACHER)
    pp = student.cfg.get_preprocess()
    pack = LabelPack(list(COLORS), np.random.default_rng(0).normal(size=(3, 32)),
                     meta={"teacher_id": TEACHER, "logit_scale": 100.0})
    paths = sorted(data.rglob("*.jpg"))
    x = torch.from_numpy(np.stack([pp(load_rgb(p)) for p in paths]))
    y = torch.tensor([list(COLORS).index(p.parent.name) for p in paths])
    target = torch.from_numpy(pack.embeddings)[y]
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    student.train()
    for _ in range(15):
        loss = (1 - F.cosine_similarity(student(x), target)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    student.eval()
    run = tmp_path_factory.mktemp("run")
    save_student(run, student)
    pack.save(run / "labels.npz")
    return run


@pytest.fixture(scope="module")
def fp32_bundle(tmp_path_factory, run_dir, data) -> Path:
    return export_bundle(run_dir, "onnx", "fp32", tmp_path_factory.mktemp("b") / "fp32", calib_dir=data)


def _size(bundle: Path) -> int:
    return (bundle / load_bundle_manifest(bundle)["files"]["model"]).stat().st_size


def test_fp32_bundle_manifest_and_parity(fp32_bundle, run_dir):
    m = load_bundle_manifest(fp32_bundle)
    assert m["format"] == "edgekd.bundle" and m["target"] == "onnx" and m["precision"] == "fp32"
    assert m["files"] == {"model": "model.onnx", "labels": "labels.npz"}
    assert set(m["sha256"]) == {"model.onnx", "labels.npz"}
    assert m["input"] == {"name": "pixels", "shape": ["batch", 3, 32, 32], "dtype": "float32", "layout": "NCHW"}
    assert m["output"]["shape"] == ["batch", 32] and m["embed_dim"] == 32 and m["opset"] == 17
    assert m["teacher_id"] == TEACHER and m["source_run"]["weights_sha256"]
    assert m["versions"]["onnxruntime"] and m["versions"]["torch"]
    p = m["parity"]
    assert p["passed"] is True and p["metrics"]["cosine_mean"] >= 0.9999
    assert p["metrics"]["top1_agreement"] == 1.0 and "accuracy_drop" in p["metrics"]
    assert json.loads((fp32_bundle / "parity.json").read_text())["passed"] is True
    assert sorted(f.name for f in fp32_bundle.iterdir()) == ["edgekd.json", "labels.npz", "model.onnx", "parity.json"]


def test_dynamic_batch_runs_any_batch(fp32_bundle):
    from edgekd.runtime.backends import create_backend

    b = create_backend(fp32_bundle / "model.onnx")
    for n in (1, 5):
        out = b.run(np.random.default_rng(n).normal(size=(n, 3, 32, 32)).astype(np.float32))["embedding"]
        assert out.shape == (n, 32)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)  # L2 norm is in the graph


def test_int8_smaller_and_agrees(tmp_path, run_dir, data, fp32_bundle):
    bundle = export_bundle(run_dir, "onnx", "int8", tmp_path / "int8", calib_dir=data)
    m = load_bundle_manifest(bundle)
    assert m["parity"]["passed"] and m["parity"]["metrics"]["top1_agreement"] >= 0.98
    assert m["parity"]["metrics"]["accuracy_drop"] <= 1.0
    q = m["target_metadata"]["quantization"]
    assert q["format"] == "QDQ" and q["per_channel"] and q["quantized_nodes"] > 5
    assert m["calibration"]["images"] > 0 and m["calibration"]["method"] == "minmax"
    # parity images are never calibration images
    assert m["calibration"]["images"] + m["parity"]["metrics"]["images"] <= 36
    assert _size(bundle) < _size(fp32_bundle) / 2


def test_fp16_passes(tmp_path, run_dir, data):
    bundle = export_bundle(run_dir, "onnx", "fp16", tmp_path / "fp16", val_dir=data)
    m = load_bundle_manifest(bundle)
    assert m["parity"]["passed"] and m["parity"]["metrics"]["cosine_mean"] >= 0.999
    assert m["target_metadata"]["fp16"]["converter"]


def test_preprocess_in_graph_and_scores(tmp_path, run_dir, data, fp32_bundle):
    from edgekd.data.images import load_rgb
    from edgekd.preprocess import Preprocess
    from edgekd.runtime.backends import create_backend

    bundle = export_bundle(run_dir, "onnx", "fp32", tmp_path / "frames", val_dir=data, preprocess_in_graph=True,
                           with_labels=True, static_batch=2)
    m = load_bundle_manifest(bundle)
    assert m["input"]["name"] == "frames" and m["input"]["shape"] == [2, 32, 32, 3] and m["preprocess_in_graph"]
    assert m["scores"]["shape"] == [2, 3] and m["parity"]["passed"]
    pp = Preprocess.from_dict(m["preprocess"])
    frames = np.stack([pp.render(load_rgb(p)) for p in sorted(data.rglob("*.jpg"))[:2]])
    out = create_backend(bundle / "model.onnx").run(frames)
    ref = create_backend(fp32_bundle / "model.onnx").run(pp.normalize(frames))["embedding"]
    np.testing.assert_allclose(out["embedding"], ref, atol=1e-5)
    pack = LabelPack.__new__(LabelPack)
    from edgekd.labelpack import load_label_pack

    pack = load_label_pack(bundle / "labels.npz")
    np.testing.assert_allclose(out["scores"], pack.logit_scale * out["embedding"] @ pack.embeddings.T, atol=1e-3)


def test_full_in_graph_preprocessing_int8_and_cli(tmp_path, run_dir, data, fp32_bundle):
    """`--preprocess-in-graph full`: INT8 model with the crop/resize head added after quantisation; the gate runs on
    the original (differently sized) images; the CLI takes the option with and without its value."""
    from edgekd.cli import cli
    from edgekd.data.images import load_rgb
    from edgekd.preprocess import Preprocess
    from edgekd.runtime.backends import create_backend

    bundle = export_bundle(run_dir, "onnx", "int8", tmp_path / "full8", calib_dir=data, preprocess_in_graph="full")
    m = load_bundle_manifest(bundle)
    assert m["resize_in_graph"] and m["preprocess_in_graph"] and m["opset"] == 18 and m["parity"]["passed"]
    assert m["input"]["shape"] == ["batch", "height", "width", 3]
    img = load_rgb(sorted(data.rglob("*.jpg"))[-1])  # 58 x 40: the graph crops and resizes it
    out = create_backend(bundle / "model.onnx").run(np.asarray(img)[None])["embedding"]
    pp = Preprocess.from_dict(m["preprocess"])
    ref = create_backend(fp32_bundle / "model.onnx").run(pp(img)[None])["embedding"]
    assert float(np.sum(out * ref)) > 0.99

    with pytest.raises(EdgekdError, match="needs --target onnx"):
        export_bundle(run_dir, "openvino", "fp32", tmp_path / "ov", val_dir=data, preprocess_in_graph="full")
    with pytest.raises(EdgekdError, match="use normalize"):
        export_bundle(run_dir, "onnx", "fp32", tmp_path / "bad", val_dir=data, preprocess_in_graph="resize")
    runner = CliRunner()
    for args, resize in ((["--preprocess-in-graph"], False), (["--preprocess-in-graph", "full"], True)):
        out_dir = tmp_path / f"cli{len(args)}"
        res = runner.invoke(cli, ["export", str(run_dir), *args, "--val", str(data), "--out", str(out_dir),
                                  "--small-gate-ok"])
        assert res.exit_code == 0, res.output
        m = load_bundle_manifest(out_dir)
        assert m["preprocess_in_graph"] and m["resize_in_graph"] is resize


def test_broken_in_graph_preprocessing_fails_gate(tmp_path, run_dir, data, monkeypatch):
    import edgekd.export.onnx as onnx_mod

    real = onnx_mod.FramesToPixels

    class WrongStd(real):  # a deliberately broken export: the graph normalises with the wrong std
        def __init__(self, mean, std):
            super().__init__(mean, (0.5, 0.5, 0.5))

    monkeypatch.setattr(onnx_mod, "FramesToPixels", WrongStd)
    with pytest.raises(GateFailedError) as e:
        export_bundle(run_dir, "onnx", "fp32", tmp_path / "broken", val_dir=data, preprocess_in_graph=True)
    assert e.value.exit_code == 3 and "--no-gate" in str(e.value)
    report = json.loads((tmp_path / "broken" / "parity.json").read_text())
    assert report["passed"] is False and report["metrics"]["cosine_mean"] < 0.9999
    assert load_bundle_manifest(tmp_path / "broken")["parity"]["passed"] is False


def test_corrupted_model_is_refused(tmp_path, fp32_bundle):
    import shutil

    bundle = Path(shutil.copytree(fp32_bundle, tmp_path / "copy"))
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(CorruptBundleError, match="sha256"):
        load_bundle_manifest(bundle)
    (bundle / "labels.npz").unlink()
    with pytest.raises(CorruptBundleError, match="missing"):
        load_bundle_manifest(bundle, verify=True)
    assert load_bundle_manifest(bundle, verify=False)["format"] == "edgekd.bundle"


def test_auto_mixed_keeps_sensitive_nodes(tmp_path, run_dir, data, monkeypatch):
    """The search mechanics, independent of any CPU's int8 rounding: the criteria are replaced by "at least one
    layer back in float", so the search must stop after keeping exactly the worst-ranked layer's group."""
    import onnx

    import edgekd.export.sensitivity as sensitivity

    real_evaluate = sensitivity._evaluate
    dequantizers: list[int] = []

    def evaluate(int8_path, x, ref, req):
        _, metrics = real_evaluate(int8_path, x, ref, req)
        count = sum(n.op_type == "DequantizeLinear" for n in onnx.load(str(int8_path)).graph.node)
        dequantizers.append(count)
        return count < dequantizers[0], metrics  # the first call sees the full INT8 model

    monkeypatch.setattr(sensitivity, "_evaluate", evaluate)
    bundle = export_bundle(run_dir, "onnx", "int8", tmp_path / "mixed", calib_dir=data, auto_mixed=True,
                           gate=False)
    q = load_bundle_manifest(bundle)["target_metadata"]["quantization"]
    ranking = [r["added_error"] for r in q["sensitivity"]]
    assert ranking and ranking == sorted(ranking, reverse=True)
    assert len(dequantizers) == 2  # full INT8, then one layer group in float
    assert q["kept_fp32_auto"][0] == q["sensitivity"][0]["node"]
    assert 0 < len(q["kept_fp32_auto"]) < q["quantizable_nodes"]
    assert q["quantized_nodes"] == q["quantizable_nodes"] - len(q["kept_fp32_auto"])


def test_int8_that_fails_its_gate_is_exported_again_with_auto_mixed(tmp_path, run_dir, data, monkeypatch):
    """The INT8 default: full INT8 first; a failed gate (faked here for the first try) re-exports with --auto-mixed,
    and the report keeps both tries. --no-auto-mixed never retries."""
    import edgekd.export.parity as parity

    real, calls = parity.check_parity, []

    def first_fails(*args, **kwargs):
        report = real(*args, **kwargs)
        calls.append(kwargs.get("reparameterized") is not None)
        if len(calls) == 1:
            report.update(passed=False, reasons=["top-1 agreement 90.00% < 98.00% (faked)"])
        return report

    monkeypatch.setattr(parity, "check_parity", first_fails)
    m = load_bundle_manifest(export_bundle(run_dir, "onnx", "int8", tmp_path / "retry", calib_dir=data))
    assert len(calls) == 2 and m["parity"]["passed"] is True
    [first] = m["parity"]["int8_attempts"]
    assert first["auto_mixed"] is False and "faked" in first["reasons"][0] and first["metrics"]["cosine_mean"] > 0
    calls.clear()
    with pytest.raises(GateFailedError, match="faked"):
        export_bundle(run_dir, "onnx", "int8", tmp_path / "never", calib_dir=data, auto_mixed=False)
    assert len(calls) == 1


def test_split_is_disjoint_and_bad_images_skipped(tmp_path, data):
    import shutil

    from edgekd.export.calibration import load_image_set, split_calib_val
    from edgekd.preprocess import Preprocess

    root = Path(shutil.copytree(data, tmp_path / "imgs"))
    (root / "red" / "bad.jpg").write_bytes(b"not a jpeg")
    s = load_image_set(root, Preprocess(size=(32, 32)), 100)
    assert len(s) == 36 and s.skipped == [{"path": "red/bad.jpg", "reason": "not an image"}]
    assert s.frames.shape == (36, 32, 32, 3) and s.frames.dtype == np.uint8
    c, v = split_calib_val(s, 10)
    assert not set(c.paths) & set(v.paths) and len(c) == 26 and len(v) == 10
    again = load_image_set(root, Preprocess(size=(32, 32)), 10)
    assert again.paths == load_image_set(root, Preprocess(size=(32, 32)), 10).paths  # deterministic sample


def test_bad_inputs(tmp_path, run_dir, data):
    import shutil

    with pytest.raises(EdgekdError, match="no such run directory"):
        export_bundle(tmp_path / "nope", "onnx", "fp32", tmp_path / "o", calib_dir=data)
    no_weights = Path(shutil.copytree(run_dir, tmp_path / "noweights"))
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(EdgekdError, match="model.safetensors"):
        export_bundle(no_weights, "onnx", "fp32", tmp_path / "o", calib_dir=data)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgekdError, match="--calib .*no image files"):
        export_bundle(run_dir, "onnx", "int8", tmp_path / "o", calib_dir=tmp_path / "empty")
    with pytest.raises(EdgekdError, match="int8 needs --calib"):
        export_bundle(run_dir, "onnx", "int8", tmp_path / "o", val_dir=data)
    with pytest.raises(EdgekdError, match="--val DIR"):
        export_bundle(run_dir, "onnx", "fp32", tmp_path / "o")
    with pytest.raises(EdgekdError, match="unknown export target"):
        export_bundle(run_dir, "coreml", "fp32", tmp_path / "o", calib_dir=data)
    with pytest.raises(EdgekdError, match="--precision 'bf16'"):
        export_bundle(run_dir, "onnx", "bf16", tmp_path / "o", calib_dir=data)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("x")
    with pytest.raises(EdgekdError, match="not empty"):
        export_bundle(run_dir, "onnx", "fp32", tmp_path / "busy", calib_dir=data)
    wrong = LabelPack(["a", "b"], np.eye(2, 16), meta={"teacher_id": TEACHER})
    wrong.save(tmp_path / "wrong.npz")
    with pytest.raises(EdgekdError, match="16-d"):
        export_bundle(run_dir, "onnx", "fp32", tmp_path / "o", calib_dir=data, labels=tmp_path / "wrong.npz")


def test_precision_not_supported_by_target():
    from edgekd.export.targets import TargetSpec, check_precision

    with pytest.raises(EdgekdError, match="supports fp32"):
        check_precision(TargetSpec("x", ("fp32",), lambda r: None), "int8")


def test_cli_happy_path_and_gate_failure(tmp_path, run_dir, data, monkeypatch):
    from edgekd.cli import cli
    from edgekd.runtime.bundle import UngatedBundleError
    from edgekd.runtime.classifier import OpenVocabClassifier

    runner = CliRunner()
    assert runner.invoke(cli, ["export", "--help"]).exit_code == 0
    res = runner.invoke(cli, ["export", str(run_dir), "--precision", "fp32", "--val", str(data), "--small-gate-ok",
                              "--out", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    assert "parity gate passed on 36 images" in res.output and (tmp_path / "cli" / "edgekd.json").is_file()

    import edgekd.export.parity as parity

    monkeypatch.setitem(parity.COSINE_FLOORS, "fp32", (1.5, 0.0, 0.0))  # impossible: forces a gate failure
    res = runner.invoke(cli, ["export", str(run_dir), "--val", str(data), "--small-gate-ok", "--out",
                              str(tmp_path / "fail")])
    assert res.exit_code == 3, res.output
    assert "parity gate failed" in res.output and "parity.json" in res.output
    # the failed bundle is kept for inspection, and refused by the runtime unless asked for
    with pytest.raises(UngatedBundleError, match=rf"its parity gate failed .*mean embedding cosine .* report: "
                                                 rf"{tmp_path / 'fail' / 'parity.json'}"):
        OpenVocabClassifier.load(tmp_path / "fail")
    assert OpenVocabClassifier.load(tmp_path / "fail", allow_ungated=True).embed_dim == 32
    res = runner.invoke(cli, ["export", str(run_dir), "--no-gate", "--out", str(tmp_path / "nogate")])
    assert res.exit_code == 0, res.output
    assert load_bundle_manifest(tmp_path / "nogate")["parity"]["skipped"] is True
    res = runner.invoke(cli, ["export", str(tmp_path / "missing"), "--val", str(data), "--out", str(tmp_path / "m")])
    assert res.exit_code == 1 and "no such run directory" in res.output


def test_gate_needs_200_images_unless_a_small_gate_is_accepted(tmp_path, run_dir, data):
    with pytest.raises(GateFailedError, match=r"the gate ran on 36 image\(s\), fewer than 200"):
        _export_bundle(run_dir, "onnx", "fp32", tmp_path / "val", val_dir=data)
    # with --calib alone, enough images are held out of it, or the error says how many are missing
    with pytest.raises(EdgekdError, match=r"--calib .*: 36 usable image\(s\), but the parity gate needs 200 "
                                          r"held-out images besides at least 8 for calibration: add 172 more images"):
        _export_bundle(run_dir, "onnx", "int8", tmp_path / "calib", calib_dir=data)
    small = load_bundle_manifest(_export_bundle(run_dir, "onnx", "int8", tmp_path / "small", calib_dir=data,
                                                small_gate_ok=True))
    assert small["parity"]["metrics"]["images"] == 7 and small["calibration"]["images"] == 29  # 20 % held out
    assert "images >= 1" in small["parity"]["criteria"]


def test_gate_compares_with_the_student_as_trained(tmp_path, run_dir, data, monkeypatch):
    """A reparameterisation that changes the model is caught, though the export matches the fused student."""
    import edgekd.students.model as model

    real = model.reparameterize

    def broken(student):
        student = real(student)
        with torch.no_grad():
            student.head.weight.mul_(-1.0)  # a wrong fusion
        return student

    monkeypatch.setattr(model, "reparameterize", broken)
    with pytest.raises(GateFailedError, match="the reparameterised student .* differs from the student as trained"):
        export_bundle(run_dir, "onnx", "fp32", tmp_path / "b", val_dir=data)


def test_eval_results_are_embedded_and_checked(tmp_path, run_dir, data):
    """`--eval` puts `edgekd eval` results into edgekd.json (bench's Pareto plot reads them); results of another
    student or teacher are refused."""
    import json

    from edgekd.bench.plot import eval_metric

    ev = {"format": "edgekd.eval", "version": 1, "source": {"kind": "run", "arch": ARCH, "teacher_id": TEACHER},
          "fidelity": {"mean_cosine": 0.93, "retrieval_at_1": 0.4}}
    (tmp_path / "eval.json").write_text(json.dumps(ev))
    bundle = export_bundle(run_dir, "onnx", "fp32", tmp_path / "b", calib_dir=data, eval_file=tmp_path / "eval.json")
    m = load_bundle_manifest(bundle)
    assert m["eval"]["fidelity"]["mean_cosine"] == 0.93 and m["eval"]["file"] == "eval.json"
    assert eval_metric(m["eval"]) == ("fidelity.mean_cosine", 0.93)

    ev["source"]["teacher_id"] = "ViT-L-14@0123"
    (tmp_path / "other.json").write_text(json.dumps(ev))
    with pytest.raises(EdgekdError, match="not made on this run's student"):
        export_bundle(run_dir, "onnx", "fp32", tmp_path / "c", calib_dir=data, eval_file=tmp_path / "other.json")
    with pytest.raises(EdgekdError, match="no such file"):
        export_bundle(run_dir, "onnx", "fp32", tmp_path / "d", calib_dir=data, eval_file=tmp_path / "nope.json")


def test_precision_auto_keeps_the_fastest_passing_precision(tmp_path, run_dir, data):
    from edgekd.export.auto import export_auto

    bundle = export_auto(run_dir, "onnx", tmp_path / "auto", calib_dir=data, threads=1, small_gate_ok=True)
    m = load_bundle_manifest(bundle)
    auto = m["precision_auto"]
    cands = auto["candidates"]
    assert set(cands) == {"fp32", "int8"} and all(c["passed"] for c in cands.values())
    assert auto["chosen"] == min(cands, key=lambda p: cands[p]["p50_ms"]) == m["precision"]
    assert cands["int8"]["model_mb"] < cands["fp32"]["model_mb"]
    assert m["parity"]["passed"] and not (tmp_path / "auto.auto").exists()


def test_precision_auto_skips_failing_and_uncalibrated_precisions(tmp_path, run_dir, data, monkeypatch):
    import edgekd.export.parity as parity
    from edgekd.cli import cli
    from edgekd.export.auto import export_auto

    real = parity.GateCriteria.default
    monkeypatch.setattr(parity.GateCriteria, "default", classmethod(  # an INT8 gate nothing can pass
        lambda cls, precision, max_drop=None, **kw: real(precision, max_drop, **kw, min_mean_cosine=1.01)
        if precision == "int8" else real(precision, max_drop, **kw)))
    r = CliRunner().invoke(cli, ["export", str(run_dir), "--precision", "auto", "--calib", str(data),
                                 "--out", str(tmp_path / "a"), "--threads", "1", "--small-gate-ok"])
    assert r.exit_code == 0, r.output
    assert "int8: FAILED parity" in r.output and "fp32: passed parity" in r.output and "<- fastest" in r.output
    m = load_bundle_manifest(tmp_path / "a")
    assert m["precision"] == "fp32" and m["precision_auto"]["candidates"]["int8"]["reasons"]

    only_fp32 = load_bundle_manifest(export_auto(run_dir, "onnx", tmp_path / "b", val_dir=data, threads=1,
                                                 small_gate_ok=True))
    assert list(only_fp32["precision_auto"]["candidates"]) == ["fp32"]
    with pytest.raises(EdgekdError, match="not available for --target tensorrt"):
        export_auto(run_dir, "tensorrt", tmp_path / "c", calib_dir=data)


def test_precision_auto_keeps_other_files_and_replaces_old_bundles(tmp_path, run_dir, data):
    from edgekd.export.auto import export_auto

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "notes.txt").write_text("mine")
    export_auto(run_dir, "onnx", mixed, val_dir=data, overwrite=True, threads=1, small_gate_ok=True)
    assert (mixed / "notes.txt").read_text() == "mine" and load_bundle_manifest(mixed)["precision"] == "fp32"
    old = export_bundle(run_dir, "onnx", "fp32", tmp_path / "old", val_dir=data)
    (old / "stale.bin").write_bytes(b"x")
    export_auto(run_dir, "onnx", old, val_dir=data, threads=1, small_gate_ok=True)
    assert not (old / "stale.bin").exists() and "precision_auto" in load_bundle_manifest(old)
