"""`train` is exactly reproducible: the same seed gives the same run, and a run stopped and resumed (mid-epoch or at
an epoch's end, with another number of data workers) ends exactly as the uninterrupted one.

"Exactly" is every byte that the run decides: weights, optimizer/EMA/RNG state, config files, label pack and
metrics.csv rows (but their wall-clock images_per_s). Two files are compared by content, not by their bytes:
model.safetensors, whose header metadata safetensors writes in hash-map order (it varies between processes), and
train_state.pt, whose zip members are named after the atomic write's random temp file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from test_distill import build_tiny_cache, cfg_for

from edgekd.distill.loop import train


@pytest.fixture(scope="module")
def cache(image_folder, tiny_teacher, tmp_path_factory) -> Path:
    return build_tiny_cache(image_folder, tmp_path_factory.mktemp("bitexact"), tiny_teacher)


def _metrics_rows(run: Path) -> list[list[str]]:
    rows = [r.split(",") for r in (run / "metrics.csv").read_text().splitlines()]
    wall = rows[0].index("images_per_s")
    return [r[:wall] + r[wall + 1:] for r in rows]


def _assert_same_state(a: Any, b: Any, where: str = "") -> None:
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _assert_same_state(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{where}/{i}")
    else:
        assert a == b, where


def assert_same_run(a: Path, b: Path, allowed: tuple[str, ...] = ()) -> None:
    """Runs `a` and `b` hold the same files with the same content; config keys in `allowed` may differ."""
    from safetensors import safe_open

    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    with safe_open(str(a / "model.safetensors"), "pt") as fa, safe_open(str(b / "model.safetensors"), "pt") as fb:
        assert fa.metadata() == fb.metadata() and list(fa.keys()) == list(fb.keys())
        for k in fa.keys():
            ta, tb = fa.get_tensor(k), fb.get_tensor(k)
            assert ta.dtype == tb.dtype and torch.equal(ta, tb), k
    sa = torch.load(a / "train_state.pt", weights_only=True)
    sb = torch.load(b / "train_state.pt", weights_only=True)
    ca, cb = json.loads(sa.pop("config")), json.loads(sb.pop("config"))
    ya, yb = yaml.safe_load((a / "config.yaml").read_text()), yaml.safe_load((b / "config.yaml").read_text())
    for k in allowed:
        ca.pop(k), cb.pop(k), ya.pop(k), yb.pop(k)
    assert ca == cb and ya == yb
    _assert_same_state(sa, sb)
    for name in ("config.json", "labels.npz"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert _metrics_rows(a) == _metrics_rows(b)


def test_same_seed_same_run(cache, tmp_path):
    """Accumulation, clipping, EMA, augmentation and windowed metrics rows: the same seed gives the same bytes."""
    kw = dict(weights={"cos": 1.0, "rel": 1.0, "cls": 1.0, "kl": 1.0}, epochs=2, batch_size=3, accum=2, ema=True,
              ema_decay=0.9, grad_clip=0.5, aug_crop=0.6, aug_jitter=0.3, log_every=2)
    runs = []
    for name in ("first", "second"):
        parts: list[tuple[int, dict[str, float]]] = []
        res = train(cfg_for(cache, tmp_path / "run", **kw), progress=False,
                    on_step=lambda step, p, parts=parts: parts.append((step, dict(p))) and False)
        (tmp_path / "run").rename(tmp_path / name)  # same --out for both: config.yaml records it
        runs.append((res.step, res.epoch, res.interrupted, res.last, parts))
    assert runs[0] == runs[1] and runs[0][0] == 6 and len(runs[0][4]) == 6
    assert_same_run(tmp_path / "first", tmp_path / "second")
    assert (tmp_path / "first" / "config.yaml").read_bytes() == (tmp_path / "second" / "config.yaml").read_bytes()


@pytest.mark.parametrize(("stop_at", "workers_b"), [(4, 0), (4, 1), (3, 0)])
def test_resume_is_bit_for_bit(cache, tmp_path, stop_at, workers_b):
    """Stopped after step 4 (mid-epoch 1) or step 3 (the end of epoch 0), as Ctrl-C would, then resumed with
    another number of workers: the same run as one without a stop."""
    kw = dict(epochs=2, ema=True, ema_decay=0.9, accum=1, log_every=1)  # 18 images / 6 = 3 steps per epoch
    full = train(cfg_for(cache, tmp_path / "a", **kw), progress=False)
    res = train(cfg_for(cache, tmp_path / "b", **kw), progress=False, on_step=lambda step, _: step == stop_at)
    assert res.interrupted and res.step == stop_at
    state = torch.load(tmp_path / "b" / "train_state.pt", weights_only=True)
    at_end = stop_at == 3  # the next step starts epoch 1 at its first batch
    assert (state["step"], state["epoch"], state["micro_in_epoch"]) == (stop_at, 1, 0 if at_end else 1)
    assert json.loads((tmp_path / "b" / "config.json").read_text())["edgekd"]["step"] == stop_at
    res = train(cfg_for(cache, tmp_path / "b", **{**kw, "workers": workers_b}), resume=True, progress=False)
    assert (full.step, full.epoch, full.interrupted) == (6, 2, False)
    assert (res.step, res.epoch, res.interrupted, res.last) == (full.step, full.epoch, False, full.last)
    assert len(_metrics_rows(tmp_path / "a")) == 7  # a header and one row per step: none duplicated after resume
    assert_same_run(tmp_path / "a", tmp_path / "b", allowed=("out", "workers"))
