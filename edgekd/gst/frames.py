"""Raw GStreamer video frames <-> numpy, gi-free: views of packed RGB formats, YUV 4:2:0 to RGB, a text box.

    layout = FrameLayout("NV12", 640, 480, strides=(640, 640), offsets=(0, 307200))
    frame, color = model_frame(np.frombuffer(data, np.uint8), layout)     # uint8 [480, 640, 3], "rgb"

Packed formats become views with the row padding skipped (no copy; the classifier copies only what a non-contiguous
view needs). Only the planar YUV formats are converted: full-resolution RGB from the luma plane and nearest-neighbour
upsampled chroma, with the caps' matrix (BT.601/709/2020) and range. GStreamer's `videoconvert` interpolates the
chroma linearly, so its output differs at sharp colour edges (tests/test_gst_element.py measures the gap).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

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
    return np.lib.stride_tricks.as_strided(data[offset:], (rows, cols, channels), (stride, channels, 1),
                                           writeable=data.flags.writeable)


def model_frame(data: np.ndarray, layout: FrameLayout) -> tuple[np.ndarray, str]:
    """Flat uint8 buffer -> (uint8 [H, W, 3] frame, 'rgb' | 'bgr'): a view for packed formats, RGB for YUV."""
    if layout.format in PACKED:
        bpp, order = PACKED[layout.format]
        return plane(data, layout, 0, layout.height, layout.width, bpp)[:, :, :3], order
    y = plane(data, layout, 0, layout.height, layout.width)[:, :, 0]
    ch, cw = layout.chroma_size
    if layout.format == "NV12":
        uv = plane(data, layout, 1, ch, cw, 2)
        u, v = uv[:, :, 0], uv[:, :, 1]
    else:
        u, v = plane(data, layout, 1, ch, cw)[:, :, 0], plane(data, layout, 2, ch, cw)[:, :, 0]
    return yuv420_to_rgb(y, u, v, layout.matrix, layout.full_range), "rgb"


def yuv420_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray, matrix: str = "bt601",
                  full_range: bool = False) -> np.ndarray:
    """Luma [H, W] + chroma [ceil(H/2), ceil(W/2)] (uint8) -> RGB uint8 [H, W, 3]."""
    h, w = y.shape
    coef = _coefficients(matrix, full_range)
    yf = (y.astype(np.float32) - coef[0]) * coef[1]
    up = np.empty((2, h, w), np.float32)  # nearest-neighbour 2x upsampling of (U, V)
    for i, c in enumerate((u, v)):
        up[i] = np.repeat(np.repeat(c, 2, axis=0), 2, axis=1)[:h, :w]
    up -= 128.0
    up *= coef[2]
    cb, cr = up
    kr, kb = MATRICES[matrix]
    out = np.empty((h, w, 3), np.float32)
    out[:, :, 0] = yf + (2.0 - 2.0 * kr) * cr
    out[:, :, 2] = yf + (2.0 - 2.0 * kb) * cb
    out[:, :, 1] = yf - (2.0 * kr * (1.0 - kr) * cr + 2.0 * kb * (1.0 - kb) * cb) / (1.0 - kr - kb)
    np.clip(out, 0.0, 255.0, out=out)
    return np.rint(out, out=out).astype(np.uint8)


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


def draw_text(data: np.ndarray, layout: FrameLayout, text: str) -> None:
    """Draw `text` in white on a darkened box in the top-left corner of the frame in the writable buffer `data`."""
    mask = text_mask(text, layout.width)
    h, w = min(mask.shape[0], layout.height), mask.shape[1]
    mask = mask[:h, :w]
    if layout.format in PACKED:
        bpp = PACKED[layout.format][0]
        box = plane(data, layout, 0, h, w, bpp)[:, :, :3]
        box[...] = np.where(mask[:, :, None], np.uint8(255), box // 3)
        return
    luma = plane(data, layout, 0, h, w)[:, :, 0]
    white = 255 if layout.full_range else 235
    luma[...] = np.where(mask, np.uint8(white), luma // 3)
    ch, cw = (h + 1) // 2, (w + 1) // 2  # neutral chroma under the box, so the text stays white
    if layout.format == "NV12":
        plane(data, layout, 1, ch, cw, 2)[...] = 128
    else:
        plane(data, layout, 1, ch, cw)[...] = 128
        plane(data, layout, 2, ch, cw)[...] = 128
