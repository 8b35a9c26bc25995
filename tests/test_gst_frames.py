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


# --- the model's input rendered in the YUV planes (render_model_input) ---------------------------------------------

def _scene(h: int, w: int, kind: str) -> np.ndarray:
    """Test pictures: 'textured' (gradients, waves, hard-edged coloured boxes, sensor noise) and 'bars' (saturated
    colour bars: the hardest case for resampling before the YUV -> RGB clip)."""
    rng = np.random.default_rng(h * w)
    if kind == "bars":
        colours = np.array([[255, 255, 255], [255, 255, 0], [0, 255, 255], [0, 255, 0], [255, 0, 255], [255, 0, 0],
                            [0, 0, 255], [0, 0, 0]], np.uint8)
        return colours[np.arange(w) * 8 // w][None].repeat(h, 0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx * 200 / w, yy * 180 / h, 128 + 70 * np.sin(xx / 23) * np.cos(yy / 17)], -1)
    for _ in range(40):
        y0, x0 = rng.integers(0, h - 8), rng.integers(0, w - 8)
        img[y0: y0 + rng.integers(4, h // 4), x0: x0 + rng.integers(4, w // 4)] = rng.integers(0, 256, 3)
    return np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)


def _yuv420(rgb: np.ndarray, fmt: str, matrix: str, full_range: bool, pad: int = 12) -> tuple[np.ndarray, FrameLayout]:
    """RGB -> an NV12/I420 buffer with padded strides (chroma: 2x2 means), written independently of edgekd.gst."""
    kr, kb = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}[matrix]
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = kr * r + (1 - kr - kb) * g + kb * b
    cb, cr = (b - y) / (2 - 2 * kb), (r - y) / (2 - 2 * kr)
    y, cb, cr = (y, cb + 128, cr + 128) if full_range else (16 + y * 219 / 255, 128 + cb * 224 / 255,
                                                             128 + cr * 224 / 255)
    h, w = y.shape
    ch, cw = (h + 1) // 2, (w + 1) // 2

    def sub(c: np.ndarray) -> np.ndarray:
        return np.pad(c, ((0, 2 * ch - h), (0, 2 * cw - w)), mode="edge").reshape(ch, 2, cw, 2).mean(axis=(1, 3))

    def q(a: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(a), 0, 255).astype(np.uint8)

    y, u, v = q(y), q(sub(cb)), q(sub(cr))
    sy = w + pad
    if fmt == "NV12":
        suv = 2 * cw + pad
        buf = np.zeros(sy * h + suv * ch, np.uint8)
        uv = buf[sy * h:].reshape(ch, suv)
        uv[:, 0: 2 * cw: 2], uv[:, 1: 2 * cw: 2] = u, v
        layout = FrameLayout("NV12", w, h, (sy, suv), (0, sy * h), matrix, full_range)
    else:
        sc = cw + pad
        buf = np.zeros(sy * h + 2 * sc * ch, np.uint8)
        buf[sy * h: sy * h + sc * ch].reshape(ch, sc)[:, :cw] = u
        buf[sy * h + sc * ch:].reshape(ch, sc)[:, :cw] = v
        layout = FrameLayout("I420", w, h, (sy, sc, sc), (0, sy * h, sy * h + sc * ch), matrix, full_range)
    buf[: sy * h].reshape(h, sy)[:, :w] = y
    return buf, layout


@pytest.mark.parametrize("method", ["pillow", "cv2-area-linear", "numpy-area-linear"])
@pytest.mark.parametrize("fmt", ["NV12", "I420"])
def test_yuv_model_input_is_the_rgb_render_within_bounds(method, fmt):
    """Resizing in the planes and converting at the model's size gives the pixels of converting the whole frame
    first and rendering it (what the element did before, and what training's RGB renders correspond to): on average
    within a grey level, and within a few at the 99th percentile; the few large differences sit at saturated colour
    edges, where the reference clips each RGB pixel before resampling. A swapped chroma plane, a chroma box off by
    a pixel or a wrong matrix each break these bounds (measured: mean 5-40)."""
    from edgekd.gst.frames import plane_boxes, render_model_input
    from edgekd.preprocess import Preprocess

    for (h, w), size in [((480, 640), 224), ((480, 640), 128), ((720, 1280), 224), ((481, 643), 96)]:
        for kind in ("textured", "bars"):
            for matrix, full_range in (("bt601", False), ("bt709", True)):
                pp = Preprocess(size=(size, size), resize_method=method)
                buf, layout = _yuv420(_scene(h, w, kind), fmt, matrix, full_range)
                got = render_model_input(buf, layout, pp)
                ref = pp.render(model_frame(buf, layout)[0])
                assert got.shape == (size, size, 3) and got.dtype == np.uint8
                if plane_boxes(layout, pp) is None:  # an odd crop for a whole-pixel method: the exact way
                    assert (h, w) == (481, 643) and method != "pillow"
                    np.testing.assert_array_equal(got, ref)
                    continue
                diff = np.abs(got.astype(int) - ref.astype(int))
                case = (method, fmt, (h, w), size, kind, matrix, float(diff.mean()), np.percentile(diff, 99))
                if kind == "textured":
                    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 6, case
                else:
                    assert diff.mean() < 0.5 and np.percentile(diff, 99) <= 16 and diff.max() <= 24, case


def test_small_frames_and_packed_formats_take_the_whole_frame_way():
    from edgekd.gst.frames import plane_boxes, render_model_input
    from edgekd.preprocess import Preprocess

    for (h, w), pp in [((300, 400), Preprocess(size=(224, 224))),  # crop 300 < 2 x 224
                       ((301, 403), Preprocess(size=(96, 96), resize_mode="longest")),  # padded view
                       ((301, 403), Preprocess(size=(64, 64), interpolation="lanczos", resize_mode="squash")),
                       ((121, 161), Preprocess(size=(24, 24), resize_method="cv2-area-linear"))]:
        for fmt in ("NV12", "I420"):
            buf, layout = _yuv420(_scene(h, w, "textured"), fmt, "bt601", False)
            if pp.resize_mode == "shortest" and pp.size[0] == 224 or pp.resize_mode == "longest":
                assert plane_boxes(layout, pp) is None
            whole = pp.render(model_frame(buf, layout)[0])
            if plane_boxes(layout, pp) is None:  # only the pixels the render reads are converted: bit for bit
                np.testing.assert_array_equal(render_model_input(buf, layout, pp), whole)
    rgb = _scene(61, 97, "textured")
    stride = 97 * 3 + 1
    packed = np.zeros(stride * 61, np.uint8)
    packed.reshape(61, stride)[:, : 97 * 3] = rgb.reshape(61, -1)
    small = Preprocess(size=(24, 24))
    np.testing.assert_array_equal(render_model_input(packed, FrameLayout("RGB", 97, 61, (stride,), (0,)), small),
                                  small.render(rgb))


def test_yuv_to_rgb_paths_agree():
    """OpenCV's transform and the numpy fallback implement one affine map (within one grey level on ties)."""
    import sys

    from edgekd.gst import frames

    rng = np.random.default_rng(3)
    y, u, v = (rng.integers(0, 256, (37, 53), dtype=np.uint8) for _ in range(3))
    fast = frames.yuv_to_rgb(y, u, v, "bt709", False)
    cv2 = sys.modules.pop("cv2", None)
    try:
        frames.is_available = lambda name: False  # noqa: E731 (the numpy path, as without OpenCV)
        slow = frames.yuv_to_rgb(y, u, v, "bt709", False)
    finally:
        from edgekd._optional import is_available

        frames.is_available = is_available
        if cv2 is not None:
            sys.modules["cv2"] = cv2
    assert np.abs(fast.astype(int) - slow.astype(int)).max() <= 1
