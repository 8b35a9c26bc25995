"""Label packs: template ensembles averaged + normalised (open_clip style), descriptions by name, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch.nn.functional as F
from click.testing import CliRunner
from conftest import TINY_TEACHER

from edgekd import EdgekdError
from edgekd.cli import cli
from edgekd.labelpack import load_label_pack
from edgekd.teacher.labels import build_label_pack, read_class_names
from edgekd.teacher.prompts import build_prompts, builtin_templates, load_templates


def test_builtin_templates_come_from_open_clip():
    t = builtin_templates()
    assert len(t["default"]) == 80 and len(t["simple"]) == 7 and t["single"] == ["a photo of a {}."]
    assert all(x.count("{}") == 1 for x in t["default"])
    assert "a photo of a {}." in t["default"]


def test_label_pack_is_mean_of_normalised_prompt_embeddings(tiny_teacher):
    pack = build_label_pack(tiny_teacher, ["golden_retriever", "cat"], "simple")
    assert pack.prompts["golden_retriever"][0] == "itap of a golden retriever."  # underscores become spaces
    for i, c in enumerate(pack.class_names):
        emb = tiny_teacher.encode_texts(pack.prompts[c])  # [7, D] unit rows
        want = F.normalize(emb.mean(0), dim=-1).numpy()
        np.testing.assert_allclose(pack.embeddings[i], want, atol=1e-5)
        assert not np.allclose(pack.embeddings[i], emb[0].numpy(), atol=1e-3)  # really an average
    assert np.allclose(np.linalg.norm(pack.embeddings, axis=1), 1, atol=1e-5)
    assert pack.meta["teacher_id"] == tiny_teacher.teacher_id and pack.meta["templates"] == "simple"
    assert pack.logit_scale == pytest.approx(tiny_teacher.logit_scale)


def test_descriptions_matched_by_name_not_order(tiny_teacher, tmp_path):
    f = tmp_path / "desc.json"
    f.write_text(json.dumps({"dog": ["barks", "four legs"], "cat": "whiskers"}))  # reverse order of classes
    pack = build_label_pack(tiny_teacher, ["cat", "dog"], "single", f)
    assert pack.prompts["cat"] == ["a photo of a cat.", "a photo of cat . whiskers"]
    assert pack.prompts["dog"][1:] == ["a photo of dog . barks", "a photo of dog . four legs"]
    assert pack.meta["descriptions_file"] == str(f) and pack.meta["num_descriptions"] == 3
    want = F.normalize(tiny_teacher.encode_texts(pack.prompts["dog"]).mean(0), dim=-1).numpy()
    np.testing.assert_allclose(pack.embeddings[1], want, atol=1e-5)


def test_templates_file_and_errors(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("# comment\na {} in the wild\n\na sketch of {}\n")
    assert load_templates(f) == (["a {} in the wild", "a sketch of {}"], str(f))
    assert build_prompts(["x"], ["a {}"], {"x": ["d"]}) == {"x": ["a x", "a photo of x . d"]}
    f.write_text("no placeholder\n")
    with pytest.raises(EdgekdError, match="exactly one"):
        load_templates(f)
    with pytest.raises(EdgekdError, match="built-in"):
        load_templates(tmp_path / "missing.txt")


def test_read_class_names(tmp_path, image_folder):
    assert read_class_names("a, b ,c") == ["a", "b", "c"]
    (tmp_path / "c.txt").write_text("red car\n\nblue car\n")
    assert read_class_names(classes_file=tmp_path / "c.txt") == ["red car", "blue car"]
    assert read_class_names(data=image_folder) == ["blue", "green", "red"]
    with pytest.raises(EdgekdError, match="exactly one"):
        read_class_names("a", data=image_folder)


def test_duplicate_classes_refused(tiny_teacher):
    with pytest.raises(EdgekdError, match="duplicate"):
        build_label_pack(tiny_teacher, ["a", "b", "a"], "single")


def test_labels_cli(tmp_path, tiny_teacher):
    out = tmp_path / "pack.npz"
    r = CliRunner().invoke(cli, ["labels", "--teacher", TINY_TEACHER, "--random-teacher", "--device", "cpu",
                                 "--classes", "cat,dog", "--templates", "simple", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "2 classes, 14 prompts" in r.output
    pack = load_label_pack(out)
    assert pack.class_names == ["cat", "dog"] and pack.teacher_id == tiny_teacher.teacher_id
    direct = build_label_pack(tiny_teacher, ["cat", "dog"], "simple")
    np.testing.assert_allclose(pack.embeddings, direct.embeddings, atol=1e-6)
    r = CliRunner().invoke(cli, ["labels", "--teacher", TINY_TEACHER, "--random-teacher", "--out", str(out)])
    assert r.exit_code == 1 and "exactly one of --classes" in r.output
