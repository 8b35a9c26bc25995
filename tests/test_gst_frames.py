"""gi-free parts of the GStreamer integration: frame layouts, YUV conversion, the text box, `edgekd gst-path`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekd.cli import cli
from edgekd.gst import plugin_dir, python_path
from edgekd.gst.frames import FrameLayout, draw_text, model_frame, yuv420_to_rgb
from edgekd.resize import RESIZE_METHODS


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

ARRAY_METHODS = [name for name, spec in RESIZE_METHODS.items() if spec.fn is not None]
# kind of picture -> bounds on |render_model_input - render of the whole converted frame| in grey levels: (mean, 99th
# percentile, max, share of pixels off by more than 8). Measured maxima over the cases of
# test_yuv_model_input_is_the_rgb_render_within_bounds (numpy 2.4, Pillow 13, OpenCV 5.1): photo 0.59 / 2 / 25 /
# 0.03%, textured 0.88 / 5 / 24 / 0.23%, bars 0.25 / 11 / 17 / 1.5% (the few large ones sit at saturated colour
# edges, which the whole-frame way clips per RGB pixel before resampling; Pillow bicubic's overshoot at the bars).
# Measured on 640x480 -> 128 photos: U and V swapped gives mean 32, chroma one pixel off mean 1.7 / p99 16, the
# wrong matrix or range mean 2.1-7.2 / p99 17-18.
BOUNDS = {"photo": (1.0, 3, 40, 0.002), "textured": (1.3, 8, 36, 0.005), "bars": (0.5, 16, 26, 0.03)}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[np.ndarray]:
    """Real photos: the first 6 CIFAR-10 training JPEGs (32x32) of each class, unpacked from the tarball of
    ../shared/assets (or $EDGEKD_ASSETS) into tmp; none without it (the photo cases are then skipped)."""
    import os
    import tarfile

    from PIL import Image

    assets = Path(os.environ.get("EDGEKD_ASSETS", Path(__file__).resolve().parents[2] / "shared" / "assets"))
    tar_path = assets / "cifar10-jpg.tar.gz"
    if not tar_path.is_file():
        return []
    out = tmp_path_factory.mktemp("cifar10")
    with tarfile.open(tar_path, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")  # cifar10-images/<split>/<class>/NNNN.jpg, train first
            if len(parts) == 4 and parts[1] != "train":
                break
            if len(parts) == 4 and parts[3].endswith(".jpg") and int(parts[3][:4]) < 6:
                (out / f"{parts[2]}-{parts[3]}").write_bytes(tar.extractfile(member).read())
    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted(out.glob("*.jpg"))]


def _mosaic(photos: list[np.ndarray], h: int, w: int) -> np.ndarray:
    """uint8 [h, w, 3]: rows of photos enlarged 1.75-4x (Pillow bicubic) to tiles of random sizes, edge to edge."""
    from PIL import Image

    rng = np.random.default_rng(h * w)
    canvas, y = np.zeros((h, w, 3), np.uint8), 0
    while y < h:
        th, x = int(rng.integers(56, 130)), 0
        while x < w:
            tw = int(rng.integers(56, 130))
            tile = Image.fromarray(photos[rng.integers(len(photos))]).resize((tw, th), Image.Resampling.BICUBIC)
            canvas[y: y + th, x: x + tw] = np.asarray(tile)[: h - y, : w - x]
            x += tw
        y += th
    return canvas


def _scene(h: int, w: int, kind: str, photos: list[np.ndarray] | None = None) -> np.ndarray:
    """Test pictures: 'photo' (a mosaic of real photos), 'textured' (gradients, waves, hard-edged coloured boxes,
    sensor noise) and 'bars' (saturated colour bars: the hardest case for resampling before the YUV -> RGB clip)."""
    if kind == "photo":
        return _mosaic(photos, h, w)
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


def _yuv420(rgb: np.ndarray, fmt: str, matrix: str, full_range: bool, pad: int = 12, lead: int = 64,
            gap: int = 40) -> tuple[np.ndarray, FrameLayout]:
    """RGB -> an NV12/I420 buffer as GStreamer may lay it out: `lead` bytes before the luma plane, `gap` bytes
    between planes (explicit offsets), rows padded by `pad` bytes (strides); chroma: 2x2 means. Written
    independently of edgekd.gst."""
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
    planes = [(y, sy)] + ([(np.stack([u, v], -1).reshape(ch, 2 * cw), 2 * cw + pad)] if fmt == "NV12" else
                          [(u, cw + pad), (v, cw + pad)])
    offsets = [lead]
    for p, stride in planes[:-1]:
        offsets.append(offsets[-1] + stride * p.shape[0] + gap)
    buf = np.full(offsets[-1] + planes[-1][1] * planes[-1][0].shape[0], 77, np.uint8)  # padding: not grey, not 0
    for (p, stride), offset in zip(planes, offsets):
        buf[offset: offset + stride * p.shape[0]].reshape(p.shape[0], stride)[:, : p.shape[1]] = p
    return buf, FrameLayout(fmt, w, h, tuple(s for _, s in planes), tuple(offsets), matrix, full_range)


def _diff(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.abs(got.astype(np.int16) - ref.astype(np.int16))


def _needs(method: str) -> None:
    """Skip unless the resize method's optional module (OpenCV for cv2-area-linear) is installed."""
    if RESIZE_METHODS[method].needs:
        pytest.importorskip(RESIZE_METHODS[method].needs)


# (frame (h, w), model size, plane path for pillow, for the array methods): 640x480 and 1280x720 at 64-224, odd
# frame sizes (chroma planes round up) with an even crop and with an odd one, a frame under twice the model's size
RENDER_CASES = [((480, 640), 64, True, True), ((480, 640), 128, True, True), ((480, 640), 224, True, True),
                ((720, 1280), 128, True, True), ((720, 1280), 224, True, True), ((481, 641), 96, True, True),
                ((481, 643), 160, True, False), ((300, 400), 224, False, False)]


@pytest.mark.parametrize("method", ["pillow", *ARRAY_METHODS])
@pytest.mark.parametrize("fmt", ["NV12", "I420"])
def test_yuv_model_input_is_the_rgb_render_within_bounds(method, fmt, photos):
    """Resizing in the planes and converting at the model's size gives the pixels of converting the whole frame
    first and rendering it (what the element did before, and what training's RGB renders correspond to), within
    BOUNDS; where the planes cannot serve, exactly those pixels."""
    _needs(method)
    from edgekd.gst.frames import plane_boxes, render_model_input
    from edgekd.preprocess import Preprocess

    for (h, w), size, pillow_planes, array_planes in RENDER_CASES:
        pp = Preprocess(size=(size, size), resize_method=method)
        for kind in (k for k in BOUNDS if photos or k != "photo"):
            rgb = _scene(h, w, kind, photos)
            for matrix, full_range in (("bt601", False), ("bt709", True)):
                buf, layout = _yuv420(rgb, fmt, matrix, full_range)
                got = render_model_input(buf, layout, pp)
                ref = pp.render(model_frame(buf, layout)[0])
                assert got.shape == (size, size, 3) and got.dtype == np.uint8 and got.flags.c_contiguous
                in_planes = plane_boxes(layout, pp) is not None
                assert in_planes == (pillow_planes if method == "pillow" else array_planes), ((h, w), size, method)
                diff = _diff(got, ref)
                if not in_planes:  # only the pixels the render reads are converted: bit for bit
                    assert diff.max() == 0, ((h, w), size, kind, matrix)
                    continue
                mean, p99, most, share = BOUNDS[kind]
                case = (method, fmt, (h, w), size, kind, matrix, float(diff.mean()), np.percentile(diff, 99),
                        int(diff.max()), float((diff > 8).mean()))
                assert diff.mean() < mean and np.percentile(diff, 99) <= p99 and diff.max() <= most, case
                assert (diff > 8).mean() < share, case


@pytest.mark.parametrize("method", ARRAY_METHODS)
def test_array_methods_resize_each_plane_alone(method):
    """Each plane resized alone with the method (luma from its box, U and V from the half box, one channel each),
    stacked and converted: bit for bit, for I420 and for NV12 carrying the same planes, whether the planes are
    stacked before the last step or at the model's size, NV12's chroma split or resized as 2 channels."""
    _needs(method)
    from edgekd.gst.frames import plane_boxes, render_model_input, stack_channels, yuv_planes, yuv_to_rgb
    from edgekd.preprocess import Preprocess
    from edgekd.resize import resize_array

    for (h, w), size, mode in [((480, 640), 128, "shortest"), ((480, 640), 224, "shortest"),  # stacked last, first
                               ((720, 1280), 224, "shortest"), ((720, 1280), 96, "squash"),
                               ((481, 641), 64, "shortest"), ((720, 1280), 160, "shortest")]:
        pp = Preprocess(size=(size, size), resize_method=method, resize_mode=mode)
        rgb = _scene(h, w, "textured")
        for fmt in ("I420", "NV12"):
            buf, layout = _yuv420(rgb, fmt, "bt709", False)
            luma_box, chroma_box = plane_boxes(layout, pp)
            planes = [resize_array(np.ascontiguousarray(p[y0:y1, x0:x1])[:, :, None], pp.size, method)
                      for p, (x0, y0, x1, y1) in zip(yuv_planes(buf, layout), (luma_box, chroma_box, chroma_box))]
            expected = yuv_to_rgb(stack_channels(*(p.reshape(pp.size) for p in planes)), "bt709", False)
            np.testing.assert_array_equal(render_model_input(buf, layout, pp), expected, err_msg=fmt)


@pytest.mark.parametrize("method", ["pillow", "cv2-area-linear"])
def test_flipped_views_and_views_other_than_the_eval_one(method):
    """A view with flip = 1 renders the unflipped pixels mirrored, on every way in (planes, converted crop, packed);
    any view box renders as `Preprocess.render` renders it."""
    _needs(method)
    from edgekd.gst.frames import plane_boxes, render_model_input
    from edgekd.preprocess import Preprocess

    rgb = _scene(480, 640, "textured")
    for size in (128, 224, 320):  # 320: a crop under twice the model's size, the converted-crop way
        pp = Preprocess(size=(size, size), resize_method=method)
        view = pp.eval_view(640, 480)
        mirrored = (*view[:4], 1.0)
        buf, layout = _yuv420(rgb, "NV12", "bt601", False)
        assert (plane_boxes(layout, pp, mirrored) is not None) == (size < 240)
        np.testing.assert_array_equal(render_model_input(buf, layout, pp, mirrored),
                                      render_model_input(buf, layout, pp)[:, ::-1])
        packed = FrameLayout("RGB", 640, 480, (640 * 3,), (0,))
        np.testing.assert_array_equal(render_model_input(rgb.ravel(), packed, pp, mirrored), pp.render(rgb, mirrored))
    pp = Preprocess(size=(96, 96), resize_method=method)
    box = (100.0, 40.0, 420.0, 360.0, 1.0)  # off-centre, inside the frame, 3.3x the model: the planes
    buf, layout = _yuv420(rgb, "I420", "bt601", False)
    assert plane_boxes(layout, pp, box) is not None
    diff = _diff(render_model_input(buf, layout, pp, box), pp.render(model_frame(buf, layout)[0], box))
    assert diff.mean() < BOUNDS["textured"][0] and diff.max() <= BOUNDS["textured"][2]


def test_small_frames_and_packed_formats_take_the_whole_frame_way():
    from edgekd.gst.frames import plane_boxes, render_model_input
    from edgekd.preprocess import Preprocess

    for (h, w), pp in [((300, 400), Preprocess(size=(224, 224))),  # crop 300 < 2 x 224
                       ((301, 403), Preprocess(size=(96, 96), resize_mode="longest")),  # padded view
                       ((301, 403), Preprocess(size=(64, 64), interpolation="lanczos", resize_mode="squash")),
                       ((121, 161), Preprocess(size=(24, 24), resize_method="cv2-area-linear")),
                       ((224, 224), Preprocess(size=(224, 224), resize_method="cv2-area-linear"))]:  # at the size
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
    bgr = FrameLayout("BGRx", 97, 61, (97 * 4,), (0,))
    bgrx = np.concatenate([rgb[..., ::-1], np.zeros((61, 97, 1), np.uint8)], -1).ravel()
    np.testing.assert_array_equal(render_model_input(bgrx, bgr, small), small.render(rgb))


def test_yuv_model_input_without_opencv(monkeypatch):
    """A numpy-only runtime (no OpenCV): the numpy stacking and conversion give the OpenCV path's pixels within one
    grey level (rounding ties of the conversion)."""
    from edgekd.gst import frames
    from edgekd.preprocess import Preprocess

    rgb = _scene(480, 640, "textured")
    for method in ("pillow", "numpy-area-linear"):
        pp = Preprocess(size=(128, 128), resize_method=method)
        for fmt in ("NV12", "I420"):
            buf, layout = _yuv420(rgb, fmt, "bt601", False)
            fast = frames.render_model_input(buf, layout, pp)
            with monkeypatch.context() as m:
                m.setattr(frames, "_cv2", lambda: None)
                slow = frames.render_model_input(buf, layout, pp)
            assert slow.shape == (128, 128, 3) and slow.dtype == np.uint8 and slow.flags.c_contiguous
            assert _diff(fast, slow).max() <= 1, (method, fmt)


def test_yuv_to_rgb_paths_agree(monkeypatch):
    """OpenCV's transform and the numpy fallback implement one affine map (within one grey level on ties)."""
    from edgekd.gst import frames

    rng = np.random.default_rng(3)
    yuv = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    fast = frames.yuv_to_rgb(yuv, "bt709", False)
    if frames._cv2() is None:
        pytest.skip("OpenCV is not installed: there is only the numpy path")
    monkeypatch.setattr(frames, "_cv2", lambda: None)  # the numpy path, as without OpenCV
    slow = frames.yuv_to_rgb(yuv, "bt709", False)
    assert np.abs(fast.astype(int) - slow.astype(int)).max() <= 1


def test_tiny_student_embeds_yuv_frames_as_their_whole_conversion(tmp_path, photos):
    """What the model sees downstream: a tiny student's embedding of the planes' render against that of the whole
    converted frame (OpenVocabClassifier renders it), on camera-sized photo frames (measured: cosine >= 0.99997)."""
    from test_runtime_support import make_bundle

    from edgekd.gst.frames import plane_boxes, render_model_input
    from edgekd.runtime.classifier import OpenVocabClassifier

    clf = OpenVocabClassifier.load(make_bundle(tmp_path / "bundle"), threads=1)
    for (h, w), fmt in [((480, 640), "NV12"), ((720, 1280), "I420")]:
        buf, layout = _yuv420(_scene(h, w, "photo" if photos else "textured", photos), fmt, "bt709", True)
        assert plane_boxes(layout, clf.preprocess) is not None
        got = clf.embed(render_model_input(buf, layout, clf.preprocess))  # at the model's size: not resampled again
        ref = clf.embed(model_frame(buf, layout)[0])
        assert float(got @ ref) > 0.9998, (fmt, float(got @ ref))


def test_yuv_render_benchmark_writes_its_tables(tmp_path):
    """benchmarks/yuv_render.py on a tiny frame: every way renders the model's size, rows carry warm and cold
    timings against rgb, and the report names the slowest planar way."""
    pytest.importorskip("cv2")
    from conftest import load_benchmark

    bench = load_benchmark("yuv_render")
    rows = bench.measure("64x48", 16, "pillow", iters=4, cold_iters=2, warmup=1, blocks=2)
    assert [r["way"] for r in rows] == ["rgb", "nv12", "i420", "nv12 whole"]
    assert rows[0]["warm"]["x_rgb_p50"] == 1.0 and rows[0]["warm"]["n"] == 4 and rows[3]["cold"] is None
    assert rows[1]["max_vs_whole"] <= BOUNDS["textured"][2] and len(rows[1]["cold"]["x_rgb_range"]) == 2
    res = {"iters": 4, "cold_iters": 2, "blocks": 2, "environment": bench.environment([0.0]), "rows": rows}
    bench.write_report(res, tmp_path / "yuv_render")
    assert "Slowest planar render against rgb" in (tmp_path / "yuv_render.md").read_text()
    assert (tmp_path / "yuv_render.json").is_file()
