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


# --- int8 text encoders (edgekd export-text --precision int8) ------------------------------------------------------

@pytest.fixture(scope="module")
def int8_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("text8") / "text"
    res = CliRunner().invoke(cli, ["export-text", "--teacher", TINY_TEACHER, "--random-teacher", "--precision",
                                   "int8", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "(int8," in res.output and "gate against fp32 passed on 1920 prompts" in res.output
    return out


def test_int8_text_encoder_is_small_loadable_and_close(text_dir, int8_dir):
    import onnx

    onnx.checker.check_model(str(int8_dir / "text_encoder.onnx"), full_check=True)
    meta = json.loads((int8_dir / "text_encoder.json").read_text())
    assert meta["precision"] == "int8" and meta["gate"]["passed"] is True
    gate = meta["gate"]
    assert set(gate["floors"]) <= set(gate["metrics"]) and gate["metrics"]["prompts"] == 1920 and gate["cpu"]
    assert all(gate["metrics"][k] >= v for k, v in gate["floors"].items())
    assert (int8_dir / "text_encoder.onnx").stat().st_size < 0.4 * (text_dir / "text_encoder.onnx").stat().st_size
    fp32, int8 = TextEncoder.load(text_dir), TextEncoder.load(int8_dir)
    assert (fp32.precision, int8.precision) == ("fp32", "int8")
    texts = ["a photo of a forklift.", "a red car", "it's a café's menu — 3½ dishes"]
    cos = np.sum(fp32.encode(texts) * int8.encode(texts), axis=1)
    assert cos.min() > 0.99  # not exact: int8 arithmetic (and CPUs) differ in the last bits
    assert sorted(list(int8_dir.parent.iterdir())) == [int8_dir]  # no work directory left beside it


def test_a_failing_gate_leaves_nothing_behind(text_dir, tmp_path):
    from edgekd.export.text import export_text_encoder

    out = tmp_path / "kept"
    shutil.copytree(text_dir, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(EdgekdError, match="int8 text encoder gate failed.*label_cosine_min.*--precision fp32"):
        export_text_encoder(teacher(), out, precision="int8", floors={"label_cosine_min": 1.01})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the previous fp32 export is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]
    with pytest.raises(EdgekdError, match="--precision 'fp16'"):
        export_text_encoder(teacher(), tmp_path / "new", precision="fp16")
    assert not (tmp_path / "new").exists()


def test_runtime_refuses_a_text_encoder_whose_gate_failed(int8_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(int8_dir, bad)
    meta = json.loads((bad / "text_encoder.json").read_text())
    meta["gate"]["passed"] = False
    (bad / "text_encoder.json").write_text(json.dumps(meta))
    with pytest.raises(EdgekdError, match="did not pass its gate.*--precision fp32"):
        TextEncoder.load(bad)


def test_export_text_rejects_an_unknown_precision(tmp_path):
    res = CliRunner().invoke(cli, ["export-text", "--teacher", TINY_TEACHER, "--random-teacher", "--precision",
                                   "int4", "--out", str(tmp_path / "t")])
    assert res.exit_code == 2 and "'int4' is not one of 'fp32', 'int8'" in res.output
