"""`edgekd plan` (issue #17): the budget arithmetic of choose_plan, the balanced subset, and the command end to end
with the tiny teacher and the tiny timm student."""

from __future__ import annotations

import json
import shlex
from collections import Counter

import pytest
from click.testing import CliRunner
from conftest import TINY_STUDENT, TINY_TEACHER, make_image

from edgekd import EdgekdError
from edgekd.cli import cli
from edgekd.data.index import build_index
from edgekd.plan import PlanRules, balanced_counts, camera_resize_method, choose_plan

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
PER_CLASS = 40  # 120 images: more than PlanRules.min_images, so a budget can take a subset


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan-images")
    for ci, (name, rgb) in enumerate(COLORS.items()):
        for i in range(PER_CLASS):
            make_image(root / name / f"{i:03d}.png", rgb, size=(24, 24), seed=ci * 100 + i)
    return root


# ------------------------------------------------------------------------------------------------- choose_plan


# fixed here, so the arithmetic does not follow the defaults
RULES = PlanRules(min_epochs=20, max_epochs=60, margin=0.1)


def test_budget_arithmetic_is_exact():
    # 540 s usable; one image = 1 view / 10 per s + 20 epochs / 100 per s = 0.3 s -> 1800 images, 900 per class
    p = choose_plan({"a": 1000, "b": 1000}, minutes=10, teacher_ips=10, train_ips=100, rules=RULES)
    assert (p.images, p.views, p.epochs, p.img_size) == (1800, 1, 20, 128)
    assert p.per_class == {"a": 900, "b": 900} and p.subset
    assert (p.est_cache_s, p.est_train_s, p.usable_s) == (180.0, 360.0, 540.0)
    assert p.est_cache_s + p.est_train_s <= p.usable_s
    assert any("900 sorted images of each of 2 classes" in r for r in p.reasons)


def test_cpu_data_loading_is_paid_per_view_and_per_epoch():
    # + 0.05 s decode/render: 1 view x (0.1 + 0.05) + 20 epochs x (0.01 + 0.05) = 1.35 s -> 540 / 1.35 = 400 images
    p = choose_plan({"a": 1000, "b": 1000}, minutes=10, teacher_ips=10, train_ips=100, rules=RULES, loader_s=0.05)
    assert (p.images, p.epochs, p.est_cache_s, p.est_train_s) == (400, 20, 60.0, 480.0)
    assert any("0.05 s on the same cores" in r for r in p.reasons)


def test_small_dataset_buys_epochs_up_to_max():
    rules = PlanRules(margin=0.0, min_epochs=20, max_epochs=60)
    p = choose_plan({"a": 50, "b": 50}, minutes=0.75, teacher_ips=10, train_ips=100, rules=rules)
    # 45 s: 100 images cost 10 s to cache, 1 s per epoch -> 35 epochs
    assert (p.images, p.epochs, p.subset) == (100, 35, False)
    p = choose_plan({"a": 50, "b": 50}, minutes=10, teacher_ips=10, train_ips=100, rules=RULES)
    assert (p.images, p.epochs) == (100, 60)
    assert any("capped at max_epochs 60" in r for r in p.reasons)


def test_too_small_budget_names_the_minimum():
    counts = {f"c{i}": 100 for i in range(10)}  # minimum plan: 10 per class = 100 images x 0.3 s = 30 s usable
    with pytest.raises(EdgekdError, match=r"needs 0\.6 minutes; give --minutes 0\.6 or more"):
        choose_plan(counts, minutes=0.5, teacher_ips=10, train_ips=100, rules=RULES)
    p = choose_plan(counts, minutes=0.6, teacher_ips=10, train_ips=100)  # the minimum it named is enough
    assert p.images >= 100 and p.epochs >= PlanRules().min_epochs


def test_balanced_subset_and_unlabeled():
    assert balanced_counts({"a": 3, "b": 10, "c": 10}, 15) == {"a": 3, "b": 6, "c": 6}
    assert balanced_counts({"a": 3, "b": 10, "c": 10}, 16) == {"a": 3, "b": 6, "c": 6}
    p = choose_plan({"a": 3, "b": 1000, "c": 1000}, minutes=1, teacher_ips=10, train_ips=100, rules=RULES)  # 180 fit
    assert p.per_class == {"a": 3, "b": 88, "c": 88}
    p = choose_plan(5000, minutes=1, teacher_ips=10, train_ips=100, rules=RULES)
    assert (p.images, p.per_class) == (180, None)


# ------------------------------------------------------------------------------------------------- CLI


def _tiny_args(folder, out):
    return ["plan", "--data", str(folder), "--out", str(out), "--teacher", TINY_TEACHER, "--random-teacher",
            "--device", "cpu", "--student", TINY_STUDENT, "--img-size", "32", "--batch-size", "8"]


def test_plan_cli_measures_and_plans_the_whole_dataset(folder, tmp_path):
    r = CliRunner().invoke(cli, [*_tiny_args(folder, tmp_path / "p"), "--minutes", "30"])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "p" / "plan.json").read_text())
    m = doc["measurements"]
    assert m["teacher"]["images"] == 16 and m["teacher"]["images_per_s"] > 0
    assert m["student"]["images"] == 3 * 8 and m["student"]["images_per_s"] > 0
    assert "measured teacher edgekd-test-tiny on cpu" in r.output and "measured student test_vit at 32 px" in r.output
    assert doc["plan"]["images"] == 3 * PER_CLASS and not doc["plan"]["subset"] and doc["train_list"] is None
    assert not (tmp_path / "p" / "train.csv").exists()
    assert doc["host"]["cpu"]
    # on a CPU the measured decode + render is part of the cost (the loader shares the cores)
    assert doc["speeds"]["loader_s"] == m["teacher"]["detail"]["decode_render_s_per_image"] > 0
    epochs = doc["plan"]["epochs"]
    assert PlanRules().min_epochs <= epochs <= PlanRules().max_epochs
    cache, run = tmp_path / "p" / "cache", tmp_path / "p" / "run"
    # --resize-method auto: the camera fast path where OpenCV is installed, else distill's default
    resize = f"--resize-method {camera_resize_method()} " if camera_resize_method() else ""
    assert doc["commands"] == [
        f"edgekd cache --data {folder} --out {cache} --views 1 --teacher {TINY_TEACHER} --random-teacher --device cpu",
        f"edgekd distill --cache {cache} --student {TINY_STUDENT} --img-size 32 --epochs {epochs} --batch-size 8 "
        f"{resize}--out {run} --device cpu"]
    for c in doc["commands"]:
        assert f"  {c}" in r.output
    assert (tmp_path / "p" / "commands.sh").read_text().splitlines()[-2:] == doc["commands"]


def test_plan_cli_subset_list_is_balanced(folder, tmp_path):
    # given speeds: 0.22 min -> 11.22 s usable (15% held back) at 0.11 s/image (10 epochs) -> 102 images = the first
    # 34 of each class
    out = tmp_path / "p"
    r = CliRunner().invoke(cli, [*_tiny_args(folder, out), "--minutes", "0.22", "--teacher-ips", "100",
                                 "--train-ips", "100", "--cache-dir", "C", "--run-dir", "R", "--resize-method",
                                 "cv2-area-linear"])
    assert r.exit_code == 0, r.output
    assert "measured" not in r.output
    doc = json.loads((out / "plan.json").read_text())
    assert doc["plan"]["per_class"] == {"blue": 34, "green": 34, "red": 34} and doc["plan"]["epochs"] == 10
    assert doc["commands"][0] == (f"edgekd cache --data {shlex.quote(str(out / 'train.csv'))} --out C --views 1 "
                                  f"--teacher {TINY_TEACHER} --random-teacher --device cpu")
    assert doc["commands"][1].endswith("--epochs 10 --batch-size 8 --resize-method cv2-area-linear --out R "
                                       "--device cpu")
    idx = build_index(out / "train.csv")
    assert len(idx) == 102 and idx.classes == ["blue", "green", "red"]
    assert Counter(idx.labels) == {0: 34, 1: 34, 2: 34}
    assert sorted((idx.root / e.path).resolve() for e in idx.entries) == sorted(
        (folder / c / f"{i:03d}.png").resolve() for c in COLORS for i in range(34))
    # a later plan that takes the whole dataset removes the stale list
    r = CliRunner().invoke(cli, [*_tiny_args(folder, out), "--minutes", "5", "--teacher-ips", "100",
                                 "--train-ips", "100"])
    assert r.exit_code == 0, r.output
    assert not (out / "train.csv").exists()


@pytest.mark.parametrize("extra, code, msg", [
    (["--minutes", "0"], 2, "--minutes"),
    (["--minutes", "0.1", "--teacher-ips", "100", "--train-ips", "100"], 1, "give --minutes 0.3 or more"),
    (["--minutes", "9", "--teacher-ips", "100", "--train-ips", "100", "--batch-size", "200"], 1,
     "lower --batch-size"),
    (["--minutes", "9", "--teacher-ips", "100", "--train-ips", "100", "--resize-method", "fast"], 2,
     "use auto or one of"),
])
def test_plan_cli_bad_input(folder, tmp_path, extra, code, msg):
    args = _tiny_args(folder, tmp_path / "p")
    if "--batch-size" in extra:
        args = args[:-2]
    r = CliRunner().invoke(cli, [*args, *extra])
    assert r.exit_code == code, r.output
    assert msg in r.output
    r = CliRunner().invoke(cli, ["plan", "--data", str(tmp_path / "missing"), "--minutes", "5", "--out", "p"])
    assert r.exit_code == 1 and "no such file or folder" in r.output


def test_plan_help():
    r = CliRunner().invoke(cli, ["plan", "--help"])
    assert r.exit_code == 0 and "--minutes" in r.output and "commands.sh" in r.output
