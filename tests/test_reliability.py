"""Reliability sweep on a tiny pipeline (tiny random teacher, `test_vit` student at 32 px, a few dozen images).

* SIGKILL each stage at a seeded random point (a fault hook in a real CLI subprocess) and re-run the same command:
  cache -> the bytes of an uninterrupted build; distill --resume -> bit-for-bit the same weights (CPU);
  export -> a bundle that passes its gate, a half-written bundle never passes as finished; classify is idempotent.
* A folder salted with broken files goes through cache -> distill -> export --calib -> classify: every bad file is
  reported, nothing crashes.
* The disk fills during a cache write: a one-line error that names the path and says the disk is full; the state
  before it is intact and the same command resumes to the same bytes.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY_STUDENT, TINY_TEACHER, make_image
from PIL import Image

from edgekd.cli import cli

SEED = int(os.environ.get("EDGEKD_RELIABILITY_SEED", "20240611"))  # fixed by default; set it to explore others
ARRAYS = ("image_embeds.npy", "views.npy", "image_sizes.npy", "valid.npy")
COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
TEACHER_OPTS = ["--teacher", TINY_TEACHER, "--random-teacher", "--device", "cpu"]


def cache_args(data: Path, out: Path, workers: int = 0) -> list[str]:
    return ["cache", "--data", str(data), "--out", str(out), *TEACHER_OPTS, "--views", "2", "--seed", "3",
            "--batch-size", "4", "--workers", str(workers), "--templates", "single", "--no-progress"]


def distill_args(cache: Path, out: Path, *extra: str) -> list[str]:
    return ["distill", "--cache", str(cache), "--student", TINY_STUDENT, "--out", str(out), "--img-size", "32",
            "--epochs", "3", "--batch-size", "4", "--workers", "0", "--device", "cpu", "--log-every", "1",
            "--no-progress", *extra]


def export_args(run: Path, out: Path, calib: Path, calib_images: int = 16) -> list[str]:
    return ["export", str(run), "-o", str(out), "--calib", str(calib), "--calib-images", str(calib_images),
            "--small-gate-ok"]


def invoke(args: list[str]):
    """Run the CLI in this process; returns click's Result (stderr mixed into .output)."""
    return CliRunner().invoke(cli, args, catch_exceptions=True)


# A real CLI process with a fault hook: SIGKILL itself just before the n-th call of module.attr. The kill is a real
# SIGKILL (no handler, no cleanup), placed where an external kill could land; the hook makes the point reproducible.
_CHILD = textwrap.dedent("""
    import importlib, json, os, signal, sys
    spec = json.loads(os.environ["EDGEKD_FAULT"])
    owner = importlib.import_module(spec["module"])
    for part in spec.get("cls", "").split(".") if spec.get("cls") else []:
        owner = getattr(owner, part)
    original = getattr(owner, spec["attr"])
    calls = [0]
    def hooked(*a, **k):
        calls[0] += 1
        if calls[0] == spec["call"]:
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*a, **k)
    setattr(owner, spec["attr"], hooked)
    for k, v in spec.get("kwdefaults", {}).items():
        mod, fn, arg = k.split(":")
        getattr(importlib.import_module(mod), fn).__kwdefaults__[arg] = v
    from edgekd.cli import main
    main()
""")


def run_killed(args: list[str], module: str, attr: str, call: int, cls: str = "", **kwdefaults) -> str:
    """Run `edgekd ARGS` in a subprocess that SIGKILLs itself at call `call` of module[.cls].attr; returns stderr."""
    spec = {"module": module, "cls": cls, "attr": attr, "call": call, "kwdefaults": kwdefaults}
    env = {**os.environ, "EDGEKD_FAULT": json.dumps(spec), "TQDM_DISABLE": "1"}
    r = subprocess.run([sys.executable, "-c", _CHILD, *args], env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == -signal.SIGKILL, f"expected the SIGKILL at call {call} of {attr}, got rc {r.returncode}:\n" \
                                            f"{r.stderr[-3000:]}"
    return r.stderr


def one_line_error(output: str) -> str:
    """The CLI's error: exactly one line 'Error: ...', no traceback."""
    assert "Traceback" not in output, output
    errors = [ln for ln in output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, output
    return errors[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """ImageFolder: 3 classes x 8 small JPEGs of varying sizes (24 images = 6 batches of 4)."""
    root = tmp_path_factory.mktemp("rel") / "data"
    for ci, (name, rgb) in enumerate(COLORS.items()):
        for i in range(8):
            make_image(root / name / f"{i:03d}.jpg", rgb, size=(32 + 3 * i, 40 - 2 * i), seed=ci * 100 + i)
    return root


@pytest.fixture(scope="module")
def ref_cache(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "cache"
    r = invoke(cache_args(data, out))
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def ref_run(ref_cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    r = invoke(distill_args(ref_cache, out))
    assert r.exit_code == 0, r.output
    return out


def assert_same_cache(got: Path, want: Path) -> None:
    for name in (*ARRAYS, "index.json"):
        assert (got / name).read_bytes() == (want / name).read_bytes(), f"{name} differs from the uninterrupted build"
    for name in ("labels.npz", "labels_simple.npz"):
        a, b = np.load(got / name), np.load(want / name)
        assert np.array_equal(a["embeddings"], b["embeddings"]) and list(a["class_names"]) == list(b["class_names"])
    volatile = ("created", "build", "versions")
    m_got, m_want = (json.loads((p / "manifest.json").read_text()) for p in (got, want))
    assert {k: v for k, v in m_got.items() if k not in volatile} == {k: v for k, v in m_want.items()
                                                                    if k not in volatile}
    assert m_got["complete"] and not (got / "progress.json").exists()
    assert not [p.name for p in got.iterdir() if p.name.startswith(".")], "temp files left behind"


# ------------------------------------------------------------------------------------------------------- SIGKILL


@pytest.mark.slow  # real CLI processes (~4-8 s of imports each)
def test_cache_killed_three_times_resumes_to_identical_bytes(data, ref_cache, tmp_path):
    rng = random.Random(SEED)
    out = tmp_path / "cache"
    small_chunks = {"edgekd.teacher.cache:build_cache:chunk_size": 4}  # save after every batch, as a big build would
    # 1) killed inside the atomic creation of one of the 4 memmaps (a hidden temp file is left behind)
    run_killed(cache_args(data, out), "numpy.lib.format", "open_memmap", rng.randint(1, 4))
    # 2) killed in the middle of a chunk: a batch's rows are in the memmap but not flushed / recorded
    k1 = rng.randint(2, 6)
    run_killed(cache_args(data, out, workers=1), "edgekd.teacher.cache", "encode_views", k1, **small_chunks)
    prog = json.loads((out / "progress.json").read_text())
    assert prog["done"] == (k1 - 1) * 4 and not json.loads((out / "manifest.json").read_text())["complete"]
    r = invoke(["info", str(out)])
    assert r.exit_code == 0 and f"done: {prog['done']}" in r.output, r.output  # info shows the progress
    # 3) the resumed build is killed while replacing one of its JSON files (manifest, index, progress, final manifest)
    writes = 2 + (6 - (k1 - 1)) + 1
    run_killed(cache_args(data, out), "edgekd.teacher.cache", "atomic_write_json", rng.randint(1, writes),
               **small_chunks)
    # 4) the same command finishes it
    r = invoke(cache_args(data, out))
    assert r.exit_code == 0, r.output
    assert_same_cache(out, ref_cache)
    # running it once more on a complete cache changes nothing
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert invoke(cache_args(data, out)).exit_code == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def _weights(run: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(run / "model.safetensors"))


@pytest.mark.slow  # real CLI processes (~4-8 s of imports each)
def test_distill_killed_three_times_then_resume_is_bit_for_bit(ref_cache, ref_run, tmp_path):
    rng = random.Random(SEED + 2)
    out = tmp_path / "run"
    steps_per_epoch = 6
    # 1) killed before its first checkpoint: nothing to resume (said in one line), the plain command starts over
    run_killed(distill_args(ref_cache, out), "edgekd.distill.task", "forward", rng.randint(2, steps_per_epoch),
               cls="DistillTask")
    r = invoke(distill_args(ref_cache, out, "--resume"))
    assert r.exit_code == 1 and "drop --resume" in one_line_error(r.output)
    # 2) the fresh start is killed at a random micro-step of epoch 2 (epoch 1 is checkpointed)
    k = rng.randint(steps_per_epoch + 2, 2 * steps_per_epoch)
    run_killed(distill_args(ref_cache, out), "edgekd.distill.task", "forward", k, cls="DistillTask")
    state = json.loads((out / "config.json").read_text())["edgekd"]
    assert (state["epoch"], state["step"]) == (1, steps_per_epoch)
    # 3) the resumed run is killed between writing train_state.pt and model.safetensors of the epoch-2 checkpoint
    run_killed(distill_args(ref_cache, out, "--resume"), "edgekd.distill.checkpoint", "save_student", 1)
    assert json.loads((out / "config.json").read_text())["edgekd"]["step"] == steps_per_epoch  # still epoch 1's
    # 4) the documented way: the same command with --resume finishes it
    r = invoke(distill_args(ref_cache, out, "--resume"))
    assert r.exit_code == 0, r.output
    got, want = _weights(out), _weights(ref_run)
    assert got.keys() == want.keys()
    for name in want:
        assert np.array_equal(got[name], want[name]), f"{name} differs from the uninterrupted run"
    conf_got, conf_want = (json.loads((p / "config.json").read_text())["edgekd"] for p in (out, ref_run))
    assert (conf_got["epoch"], conf_got["step"]) == (conf_want["epoch"], conf_want["step"]) == (3, 18)
    steps = [int(row.split(",")[0]) for row in (out / "metrics.csv").read_text().splitlines()[1:]]
    want_steps = [int(row.split(",")[0]) for row in (ref_run / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == want_steps, "metrics.csv lost or repeated rows across the kills"


def _assert_not_a_bundle(bundle: Path, image: Path) -> None:
    from edgekd import EdgekdError
    from edgekd.export.bundle import load_bundle_manifest
    from edgekd.runtime.classifier import OpenVocabClassifier

    with pytest.raises(EdgekdError, match="edgekd.json"):
        load_bundle_manifest(bundle)
    with pytest.raises(EdgekdError, match="edgekd.json"):
        OpenVocabClassifier.load(bundle)
    r = invoke(["classify", str(bundle), str(image)])
    assert r.exit_code == 1 and str(bundle) in one_line_error(r.output)


@pytest.mark.slow  # real CLI processes (~4-8 s of imports each)
def test_export_killed_rerun_passes_gate_and_classify_is_idempotent(ref_run, data, tmp_path):
    from edgekd.export.bundle import load_bundle_manifest

    bundle = tmp_path / "bundle"
    args = export_args(ref_run, bundle, data)
    # 1) killed while the ONNX file is being written (inside its atomic temp file)
    run_killed(args, "onnx", "save", 1)
    _assert_not_a_bundle(bundle, data / "red" / "000.jpg")
    # 2) the re-run is killed at a random later point: before the gate, before labels, before edgekd.json
    point = random.Random(SEED + 4).choice([("edgekd.export.parity", "check_parity"),
                                            ("edgekd.export.pipeline", "_save_labels"),
                                            ("edgekd.export.pipeline", "write_manifest")])
    run_killed(args, *point, 1)
    assert (bundle / "model.onnx").is_file()  # the model is complete, but the bundle is not finished
    _assert_not_a_bundle(bundle, data / "red" / "000.jpg")
    # 3) the same command again gives a bundle that passes its gate
    r = invoke(args)
    assert r.exit_code == 0, r.output
    m = load_bundle_manifest(bundle)
    assert m["parity"]["passed"] is True
    assert not [p.name for p in bundle.iterdir() if p.name.startswith(".")], "temp files left behind"
    # classify: the same answers every time
    cls = ["classify", str(bundle), str(data), "--json", "--top-k", "2"]
    first, second = invoke(cls), invoke(cls)
    assert first.exit_code == second.exit_code == 0
    answers = [line for line in first.output.splitlines() if line.startswith("{")]
    assert first.output == second.output and len(answers) == 24 and "parity gate passed" in first.output


# --------------------------------------------------------------------------------------------------- broken files


def _png(path: Path, width: int, height: int, value: int = 128) -> None:
    """A constant grey 8-bit PNG written row by row (a 10000x10000 image costs ~100 KB and well under a second)."""
    def chunk(tag: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + tag + body + zlib.crc32(tag + body).to_bytes(4, "big")

    comp = zlib.compressobj(9)
    row = b"\x00" + bytes([value]) * width
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def salted_folder(root: Path) -> dict[str, str]:
    """3 classes x 6 good images + broken files. Returns {relative path of a bad file: expected reason word}."""
    for ci, (name, rgb) in enumerate(COLORS.items()):
        for i in range(6):
            make_image(root / name / f"{i:03d}.jpg", rgb, size=(36, 30), seed=ci * 10 + i)
    good = (root / "red" / "000.jpg").read_bytes()
    (root / "red" / "zero.jpg").write_bytes(b"")
    (root / "red" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "green" / "text.jpg").write_text("this is not a JPEG\n")
    _png(root / "blue" / "huge.png", 10000, 10000)
    (root / "green" / "loop.jpg").symlink_to("loop.jpg")  # a symlink to itself
    (root / "blue" / "up").symlink_to("..")  # a folder loop back to the dataset root
    bad = {"red/zero.jpg": "empty", "red/truncated.jpg": "corrupt", "green/text.jpg": "not an image",
           "blue/huge.png": "too large", "green/loop.jpg": "unreadable"}
    # odd but usable: converted to RGB, never skipped
    Image.new("RGB", (1, 1), (200, 20, 20)).save(root / "red" / "one_pixel.png")
    Image.new("CMYK", (40, 30), (0, 200, 200, 20)).save(root / "red" / "cmyk.jpg")
    arr = np.full((30, 40), 40000, np.uint16)
    Image.fromarray(arr).save(root / "blue" / "sixteen_bit.png")
    assert Image.open(root / "blue" / "sixteen_bit.png").mode.startswith("I")
    return bad


def test_salted_folder_through_the_whole_pipeline(tmp_path, caplog):
    import time

    root = tmp_path / "salted"
    bad = salted_folder(root)
    odd_ok = ["red/one_pixel.png", "red/cmyk.jpg", "blue/sixteen_bit.png"]

    t0 = time.perf_counter()
    cache = tmp_path / "cache"
    r = invoke(cache_args(root, cache))
    assert r.exit_code == 0, r.output
    assert time.perf_counter() - t0 < 30, "the 10000x10000 PNG must be refused from its header, not decoded"
    m = json.loads((cache / "manifest.json").read_text())
    skipped = {s["path"]: s["reason"] for s in m["skipped"]}
    assert set(skipped) == set(bad), skipped
    for path, word in bad.items():
        assert word in skipped[path], (path, skipped[path])
        assert path in r.output  # also on screen
    index = [e["path"] for e in json.loads((cache / "index.json").read_text())]
    assert not [p for p in index if p.startswith("blue/up/")], "the folder loop was followed into other classes"
    assert m["dataset"]["classes"] == ["blue", "green", "red"]
    assert m["counts"] == {"images": 18 + 3 + len(bad), "valid": 18 + 3, "skipped": len(bad)}
    valid = np.load(cache / "valid.npy")
    for i, p in enumerate(index):
        assert valid[i] == (p not in bad)
    emb = np.load(cache / "image_embeds.npy").astype(np.float32)
    assert np.allclose(np.linalg.norm(emb[valid], axis=-1), 1, atol=5e-3) and not emb[~valid].any()

    run = tmp_path / "run"
    r = invoke(["distill", "--cache", str(cache), "--student", TINY_STUDENT, "--out", str(run), "--img-size", "32",
                "--epochs", "1", "--batch-size", "4", "--workers", "0", "--device", "cpu", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert json.loads((run / "config.json").read_text())["edgekd"]["step"] == (18 + 3) // 4

    bundle = tmp_path / "bundle"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgekd"):
        r = invoke(export_args(run, bundle, root, calib_images=40))  # all: every bad file is met
    assert r.exit_code == 0, r.output
    parity = json.loads((bundle / "parity.json").read_text())
    assert parity["passed"] is True
    calib = json.loads((bundle / "edgekd.json").read_text())
    used = (calib["calibration"] or {}).get("images") if calib.get("calibration") else None
    assert used is None or used <= 18 + 3
    for path in bad:  # every bad calibration file is named (a warning on stderr)
        assert path in caplog.text, (path, caplog.text)

    r = invoke(["classify", str(bundle), str(root), "--json", "--top-k", "1"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(ln) for ln in r.output.splitlines() if ln.startswith("{")]
    classified = {str(Path(d["image"]).relative_to(root)) for d in lines}
    assert set(odd_ok) <= classified and not classified & set(bad)
    assert len(classified) == 18 + 3
    for path in bad:
        assert Path(path).name in r.output, (path, r.output)
    assert f"{18 + 3} classified, {len(bad)} skipped" in r.output


# ------------------------------------------------------------------------------------------------------ disk full


def test_disk_full_during_cache_write_is_clear_and_resumable(data, ref_cache, tmp_path, monkeypatch):
    import edgekd.teacher.cache as cache_mod

    out = tmp_path / "cache"
    monkeypatch.setattr(cache_mod.build_cache, "__kwdefaults__", {**cache_mod.build_cache.__kwdefaults__,
                                                                  "chunk_size": 4})
    real = cache_mod.atomic_write_json
    fail_at = random.Random(SEED + 5).randint(4, 7)  # manifest, index, progress(0), then a progress after a chunk
    calls = []

    def full_disk(path, obj):
        calls.append(path)
        if len(calls) == fail_at:  # the write() inside the atomic temp file fails, as on a real full disk
            with cache_mod.atomic_path(path) as tmp:
                tmp.write_bytes(b"{")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, obj)

    monkeypatch.setattr(cache_mod, "atomic_write_json", full_disk)
    r = invoke(cache_args(data, out))
    assert r.exit_code == 1, r.output
    line = one_line_error(r.output)
    assert str(out / "progress.json") in line and "disk full" in line.lower() and "resumes" in line, line
    # the previous state is intact: the last recorded progress is readable and no temp file was left
    prog = json.loads((out / "progress.json").read_text())
    assert prog["done"] == (fail_at - 4) * 4
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    monkeypatch.setattr(cache_mod, "atomic_write_json", real)
    r = invoke(cache_args(data, out))
    assert r.exit_code == 0, r.output
    assert_same_cache(out, ref_cache)


def test_disk_full_when_creating_the_arrays(data, tmp_path, monkeypatch):
    """Space for the memmaps is reserved up front: no space -> a clear error before any work, never a SIGBUS later."""
    out = tmp_path / "cache"

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    r = invoke(cache_args(data, out))
    assert r.exit_code == 1, r.output
    line = one_line_error(r.output)
    assert str(out / "image_embeds.npy") in line and "disk full" in line.lower(), line
    assert not [p.name for p in out.iterdir() if p.name.endswith(".npy") or p.name.startswith(".")]
