"""The base install is the torch-free runtime: commands that need torch say what to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def _run_without_torch(code: str) -> subprocess.CompletedProcess:
    blocked = ("torch", "torchvision", "timm", "open_clip", "safetensors")
    prelude = f"import sys\nfor m in {blocked!r}:\n    sys.modules[m] = None\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120)


def test_training_command_without_torch_names_the_extra(tmp_path):
    res = _run_without_torch(f"""
        from edgekd.cli import main
        main(['labels', '--teacher', 'edgekd-test-tiny', '--random-teacher', '--classes', 'a,b',
              '--out', r'{tmp_path / "l.npz"}'])
    """)
    assert res.returncode == 1, res.stderr
    assert "pip install 'edgekd[torch]'" in res.stderr and "Traceback" not in res.stderr


def test_help_and_info_work_without_torch():
    res = _run_without_torch("""
        from edgekd.cli import main
        main(['--help'])
    """)
    assert res.returncode == 0 and "distill" in res.stdout, res.stderr


def test_pyproject_keeps_torch_out_of_the_base_install():
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"])
    assert "torch" not in base and "timm" not in base and "open_clip" not in base
    assert any(d.startswith("torch") for d in project["optional-dependencies"]["torch"])
    assert "onnxruntime" in " ".join(project["optional-dependencies"]["runtime"])


def test_disk_full_anywhere_is_one_clear_line(monkeypatch, tmp_path):
    """Any command that runs out of disk space says so in one line (no traceback), naming the file."""
    import errno

    from click.testing import CliRunner

    from edgekd.cli import cli

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "l.npz"))

    monkeypatch.setattr("edgekd.labelpack.LabelPack.save", full)
    res = CliRunner().invoke(cli, ["labels", "--teacher", "edgekd-test-tiny", "--random-teacher", "--classes", "a,b",
                                   "--out", str(tmp_path / "l.npz")])
    assert res.exit_code == 1, res.output
    assert "l.npz: disk full" in res.output and "run the same command again" in res.output
