"""CLI basics for the foundation commands: --help, bad options, happy paths, imports without optional backends."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner
from conftest import TINY_TEACHER

from edgekd.cli import cli


@pytest.mark.parametrize("args", [[], ["cache"], ["cache", "merge"], ["labels"], ["info"]])
def test_help(args):
    r = CliRunner().invoke(cli, [*args, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.output


@pytest.mark.parametrize("args, code, msg", [
    (["cache", "--data", "x", "--out", "y", "--views", "0"], 2, "--views"),
    (["cache", "--out", "y"], 2, "--data and --out are required"),
    (["cache", "--data", "/nonexistent/dir", "--out", "y", "--teacher", TINY_TEACHER, "--random-teacher",
      "--device", "cpu"], 1, "no such file or folder"),
    (["cache", "--bogus"], 2, "No such option"),
    (["cache", "merge", "--out", "z"], 2, "Missing argument"),
    (["labels", "--classes", "a", "--out", "p.npz", "--teacher", "not-a-model"], 1, "not an open_clip model"),
    (["labels", "--classes", "a", "--out", "p.npz", "--device", "tpu"], 1, "--device"),
])
def test_bad_options(args, code, msg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == code, r.output
    assert msg in r.output


def test_cache_cli_shards_and_merge(image_folder, tmp_path, monkeypatch):
    base = ["--data", str(image_folder), "--teacher", TINY_TEACHER, "--random-teacher", "--device", "cpu",
            "--workers", "0", "--batch-size", "8", "--templates", "single", "--no-progress"]
    for rank in (0, 1):  # torchrun-style: shard and output folder from RANK / WORLD_SIZE
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        r = CliRunner().invoke(cli, ["cache", *base, "--out", str(tmp_path / "c")])
        assert r.exit_code == 0, r.output
        assert f"shard {rank}/2 done" in r.output
    monkeypatch.delenv("WORLD_SIZE")
    r = CliRunner().invoke(cli, ["cache", "merge", str(tmp_path / "c.shard-0-of-2"), str(tmp_path / "c.shard-1-of-2"),
                                 "--out", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["cache", *base, "--out", str(tmp_path / "single")])
    assert r.exit_code == 0 and "18/18 images x 1 views" in r.output
    assert (tmp_path / "c" / "image_embeds.npy").read_bytes() == (tmp_path / "single" / "image_embeds.npy").read_bytes()
    r = CliRunner().invoke(cli, ["cache", *base, "--out", str(tmp_path / "single"), "--views", "2"])
    assert r.exit_code == 1 and "different views/seed" in r.output


def test_import_and_help_without_optional_backends():
    code = textwrap.dedent("""
        import sys
        for name in ("onnxruntime", "openvino", "nncf", "tensorrt", "cv2", "matplotlib"):
            sys.modules[name] = None  # any import of them now raises ImportError
        import edgekd, edgekd.info, edgekd.data.index, edgekd.labelpack
        from edgekd.cli import main
        for args in (["--help"], ["cache", "--help"], ["labels", "--help"], ["info", "--help"]):
            try:
                main(args)
            except SystemExit as e:
                assert e.code == 0, (args, e.code)
        print("OK")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("OK")


def test_info_import_is_torch_free():
    code = "import sys, edgekd.info, edgekd.teacher.cache; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr[-2000:]
