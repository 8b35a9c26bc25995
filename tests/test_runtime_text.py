"""On-device text: the pure-Python CLIP tokenizer against open_clip's, `edgekd export-text`, label strings at run
time through a bundle's text encoder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_runtime_support import CLASSES, TINY_TEACHER, make_bundle, teacher

from edgekd import EdgekdError
from edgekd.cli import cli
from edgekd.runtime.bundle import CorruptBundleError
from edgekd.runtime.classifier import OpenVocabClassifier
from edgekd.runtime.text import ClipTokenizer, TextEncoder

TRICKY = [
    "a photo of a cat.", "A Photo Of A DOG!", "it's a café's menu — 3½ dishes", "they'll've  gone\tto\nthe park",
    "  leading and trailing  ", "&amp;lt;html&amp;gt; &quot;quoted&quot;", "数字 123 ４５６ ² ½ Ⅻ", "emoji 🐱🚗 ok",
    "<start_of_text>inside<end_of_text>", "x" * 500, " ".join(["word"] * 100), "ÀÉÎÕÜ straße ǅ", "''s 'S 'LL",
    "", "e-mail: someone@example.com (v2.0)", "Ünïcödé\u200bzero\u00a0width",
]


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("text")
    res = CliRunner().invoke(cli, ["export-text", "--teacher", TINY_TEACHER, "--random-teacher", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "parity min cosine" in res.output
    return out


def test_tokenizer_matches_open_clip(text_dir):
    from open_clip.tokenizer import SimpleTokenizer

    ref = SimpleTokenizer()
    ours = ClipTokenizer(text_dir / "bpe_simple_vocab_16e6.txt.gz")
    np.testing.assert_array_equal(ours(TRICKY), ref(TRICKY).numpy())
    rng = np.random.default_rng(0)
    alphabet = list("abcdefghijklmnopqrstuvwxyz ABCXYZ0123456789'.,!?-_&;:()[]\"\t\n") + \
        ["é", "ß", "ñ", "ø", "ç", "中", "文", "ア", "한", "ά", "я", "½", "²", "٣", "🙂", "\u00a0", "\u2009", "ǅ", "ﬁ"]
    texts = ["".join(rng.choice(alphabet, size=int(rng.integers(0, 40)))) for _ in range(200)]
    np.testing.assert_array_equal(ours(texts), ref(texts).numpy())
    assert ours.vocab_size == ref.vocab_size and ours.eot_token_id == ref.eot_token_id


def test_text_encoder_matches_torch_teacher(text_dir):
    enc = TextEncoder.load(text_dir)
    meta = json.loads((text_dir / "text_encoder.json").read_text())
    assert meta["teacher_id"] == teacher().teacher_id and meta["parity"]["min_cosine"] >= 0.9999
    texts = [t for t in TRICKY if t.strip()]
    got = enc.encode(texts)
    ref = teacher().encode_texts(texts).numpy()
    assert got.shape == (len(texts), 32)
    assert np.min(np.sum(got * ref, axis=1)) > 0.9999
    from edgekd.teacher.labels import build_label_pack

    pack = enc.build_label_pack(["cat", "red car"], ["a photo of a {}.", "a blurry photo of a {}."])
    ref_pack = build_label_pack(teacher(), ["cat", "red car"], ["a photo of a {}.", "a blurry photo of a {}."])
    np.testing.assert_allclose(pack.embeddings, ref_pack.embeddings, atol=1e-5)
    assert pack.teacher_id == ref_pack.teacher_id
    with pytest.raises(ValueError, match="non-empty"):
        enc.encode(["ok", " "])
    with pytest.raises(ValueError, match="'{}'"):
        enc.build_label_pack(["cat"], ["no placeholder"])


def test_bundle_with_text_encoder_takes_label_strings(text_dir, tmp_path, image_folder):
    bundle = make_bundle(tmp_path / "b")
    shutil.copytree(text_dir, bundle / "text")
    clf = OpenVocabClassifier.load(bundle)
    assert clf.text_encoder is not None
    img = next(image_folder.rglob("*.jpg"))
    clf.set_labels(["a red car", "a bicycle", "green"])
    assert clf.class_names == ["a red car", "a bicycle", "green"]
    ref = teacher().encode_texts(["a photo of a a red car.", "a photo of a a bicycle.", "a photo of a green."]).numpy()
    np.testing.assert_allclose(clf.label_set.pack.embeddings, ref, atol=1e-5)
    preds = clf.classify(img, top_k=3)
    emb = clf.embed(img)
    assert [p.label for p in preds] == [clf.class_names[i] for i in np.argsort(-(ref @ emb))]
    clf.set_labels(["a red car"], templates=["{}"])  # raw strings, no template
    np.testing.assert_allclose(clf.label_set.pack.embeddings[0], teacher().encode_texts(["a red car"]).numpy()[0],
                               atol=1e-5)
    # few-shot mixing uses the text encoder for a label that is not in the set yet
    frames = [np.full((20, 20, 3), (200, 10, 10), np.uint8)] * 2
    clf.add_examples("stop sign", frames, text_weight=0.5)
    assert "stop sign" in clf.class_names
    # the default labels of the bundle are still used when labels= is not given
    assert OpenVocabClassifier.load(bundle, text_encoder=text_dir).class_names == CLASSES


def test_text_encoder_of_another_teacher_is_refused(text_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(text_dir, other)
    meta = json.loads((other / "text_encoder.json").read_text())
    meta["teacher_id"] = "ViT-B-32@0000000000000000"
    (other / "text_encoder.json").write_text(json.dumps(meta))
    bundle = make_bundle(tmp_path / "b")
    with pytest.raises(EdgekdError, match="ViT-B-32@0000"):
        OpenVocabClassifier.load(bundle, text_encoder=other)
    with open(other / "text_encoder.onnx", "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(CorruptBundleError, match="sha256 mismatch"):
        TextEncoder.load(other)
    with pytest.raises(EdgekdError, match="export-text"):
        TextEncoder.load(tmp_path)


def test_text_encoder_runs_without_torch(text_dir):
    code = ("import sys\nfrom edgekd.runtime.text import TextEncoder\n"
            f"e = TextEncoder.load({str(text_dir)!r}).encode(['a photo of a cat.'])\n"
            "print(e.shape, [m for m in sys.modules if m.split('.')[0] in ('torch', 'open_clip', 'regex')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(1, 32) []"


def test_export_text_cli_help_and_errors(tmp_path):
    runner = CliRunner()
    assert runner.invoke(cli, ["export-text", "--help"]).exit_code == 0
    res = runner.invoke(cli, ["export-text", "--teacher", "no-such-model", "--random-teacher", "--out", str(tmp_path)])
    assert res.exit_code == 1 and "not an open_clip model" in res.output


# --- compact text encoders (edgekd export-text --precision fp16 | int8) -------------------------------------------

@pytest.fixture(scope="module")
def compact_dirs(tmp_path_factory) -> dict[str, Path]:
    """int8 through the CLI, fp16 through the API (both of the tiny random teacher)."""
    from edgekd.export.text import export_text_encoder

    root = tmp_path_factory.mktemp("compact")
    res = CliRunner().invoke(cli, ["export-text", "--teacher", TINY_TEACHER, "--random-teacher", "--precision",
                                   "int8", "--out", str(root / "int8")])
    assert res.exit_code == 0, res.output
    assert "(int8," in res.output and "gate passed: int8 against the fp32 tower on 480 prompts" in res.output
    export_text_encoder(teacher(), root / "fp16", precision="fp16")
    return {"int8": root / "int8", "fp16": root / "fp16"}


@pytest.mark.parametrize("precision, size_ratio, min_cos", [("fp16", 0.55, 0.9999), ("int8", 0.3, 0.99)])
def test_compact_text_encoder_is_small_loadable_and_close(text_dir, compact_dirs, precision, size_ratio, min_cos):
    """fp16 also covers convert_fp16's repairs: the tiny tower's shared LayerNorm weights (Identity of an initializer)
    made a file onnxruntime refused before inline_initializer_identities."""
    import onnx
    import onnxruntime as ort

    from edgekd.export.text_gate import FLOORS, gate_prompts

    path = compact_dirs[precision]
    onnx.checker.check_model(str(path / "text_encoder.onnx"), full_check=True)
    sess = ort.InferenceSession(str(path / "text_encoder.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in sess.get_inputs()] == [("tokens", "tensor(int64)")]
    assert [(o.name, o.type) for o in sess.get_outputs()] == [("embedding", "tensor(float)")]
    meta = json.loads((path / "text_encoder.json").read_text())
    gate = meta["gate"]
    assert meta["precision"] == gate["precision"] == precision and gate["passed"] is True and meta["compression"]
    assert gate["floors"] == FLOORS[precision] and set(gate["floors"]) <= set(gate["metrics"])
    assert gate["metrics"]["prompts"] == len(gate_prompts()) and gate["validated_on"]["cpu_name"]
    assert all(gate["metrics"][k] >= v for k, v in gate["floors"].items())
    size = (path / "text_encoder.onnx").stat().st_size
    assert size < size_ratio * (text_dir / "text_encoder.onnx").stat().st_size
    fp32, compact = TextEncoder.load(text_dir), TextEncoder.load(path)
    assert (fp32.precision, compact.precision) == ("fp32", precision)
    texts = ["a photo of a forklift.", "a red car", "it's a café's menu — 3½ dishes"]
    cos = np.sum(fp32.encode(texts) * compact.encode(texts), axis=1)
    assert cos.min() > min_cos  # not exact: int8 arithmetic (and CPUs) differ in the last bits
    assert sorted(p.name for p in path.parent.iterdir()) == ["fp16", "int8"]  # no work directory left beside them


def test_fp32_export_records_its_parity_as_the_gate(text_dir):
    meta = json.loads((text_dir / "text_encoder.json").read_text())
    gate = meta["gate"]
    assert meta["precision"] == "fp32" and gate["passed"] is True and gate["reference"] == "the torch teacher"
    assert gate["floors"] == {"prompt_cosine_min": 0.9999} and gate["metrics"]["prompt_cosine_min"] >= 0.9999


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_a_failing_gate_leaves_nothing_behind(text_dir, tmp_path, precision):
    from edgekd.export.text import export_text_encoder

    out = tmp_path / "kept"
    shutil.copytree(text_dir, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(EdgekdError, match=rf"^{precision} text encoder gate failed against the fp32 tower on 480 "
                                          r"prompts \(label_cosine_min .* < 1.01\); export it with --precision fp32$"):
        export_text_encoder(teacher(), out, precision=precision, floors={"label_cosine_min": 1.01})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the previous fp32 export is untouched
    with pytest.raises(EdgekdError, match="gate failed"):
        export_text_encoder(teacher(), tmp_path / "new", precision=precision, floors={"top1_agreement": 1.5})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]  # no "new", no work directory
    with pytest.raises(EdgekdError, match="--precision 'fp8'"):
        export_text_encoder(teacher(), tmp_path / "new", precision="fp8")
    with pytest.raises(EdgekdError, match="floors apply to --precision fp16 / int8"):
        export_text_encoder(teacher(), tmp_path / "new", floors={"label_cosine_min": 0.5})
    with pytest.raises(EdgekdError, match="floors label_cos: not a gate metric; use prompt_cosine_mean, "):
        export_text_encoder(teacher(), tmp_path / "new", precision=precision, floors={"label_cos": 0.5})
    assert not (tmp_path / "new").exists()


def _with_gate(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    meta = json.loads((dst / "text_encoder.json").read_text())
    edit(meta)
    (dst / "text_encoder.json").write_text(json.dumps(meta))
    return dst


def test_runtime_refuses_a_text_encoder_whose_gate_failed(text_dir, compact_dirs, tmp_path, caplog):
    from edgekd.runtime.bundle import UngatedBundleError

    bad = _with_gate(compact_dirs["int8"], tmp_path / "bad", lambda m: m["gate"].update(passed=False))
    with pytest.raises(UngatedBundleError, match=r"this int8 text encoder did not pass its gate \(int8 against the "
                                                 r"fp32 tower on 480 prompts: .*\); re-export .*--precision fp32.*"
                                                 "allow_ungated=True"):
        TextEncoder.load(bad)
    assert TextEncoder.load(bad, allow_ungated=True).precision == "int8"
    assert "did not pass its gate" in caplog.text
    none = _with_gate(compact_dirs["fp16"], tmp_path / "none", lambda m: m.pop("gate"))
    with pytest.raises(UngatedBundleError, match="this fp16 text encoder has no gate verdict"):
        TextEncoder.load(none)
    # text encoders exported before --precision had neither `precision` nor `gate`: they still load, as fp32
    old = _with_gate(text_dir, tmp_path / "old", lambda m: (m.pop("gate"), m.pop("precision")))
    assert TextEncoder.load(old).precision == "fp32"


def test_export_text_rejects_an_unknown_precision(tmp_path):
    res = CliRunner().invoke(cli, ["export-text", "--teacher", TINY_TEACHER, "--random-teacher", "--precision",
                                   "int4", "--out", str(tmp_path / "t")])
    assert res.exit_code == 2 and "'int4' is not one of 'fp32', 'fp16', 'int8'" in res.output
    assert not (tmp_path / "t").exists()


def test_retarget_casts_repairs_the_converters_cast_types():
    """onnxconverter-common retypes a converted Cast(to=FLOAT)'s output fp16 and leaves `to` (its issue #320):
    onnxruntime refuses that file; retarget_casts makes the Cast produce its declared type."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from edgekd.export.onnx import retarget_casts

    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT, name="bad"),
         helper.make_node("Cast", ["h"], ["y"], to=TensorProto.FLOAT, name="out")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        value_info=[helper.make_tensor_value_info("h", TensorProto.FLOAT16, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(Exception, match="does not match expected type"):
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert retarget_casts(model) == 1 and retarget_casts(model) == 0
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(sess.run(None, {"x": np.array([1.5, -2], np.float16)})[0], [1.5, -2])
