"""open_clip compatibility: the declared floor is a version whose create_model() takes what load_teacher passes."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgekd import EdgekdError
from edgekd.teacher.clip import OPEN_CLIP_MIN, check_open_clip_version

ROOT = Path(__file__).resolve().parents[1]


def _declared_floor() -> tuple[int, ...]:
    text = (ROOT / "pyproject.toml").read_text()
    m = re.search(r'"open_clip_torch>=([0-9.]+)"', text)
    assert m, "pyproject.toml does not declare open_clip_torch>=X"
    return tuple(int(p) for p in m.group(1).split("."))[:2]


def test_pyproject_floor_is_the_first_version_with_the_create_model_arguments():
    # load_weights= and weights_only= first exist in open_clip 3.0.0 (2.32.0: load_weights_only=); see clip.py
    assert _declared_floor() == OPEN_CLIP_MIN == (3, 0)


def test_installed_create_model_accepts_the_arguments_load_teacher_passes():
    import open_clip

    params = inspect.signature(open_clip.create_model).parameters
    assert {"pretrained", "load_weights", "weights_only"} <= set(params)


@pytest.mark.parametrize("version", ["2.24.0", "2.32.0", "2.32.0.dev1"])
def test_older_open_clip_is_refused_with_the_fix(version):
    with pytest.raises(EdgekdError, match=r"open_clip_torch .* too old .*pip install 'open_clip_torch>=3.0'"):
        check_open_clip_version(version)


@pytest.mark.parametrize("version", ["3.0.0", "3.3.0", "3.10.1", "4.0.0rc1"])
def test_supported_open_clip_passes(version):
    check_open_clip_version(version)


def test_load_teacher_on_old_open_clip_fails_with_an_error_not_a_typeerror(monkeypatch):
    import open_clip

    from edgekd.teacher.clip import load_teacher

    monkeypatch.setattr(open_clip, "__version__", "2.32.0")
    with pytest.raises(EdgekdError, match="too old"):
        load_teacher("edgekd-test-tiny", random_init=True, device="cpu")


@pytest.mark.skipif(not os.environ.get("EDGEKD_OPEN_CLIP_FLOOR"),
                    reason="set EDGEKD_OPEN_CLIP_FLOOR to a folder holding the floor open_clip "
                           "(pip install --no-deps --target DIR open_clip_torch==3.0.0)")
def test_teacher_loads_with_the_floor_open_clip(tmp_path):
    code = ("import open_clip, torch; from edgekd.teacher.clip import load_teacher; "
            "t = load_teacher('edgekd-test-tiny', random_init=True, device='cpu'); "
            f"torch.save(t.model.state_dict(), {str(tmp_path / 'w.pt')!r}); "
            f"u = load_teacher('edgekd-test-tiny', pretrained=None, weights={str(tmp_path / 'w.pt')!r}, "
            "device='cpu'); assert u.teacher_id == t.teacher_id; print(open_clip.__version__)")
    env = {**os.environ, "PYTHONPATH": os.environ["EDGEKD_OPEN_CLIP_FLOOR"]}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().split(".")[:2] == [str(v) for v in OPEN_CLIP_MIN]
