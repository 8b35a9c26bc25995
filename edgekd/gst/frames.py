"""Raw GStreamer video frames <-> numpy, gi-free: views of packed RGB formats, YUV 4:2:0 to RGB, the model's input
rendered straight from the planes, a text box.

    layout = FrameLayout("NV12", 640, 480, strides=(640, 640), offsets=(0, 307200))
    pixels = render_model_input(np.frombuffer(data, np.uint8), layout, clf.preprocess)   # uint8 [h, w, 3] RGB
    frame, color = model_frame(np.frombuffer(data, np.uint8), layout)     # the whole frame: uint8 [480, 640, 3]

Packed formats become views with the row padding skipped (no copy; the classifier copies only what a non-contiguous
view needs). For the planar YUV formats (NV12, I420: what hardware decoders and CSI cameras deliver),
`render_model_input` crops the view's box and resizes in the planes, luma at full resolution and chroma at half,
with the bundle's own resize method, and converts only the model's pixels to RGB. That costs 0.6-0.9x rendering a
packed RGB frame of the same size with Pillow, 1.0-1.4x with cv2-area-linear (whose RGB render takes 0.15-0.3 ms at
640x480-1280x720), 4-10x less than converting the whole frame first (benchmarks/results/yuv_render.md); and it stays
within a grey level of converting the whole frame first on average (the YUV -> RGB map is affine, so it commutes
with the resampling except for rounding and clipping: a rare pixel at a saturated colour edge, where the whole-frame
way clips before resampling, differs by up to ~30; tests/test_gst_frames.py bounds the difference on photos,
textures and colour bars). Where the planes cannot be used (a crop under twice the model's size, where chroma would
be enlarged; a padded 'longest' view; a crop on an odd pixel for the whole-pixel array methods, e.g. odd frame sizes
or 1366x768), only the region the render reads is converted, and the result is bit for bit the render of the whole
converted frame. The conversion repeats each chroma sample 2x2 and uses the caps' matrix (BT.601/709/2020) and
range; GStreamer's `videoconvert` interpolates the chroma, so its output differs at sharp colour edges
(tests/gst_element_cases.py measures the gap).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from edgekd._optional import is_available, require
from edgekd.preprocess import Preprocess, ViewParams, finish_pixels, pillow_filter
from edgekd.resize import PILLOW, decimation, pixel_box, resize_array

# format -> (bytes per pixel, channel order) of the packed formats; the planar ones are converted
PACKED = {"RGB": (3, "rgb"), "BGR": (3, "bgr"), "RGBx": (4, "rgb"), "BGRx": (4, "bgr"), "RGBA": (4, "rgb"),
          "BGRA": (4, "bgr")}
PLANAR = ("NV12", "I420")
FORMATS = (*PACKED, *PLANAR)
# YUV matrix -> (Kr, Kb) (ITU-R BT.601, BT.709, BT.2020; SMPTE 240M)
MATRICES = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722), "bt2020": (0.2627, 0.0593),
            "smpte240m": (0.212, 0.087)}


@dataclass(frozen=True)
class FrameLayout:
    """Where a frame's planes lie in its buffer (GstVideoInfo's format, size, strides and offsets per plane)."""

    format: str
    width: int
    height: int
    strides: tuple[int, ...]
    offsets: tuple[int, ...]
    matrix: str = "bt601"
    full_range: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"video format {self.format!r} is not supported (supported: {', '.join(FORMATS)})")
        if self.matrix not in MATRICES:
            raise ValueError(f"YUV matrix {self.matrix!r} is not supported (supported: {', '.join(MATRICES)})")
        if self.width < 1 or self.height < 1:
            raise ValueError(f"frame size {self.width}x{self.height} is empty")

    @property
    def chroma_size(self) -> tuple[int, int]:
        """(h, w) of a 4:2:0 chroma plane."""
        return (self.height + 1) // 2, (self.width + 1) // 2


def plane(data: np.ndarray, layout: FrameLayout, index: int, rows: int, cols: int, channels: int = 1) -> np.ndarray:
    """A strided uint8 view [rows, cols, channels] of plane `index` of the flat buffer `data` (no copy)."""
    offset, stride = layout.offsets[index], layout.strides[index]
    end = offset + stride * (rows - 1) + cols * channels
    if data.ndim != 1 or data.dtype != np.uint8 or end > data.size:
        raise ValueError(f"{layout.format} {layout.width}x{layout.height} buffer of {data.size} bytes is too small "
                         f"for plane {index} (needs {end})")
    if data.flags.c_contiguous:  # ~5x cheaper than as_strided, which shows at several planes per frame
        return np.ndarray((rows, cols, channels), np.uint8, data, offset, (stride, channels, 1))
    return np.lib.stride_tricks.as_strided(data[offset:], (rows, cols, channels), (stride, channels, 1),
                                           writeable=data.flags.writeable)


def model_frame(data: np.ndarray, layout: FrameLayout) -> tuple[np.ndarray, str]:
    """Flat uint8 buffer -> (uint8 [H, W, 3] frame, 'rgb' | 'bgr'): a view for packed formats, RGB for YUV."""
    if layout.format in PACKED:
        bpp, order = PACKED[layout.format]
        return plane(data, layout, 0, layout.height, layout.width, bpp)[:, :, :3], order
    return yuv420_to_rgb(*yuv_planes(data, layout), layout.matrix, layout.full_range), "rgb"


def yuv_planes(data: np.ndarray, layout: FrameLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views (no copy) of a planar frame's luma [H, W] and chroma U, V [ceil(H/2), ceil(W/2)] (NV12: strided views
    into the interleaved UV plane)."""
    y = plane(data, layout, 0, layout.height, layout.width)[:, :, 0]
    ch, cw = layout.chroma_size
    if layout.format == "NV12":
        uv = plane(data, layout, 1, ch, cw, 2)
        return y, uv[:, :, 0], uv[:, :, 1]
    return y, plane(data, layout, 1, ch, cw)[:, :, 0], plane(data, layout, 2, ch, cw)[:, :, 0]


def render_model_input(data: np.ndarray, layout: FrameLayout, preprocess: Preprocess,
                       view: ViewParams | None = None) -> np.ndarray:
    """Flat frame bytes -> the model's input pixels, uint8 [h, w, 3] RGB at preprocess.size: `view` (default: the
    eval view) rendered with the bundle's resize method and flipped as the view says, as `preprocess.render` does.
    Packed formats: exactly `preprocess.render` of the frame. NV12/I420: resized in the planes and converted at the
    model's size where `plane_boxes` allows it (see the module docstring), else exactly `preprocess.render` of the
    RGB conversion, converting only the pixels the render reads."""
    if layout.format in PACKED:
        frame, color = model_frame(data, layout)
        return preprocess.render(frame, view, color=color)
    view = preprocess.eval_view(layout.width, layout.height) if view is None else view
    boxes = plane_boxes(layout, preprocess, view)
    if boxes is None:
        return _render_converted_crop(data, layout, preprocess, view)
    resize = _resize_planes_pillow if preprocess.resize_method == PILLOW else _resize_planes_array
    yuv = resize(data, layout, preprocess, *boxes)
    return finish_pixels(yuv_to_rgb(yuv, layout.matrix, layout.full_range), "rgb", view[4])


Box4 = tuple[float, float, float, float]


def plane_boxes(layout: FrameLayout, preprocess: Preprocess,
                view: ViewParams | None = None) -> tuple[Box4, Box4] | None:
    """(luma box, chroma box) of `view` (default: the eval view) when it can be rendered in the planes, else None:
    the crop must lie inside the frame (no 'longest' padding) and be at least twice the model's size both ways (so
    the half-resolution chroma is shrunk, never enlarged); the array methods, which crop whole pixels, also need the
    luma crop on even pixels, so that the chroma crop is exactly half of it (chroma sample j covers luma pixels 2j and
    2j + 1)."""
    x0, y0, x1, y1, _ = preprocess.eval_view(layout.width, layout.height) if view is None else view
    h, w = preprocess.size
    if x0 < 0 or y0 < 0 or x1 > layout.width or y1 > layout.height or y1 - y0 < 2 * h or x1 - x0 < 2 * w:
        return None
    if preprocess.resize_method == PILLOW:  # Pillow resamples exact float boxes
        return (x0, y0, x1, y1), (x0 / 2, y0 / 2, x1 / 2, y1 / 2)
    box = pixel_box((x0, y0, x1, y1), (layout.height, layout.width), preprocess.size)
    if any(c % 2 for c in box):
        return None
    return box, tuple(c // 2 for c in box)


def _resize_planes_pillow(data: np.ndarray, layout: FrameLayout, preprocess: Preprocess, luma_box: Box4,
                          chroma_box: Box4) -> np.ndarray:
    """The planes' boxes -> uint8 [h, w, 3] YUV at preprocess.size: each plane resized alone by Pillow with the
    preprocessing's filter (luma and chroma shrink by different factors, so their filters differ)."""
    y, u, v = yuv_planes(data, layout)
    if layout.format == "NV12":  # Pillow reads unit-step rows
        u, v = split_uv(plane(data, layout, 1, *layout.chroma_size, 2))
    size, filt = (preprocess.size[1], preprocess.size[0]), pillow_filter(preprocess.interpolation)
    planes = [_plane_image(p).resize(size, filt, box=b) for p, b in ((y, luma_box), (u, chroma_box), (v, chroma_box))]
    return stack_channels(*(np.asarray(p) for p in planes))


def _resize_planes_array(data: np.ndarray, layout: FrameLayout, preprocess: Preprocess, luma_box: Box4,
                         chroma_box: Box4) -> np.ndarray:
    """The planes' whole-pixel boxes -> uint8 [h, w, 3] YUV at preprocess.size, each plane resized alone by the
    array method: bit for bit the per-plane resize (the methods resample each channel alone), interleaved where it
    is cheapest. Both methods halve while the crop is at least twice the model's size, then interpolate once; luma
    takes one halving more than chroma, so after their halvings the planes have one size. I420's planes are stacked
    there and interpolated together (one 3-channel pass costs ~2/3 of three 1-channel ones); NV12's would need their
    chroma split first, which costs about what that saves, so they are resized all the way (the chroma as the
    2-channel array it is) and stacked at the model's size."""
    method, size = preprocess.resize_method, preprocess.size
    x0, y0, x1, y1 = (int(c) for c in luma_box)
    ky, kx = decimation((y1 - y0, x1 - x0), size)
    first = layout.format == "I420"
    to = ((y1 - y0) // ky, (x1 - x0) // kx) if first else size  # first: where the halvings end
    luma = resize_array(plane(data, layout, 0, layout.height, layout.width)[y0:y1, x0:x1], to, method)
    chroma = _chroma_crops(data, layout, chroma_box, split=(ky, kx) != (2, 2))  # (2, 2): chroma not halved
    yuv = stack_channels(luma, *(resize_array(c, to, method) for c in chroma))
    return resize_array(yuv, size, method) if first else yuv


def _chroma_crops(data: np.ndarray, layout: FrameLayout, box: Box4, split: bool) -> list[np.ndarray]:
    """Views of the whole-pixel `box` of the chroma planes: U and V [h, w, 1] each, or NV12's interleaved chroma
    [h, w, 2] as it is unless `split` (then copied into U and V: OpenCV's 2-channel INTER_AREA is ~20x slower than
    1-channel and rounds differently, and its merge of 1 + 2 channels is slow)."""
    x0, y0, x1, y1 = (int(c) for c in box)
    if layout.format == "I420":
        return [plane(data, layout, i, *layout.chroma_size)[y0:y1, x0:x1] for i in (1, 2)]
    uv = plane(data, layout, 1, *layout.chroma_size, 2)[y0:y1, x0:x1]
    return [c[:, :, None] for c in split_uv(uv)] if split else [uv]


def split_uv(uv: np.ndarray) -> np.ndarray:
    """NV12's interleaved chroma uint8 [h, w, 2] (a view with padded rows is fine) -> uint8 [2, h, w] (U, V), in one
    new array: the pairs read as little-endian 16-bit words, U the low byte (one pass per plane; ~3x faster than
    copying each strided channel, and than OpenCV's split)."""
    words = uv.view("<u2")[..., 0]
    out = np.empty((2, *words.shape), np.uint8)
    np.copyto(out[0], words, casting="unsafe")  # keeps the low byte
    np.right_shift(words, 8, out=out[1], casting="unsafe")
    return out


def stack_channels(*planes: np.ndarray) -> np.ndarray:
    """uint8 planes of one size, [H, W] or [H, W, C] each (strided views are fine) -> uint8 [H, W, sum of C],
    C-contiguous: OpenCV's merge where OpenCV is installed (given C-contiguous planes: its Python binding copies
    strided ones slowly), else numpy's concatenate."""
    cv2 = _cv2()
    if cv2 is None:
        return np.concatenate([p.reshape(*p.shape[:2], -1) for p in planes], axis=2)
    out = cv2.merge([np.ascontiguousarray(p) for p in planes])
    return out if out.ndim == 3 else out[:, :, None]


def _render_converted_crop(data: np.ndarray, layout: FrameLayout, preprocess: Preprocess,
                           view: ViewParams) -> np.ndarray:
    """`preprocess.render` of the whole frame's RGB conversion, bit for bit, converting only the region the render
    reads: `view`'s box plus the resampling filter's reach, widened to even luma pixels (so the chroma repeats
    exactly as in the whole frame), the view shifted into it."""
    reach = 2 * math.ceil(3 * max((view[3] - view[1]) / preprocess.size[0], (view[2] - view[0]) / preprocess.size[1],
                                  1.0)) + 2  # Lanczos' support (3) at the shrink factor, and rounding
    x0 = max(0, math.floor(view[0]) - reach) // 2 * 2
    y0 = max(0, math.floor(view[1]) - reach) // 2 * 2
    x1, y1 = min(layout.width, math.ceil(view[2]) + reach), min(layout.height, math.ceil(view[3]) + reach)
    y, u, v = yuv_planes(data, layout)
    rgb = yuv420_to_rgb(y[y0:y1, x0:x1], *(c[y0 // 2: (y1 + 1) // 2, x0 // 2: (x1 + 1) // 2] for c in (u, v)),
                        layout.matrix, layout.full_range)
    shifted = (view[0] - x0, view[1] - y0, view[2] - x0, view[3] - y0, view[4])
    return preprocess.render(rgb, view=shifted)


def _plane_image(a: np.ndarray) -> Image.Image:
    """uint8 [h, w] -> a Pillow 'L' image over the same memory where the rows are unit-step and padded rows fit in
    the buffer (Pillow reads `stride` bytes per row, the last one included); otherwise over a compact copy (NV12's
    interleaved chroma)."""
    h, w = a.shape
    stride = a.strides[0]
    if a.strides[1] != 1 or stride < w or _bytes_after(a) < stride * h:
        a, stride = np.ascontiguousarray(a), w
    rows = np.lib.stride_tricks.as_strided(a, (stride * h,), (1,), writeable=False)
    return Image.frombuffer("L", (w, h), rows, "raw", "L", stride, 1)


def _bytes_after(a: np.ndarray) -> int:
    """Bytes of the underlying buffer from a's first element to its end."""
    root = a
    while isinstance(root.base, np.ndarray):
        root = root.base
    start = a.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    return root.nbytes - start


def yuv420_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray, matrix: str = "bt601",
                  full_range: bool = False) -> np.ndarray:
    """Luma [H, W] + chroma [ceil(H/2), ceil(W/2)] (uint8) -> RGB uint8 [H, W, 3] (chroma repeated 2x2)."""
    h, w = y.shape
    up = [np.repeat(np.repeat(c, 2, axis=0), 2, axis=1)[:h, :w] for c in (u, v)]
    return yuv_to_rgb(stack_channels(y, *up), matrix, full_range)


def yuv_to_rgb(yuv: np.ndarray, matrix: str = "bt601", full_range: bool = False) -> np.ndarray:
    """YUV uint8 [H, W, 3] (one size for all three) -> RGB uint8 [H, W, 3] with the matrix and range of the caps: one
    affine map, clipped and rounded to the nearest grey level (OpenCV's cv2.transform where OpenCV is installed,
    ~10x faster; numpy float32 otherwise; the two differ by at most one grey level on rounding ties)."""
    affine = yuv_matrix(matrix, full_range)
    cv2 = _cv2()
    if cv2 is not None:
        return cv2.transform(np.ascontiguousarray(yuv), affine)
    out = yuv.astype(np.float32) @ affine[:, :3].T  # [H, W, 3]
    out += affine[:, 3]
    np.clip(out, 0.0, 255.0, out=out)
    return np.rint(out, out=out).astype(np.uint8)


@lru_cache(maxsize=16)
def yuv_matrix(matrix: str, full_range: bool) -> np.ndarray:
    """float32 [3, 4] (M | b): RGB = M @ (Y, U, V) + b, in 0..255 units, for the caps' matrix and range."""
    offset, luma_scale, chroma_scale = _coefficients(matrix, full_range)
    kr, kb = MATRICES[matrix]
    kg = 1.0 - kr - kb
    m = np.array([[luma_scale, 0.0, (2.0 - 2.0 * kr) * chroma_scale],
                  [luma_scale, -2.0 * kb * (1.0 - kb) / kg * chroma_scale, -2.0 * kr * (1.0 - kr) / kg * chroma_scale],
                  [luma_scale, (2.0 - 2.0 * kb) * chroma_scale, 0.0]], np.float64)
    b = -(m @ np.array([offset, 128.0, 128.0]))
    return np.hstack([m, b[:, None]]).astype(np.float32)


@lru_cache(maxsize=1)
def _cv2():
    """OpenCV where it is installed, else None (the fast paths are optional), looked up once: frames call this
    several times each, and a failed lookup would otherwise search sys.path every time."""
    return require("cv2", purpose="fast YUV paths") if is_available("cv2") else None


def _coefficients(matrix: str, full_range: bool) -> tuple[float, float, float]:
    """(luma offset, luma scale, chroma scale) to 0..255 RGB units."""
    if matrix not in MATRICES:
        raise ValueError(f"YUV matrix {matrix!r} is not supported (supported: {', '.join(MATRICES)})")
    return (0.0, 1.0, 1.0) if full_range else (16.0, 255.0 / 219.0, 255.0 / 224.0)


# --- overlay ------------------------------------------------------------------------------------------------------

@lru_cache(maxsize=64)
def text_mask(text: str, width: int) -> np.ndarray:
    """Lines of `text` rendered with Pillow's built-in font -> bool [h, min(width, text width)] (True on glyphs)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    lines = text.splitlines() or [""]
    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    boxes = [draw.textbbox((0, 0), line or " ", font=font) for line in lines]
    line_h = max(b[3] for b in boxes) + 2
    img = Image.new("L", (min(width, max(b[2] for b in boxes) + 4), line_h * len(lines) + 2))
    d = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        d.text((2, 1 + i * line_h), line, fill=255, font=font)
    return np.asarray(img) > 127


def draw_text(data: np.ndarray, layout: FrameLayout, text: str, at: tuple[int, int] = (0, 0)) -> None:
    """Draw `text` in white on a darkened box with its top-left corner at `at` (x, y; default the frame's corner,
    on even pixels for YUV chroma) in the writable buffer `data`; what falls outside the frame is left out."""
    x, y = (min(max(0, int(v)) // 2 * 2, limit - 1) for v, limit in zip(at, (layout.width, layout.height)))
    mask = text_mask(text, layout.width - x)
    h, w = min(mask.shape[0], layout.height - y), mask.shape[1]
    mask = mask[:h, :w]
    if layout.format in PACKED:
        bpp = PACKED[layout.format][0]
        box = plane(data, layout, 0, y + h, (x + w), bpp)[y:, x:, :3]
        box[...] = np.where(mask[:, :, None], np.uint8(255), box // 3)
        return
    luma = plane(data, layout, 0, y + h, x + w)[y:, x:, 0]
    white = 255 if layout.full_range else 235
    luma[...] = np.where(mask, np.uint8(white), luma // 3)
    cy, cx, ch, cw = y // 2, x // 2, (y + h + 1) // 2, (x + w + 1) // 2  # neutral chroma under the box: white text
    if layout.format == "NV12":
        plane(data, layout, 1, ch, cw, 2)[cy:, cx:] = 128
    else:
        plane(data, layout, 1, ch, cw)[cy:, cx:] = 128
        plane(data, layout, 2, ch, cw)[cy:, cx:] = 128
