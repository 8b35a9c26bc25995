"""Runs tests/gst_element_cases.py (the `edgekdclassify` element's tests) in a pytest process of its own.

Why a separate process: GStreamer's threads, its registry and its global state stay out of the main test session,
and a native crash in the element fails this one test instead of killing the whole run. (Import orders of numpy,
torch, GStreamer and OpenVINO in one process are covered by tests/test_unwind.py.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _gst_error() -> str | None:
    code = "from edgekd.gst import gst_error; print(gst_error() or '')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=HERE.parent)
    return (proc.stdout.strip() or None) if proc.returncode == 0 else f"checking GStreamer failed: {proc.stderr[-300:]}"


def test_edgekdclassify_element_in_its_own_process(tmp_path):
    reason = _gst_error()
    if reason:
        pytest.skip(f"GStreamer not usable here: {reason}")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout=500", "-rfs",
           "--basetemp", str(tmp_path / "t"), str(HERE / "gst_element_cases.py"), str(HERE / "gst_region_cases.py")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=560, cwd=HERE.parent,
                          env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
    assert proc.returncode == 0 and " passed" in proc.stdout, tail
    print(tail)  # the cases' own summary (skips with their reasons) in -rs / -s output
