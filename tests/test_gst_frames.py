"""gi-free parts of the GStreamer integration: frame layouts, YUV conversion, the text box, `edgekd gst-path`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekd.cli import cli
from edgekd.gst import plugin_dir, python_path
from edgekd.gst.frames import FrameLayout, draw_text, model_frame, yuv420_to_rgb


def test_packed_formats_are_views_without_the_row_padding():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    stride = 7 * 4 + 4
    buf = np.zeros(stride * 5, np.uint8)
    buf.reshape(5, stride)[:, : 7 * 4] = img.reshape(5, -1)
    frame, color = model_frame(buf, FrameLayout("BGRx", 7, 5, (stride,), (0,)))
    assert color == "bgr" and np.shares_memory(frame, buf)
    np.testing.assert_array_equal(frame, img[:, :, :3])
    with pytest.raises(ValueError, match="too small"):
        model_frame(buf[:-10], FrameLayout("BGRx", 7, 5, (stride,), (0,)))
    with pytest.raises(ValueError, match="not supported"):
        FrameLayout("YUY2", 7, 5, (14,), (0,))


@pytest.mark.parametrize("full_range", [False, True])
def test_yuv_reference_colours(full_range):
    lo, hi = (0, 255) if full_range else (16, 235)
    y = np.array([[lo, hi]], np.uint8)
    grey = yuv420_to_rgb(y, np.full((1, 1), 128, np.uint8), np.full((1, 1), 128, np.uint8), "bt601", full_range)
    np.testing.assert_array_equal(grey, [[[0, 0, 0], [255, 255, 255]]])
    # BT.601 limited-range red (Y 81, Cb 90, Cr 240) and BT.709 limited-range blue (Y 32, Cb 240, Cr 118)
    red = yuv420_to_rgb(np.array([[81]], np.uint8), np.array([[90]], np.uint8), np.array([[240]], np.uint8))
    assert np.abs(red.astype(int) - [255, 0, 0]).max() <= 2
    blue = yuv420_to_rgb(np.array([[32]], np.uint8), np.array([[240]], np.uint8), np.array([[118]], np.uint8), "bt709")
    assert np.abs(blue.astype(int) - [0, 0, 255]).max() <= 2


def test_i420_and_nv12_read_the_same_picture_at_odd_sizes():
    rng = np.random.default_rng(1)
    w, h = 5, 3
    y = rng.integers(16, 236, (h, w), dtype=np.uint8)
    u, v = (rng.integers(16, 241, (2, 3), dtype=np.uint8) for _ in range(2))
    i420 = np.concatenate([y.ravel(), u.ravel(), v.ravel()])
    nv12 = np.concatenate([y.ravel(), np.stack([u, v], axis=2).ravel()])
    a, _ = model_frame(i420, FrameLayout("I420", w, h, (w, 3, 3), (0, w * h, w * h + 6)))
    b, _ = model_frame(nv12, FrameLayout("NV12", w, h, (w, 6), (0, w * h)))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, yuv420_to_rgb(y, u, v))


@pytest.mark.parametrize("fmt", ["RGB", "NV12"])
def test_text_box_stays_in_its_corner(fmt):
    w, h = 120, 40
    layout = FrameLayout(fmt, w, h, (w * 3,) if fmt == "RGB" else (w, w), (0,) if fmt == "RGB" else (0, w * h))
    size = w * h * 3 if fmt == "RGB" else w * h * 3 // 2
    buf = np.full(size, 200, np.uint8)
    draw_text(buf, layout, "red 0.91\nblue 0.05")
    first = buf[: w * h * (3 if fmt == "RGB" else 1)].reshape(h, -1)
    assert (first[:, :3] != 200).any() and (first[30:] == 200).all()  # two lines of ~11 px, the rest untouched


def test_gst_path_command():
    runner = CliRunner()
    res = runner.invoke(cli, ["gst-path"])
    assert res.exit_code == 0 and Path(res.output.strip()) == plugin_dir()
    assert (plugin_dir() / "python" / "edgekdclassify.py").is_file()
    res = runner.invoke(cli, ["gst-path", "--env"])
    assert res.exit_code == 0
    lines = res.output.strip().splitlines()
    assert lines[0].startswith(f"export GST_PLUGIN_PATH={plugin_dir()}") and lines[1].startswith("export PYTHONPATH=")
    assert all(d in lines[1] for d in python_path())
    assert runner.invoke(cli, ["gst-path", "--help"]).exit_code == 0
