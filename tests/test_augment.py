"""Augmentation on top of cached views: crops stay inside the cached box, the teacher target and view draw are
untouched, everything is seeded, and a run's augmentation is part of what --resume checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY_STUDENT
from test_distill import IMG, build_tiny_cache, cfg_for

from edgekd import EdgekdError
from edgekd.distill.augment import Augment
from edgekd.distill.loop import train

VIEW = (10.0, 20.0, 110.0, 95.0, 1.0)  # a 100 x 75 box, flipped


@pytest.fixture(scope="module")
def cache(image_folder, tiny_teacher, tmp_path_factory):
    return build_tiny_cache(image_folder, tmp_path_factory.mktemp("aug"), tiny_teacher)


def test_inner_view_stays_inside_the_box_and_keeps_most_of_it():
    aug = Augment(crop=0.6)
    x0, y0, x1, y1, _ = VIEW
    areas = []
    for seed in range(200):
        v = aug.inner_view(np.random.default_rng(seed), VIEW)
        assert x0 <= v[0] < v[2] <= x1 + 1e-9 and y0 <= v[1] < v[3] <= y1 + 1e-9
        assert v[4] == VIEW[4]  # the teacher's view was flipped: so is the student's crop of it
        areas.append((v[2] - v[0]) * (v[3] - v[1]) / ((x1 - x0) * (y1 - y0)))
        ratio = (v[2] - v[0]) / (v[3] - v[1])
        assert 0.9 * 100 / 75 - 1e-9 <= ratio <= 100 / 75 / 0.9 + 1e-9
    assert min(areas) >= 0.6 - 1e-9 and max(areas) <= 1 + 1e-9 and np.ptp(areas) > 0.2
    assert aug.inner_view(np.random.default_rng(3), VIEW) == aug.inner_view(np.random.default_rng(3), VIEW)


def test_off_draws_nothing_and_changes_nothing():
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    pixels = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert Augment().inner_view(rng, VIEW) == VIEW and Augment().colour(rng, pixels) is pixels
    assert rng.bit_generator.state == state and not Augment().enabled and Augment(jitter=0.1).enabled


def test_colour_jitter_is_seeded_and_keeps_grey_grey():
    aug = Augment(jitter=0.4)
    pixels = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    a = aug.colour(np.random.default_rng(5), pixels)
    assert a.dtype == np.uint8 and a.shape == pixels.shape and not np.array_equal(a, pixels)
    assert np.array_equal(a, aug.colour(np.random.default_rng(5), pixels))
    assert not np.array_equal(a, aug.colour(np.random.default_rng(6), pixels))
    grey = np.repeat(np.arange(64, dtype=np.uint8).reshape(8, 8, 1), 3, axis=2)
    g = aug.colour(np.random.default_rng(5), grey)
    assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 1], g[..., 2])


@pytest.mark.parametrize("bad", [dict(crop=0.0), dict(crop=1.5), dict(jitter=-0.1), dict(jitter=1.0)])
def test_bad_settings_raise(bad):
    with pytest.raises(ValueError):
        Augment(**bad)


def test_dataset_augments_the_student_only(cache, tiny_teacher):
    from edgekd.data.images import load_rgb
    from edgekd.distill.data import CachedViewDataset
    from edgekd.teacher.cache import TeacherCache

    c = TeacherCache.open(cache)
    pp = tiny_teacher.preprocess
    plain = CachedViewDataset(cache, pp, seed=0)
    off = CachedViewDataset(cache, pp, seed=0, augment=Augment())
    aug = Augment(crop=0.5, jitter=0.3)
    on = CachedViewDataset(cache, pp, seed=0, augment=aug)
    changed = 0
    for row in range(6):
        p, o, a = plain[(row, 2)], off[(row, 2)], on[(row, 2)]
        assert torch.equal(p["pixels"], o["pixels"])  # off: bit for bit the unaugmented data
        assert int(a["view"]) == int(p["view"]) and torch.equal(a["teacher"], p["teacher"])  # same view, same target
        assert torch.equal(a["pixels"], on[(row, 2)]["pixels"])  # seeded by (seed, epoch, row)
        # exactly the documented draw: view, then the inner crop, then the jitter, from rng([seed, epoch, row])
        rng = np.random.default_rng([0, 2, row])
        k = int(rng.integers(c.num_views))
        expect = aug.colour(rng, pp.render(load_rgb(c.paths[row]), aug.inner_view(rng, tuple(c.views[row, k]))))
        assert np.allclose(a["pixels"].numpy(), pp.normalize(expect))
        changed += not torch.equal(a["pixels"], p["pixels"])
    assert changed == 6


def test_augmented_run_trains_and_resume_checks_it(cache, tmp_path):
    run = tmp_path / "run"
    res = train(cfg_for(cache, run, max_steps=2, aug_crop=0.6, aug_jitter=0.2), progress=False)
    assert res.step == 2 and np.isfinite(res.last["loss"])
    with pytest.raises(EdgekdError, match="aug_crop"):
        train(cfg_for(cache, run, max_steps=3, aug_jitter=0.2), resume=True, progress=False)
    res = train(cfg_for(cache, run, max_steps=3, aug_crop=0.6, aug_jitter=0.2), resume=True, progress=False)
    assert res.step == 3


def test_runs_saved_before_augmentation_existed_still_resume(cache, tmp_path):
    run = tmp_path / "old"
    train(cfg_for(cache, run, max_steps=1), progress=False)
    state = torch.load(run / "train_state.pt", weights_only=False)
    config = json.loads(state["config"])
    del config["aug_crop"], config["aug_jitter"]
    state["config"] = json.dumps(config)
    torch.save(state, run / "train_state.pt")
    assert train(cfg_for(cache, run, max_steps=2), resume=True, progress=False).step == 2


def test_cli_options(cache, tmp_path):
    from edgekd.cli import cli

    base = ["distill", "--cache", str(cache), "--student", TINY_STUDENT, "--img-size", str(IMG), "--batch-size", "6",
            "--workers", "0", "--device", "cpu", "--max-steps", "1", "--no-progress"]
    r = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "a"), "--aug-crop", "0.7", "--aug-jitter", "0.1"])
    assert r.exit_code == 0, r.output
    import yaml

    saved = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert saved["aug_crop"] == 0.7 and saved["aug_jitter"] == 0.1
    r = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "b"), "--aug-crop", "0"])
    assert r.exit_code == 2 and "--aug-crop" in r.output
