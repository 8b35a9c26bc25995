"""Resize methods: how the crop box of a view becomes the model's pixels, one implementation for training and runtime.

`edgekd.preprocess.render_view` is the one entry point (the distill data path, the teacher cache, the export's
calibration and parity images and the runtime's frames all call it); this module holds the methods it dispatches to.
A student's `Preprocess.resize_method` names one, is saved in the run's config and in the bundle's edgekd.json, so a
student runs on exactly the pixels it was trained on.

- "pillow": Pillow's `resize(..., box=...)` with the `interpolation` filter (antialiased; bicubic is the CLIP
  teachers' own). The default, and what every cache, run and bundle without a `resize_method` used.
- "cv2-area-linear": OpenCV: halvings by INTER_AREA (2x2 box means, OpenCV's SIMD fast path; a 3x3 or 4x4 box is
  3-4x slower than two halvings) while the crop is at least twice the model's size, then INTER_LINEAR to the model's
  size (a < 2x step, so linear does not alias). Needs OpenCV (`pip install 'edgekd[camera]'`).
- "numpy-area-linear": the same two steps in numpy (OpenCV's fixed-point linear weights); numpy only, and the
  fallback of "cv2-area-linear" on a runtime without OpenCV (bit-exact with it when shrinking on OpenCV 5.0 here,
  within 1 grey level in general: tests/test_resize.py).

The array methods crop whole pixels: the view's box is rounded, then trimmed (centred) to a multiple of the decimation
factor, so the student's view is off the teacher's exact box by less than half the factor (in source pixels).
They resample each channel alone, so BGR frames are resized as they are and reordered at the model's size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgekd._optional import MissingDependencyError, is_available, require

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in whole source pixels
ArrayResize = Callable[[np.ndarray, tuple[int, int]], np.ndarray]  # uint8 [h, w, C], (H, W) -> uint8 [H, W, C]

PILLOW = "pillow"
_LINEAR_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS: linear weights in 1/2048ths


@dataclass(frozen=True)
class ResizeMethod:
    name: str
    fn: ArrayResize | None  # None: the Pillow path (edgekd.preprocess)
    needs: str | None = None  # optional module it imports
    fallback: str | None = None  # a numpy-only method close to this one
    note: str = ""


RESIZE_METHODS: dict[str, ResizeMethod] = {PILLOW: ResizeMethod(PILLOW, None, note="Pillow resize with the filter "
                                                                "named by `interpolation` (antialiased)")}


def register(name: str, needs: str | None = None, fallback: str | None = None, note: str = "") -> Callable:
    def deco(fn: ArrayResize) -> ArrayResize:
        RESIZE_METHODS[name] = ResizeMethod(name, fn, needs, fallback, note)
        return fn
    return deco


def get_method(name: str) -> ResizeMethod:
    try:
        return RESIZE_METHODS[name]
    except KeyError:
        raise ValueError(f"unknown resize_method {name!r}; use one of {sorted(RESIZE_METHODS)}") from None


def check_available(name: str, where: str = "") -> None:
    """Raise MissingDependencyError (one line, naming the extra and the fallback) when `name` cannot run here."""
    m = get_method(name)
    if m.needs and not is_available(m.needs):
        extra = {"cv2": "camera"}.get(m.needs, m.needs)
        alt = f" (or load it with resize_fallback=True to use the numpy-only {m.fallback!r})" if m.fallback else ""
        raise MissingDependencyError(f"{where + ': ' if where else ''}this model resizes frames with {name!r}, which "
                                     f"needs {m.needs}: pip install 'edgekd[{extra}]'{alt}")


def describe(preprocess: dict | None) -> str | None:
    """One line on how a saved preprocessing dict (cache, run, bundle) resizes; None without one."""
    if not preprocess:
        return None
    method = preprocess.get("resize_method")
    filt = preprocess.get("interpolation", "bicubic")
    if method is None:
        return f"pillow {filt} (recorded before resize methods existed: Pillow, as then)"
    m = RESIZE_METHODS.get(method)
    if m is None:
        return f"{method} (unknown to this edgekd: upgrade it)"
    if method == PILLOW:
        return f"pillow {filt}"
    needs = f"; needs {m.needs} (pip install 'edgekd[camera]'), numpy fallback {m.fallback!r}" if m.needs else ""
    return f"{method} ({m.note}{needs})"


def decimation(src: tuple[int, int], dst: tuple[int, int]) -> tuple[int, int]:
    """Decimation factors (ky, kx): per axis the largest power of two k with src // k >= dst."""
    return tuple(1 << max(0, (s // d).bit_length() - 1) for s, d in zip(src, dst))


def pixel_box(box: tuple[float, float, float, float], shape: tuple[int, int], size: tuple[int, int]) -> Box:
    """A float crop box inside an image of `shape` (H, W) -> whole pixels, trimmed (centred) to a multiple of the
    decimation factor towards `size` (H, W), at least 1 pixel."""
    h, w = shape
    x0, y0 = min(max(round(box[0]), 0), w - 1), min(max(round(box[1]), 0), h - 1)
    x1, y1 = min(max(round(box[2]), x0 + 1), w), min(max(round(box[3]), y0 + 1), h)
    ky, kx = decimation((y1 - y0, x1 - x0), size)
    rx, ry = (x1 - x0) % kx, (y1 - y0) % ky
    x0, y0 = x0 + rx // 2, y0 + ry // 2
    return x0, y0, x1 - (rx - rx // 2), y1 - (ry - ry // 2)


def resize_array(crop: np.ndarray, size: tuple[int, int], method: str) -> np.ndarray:
    """uint8 [h, w, C] (a crop; strided views are fine) -> uint8 [H, W, C] with an array method. A crop already at
    `size` is returned as it is (every method is the identity there)."""
    if crop.shape[:2] == tuple(size):
        return crop
    fn = get_method(method).fn
    if fn is None:
        raise ValueError(f"resize_method {method!r} renders PIL images (edgekd.preprocess.render_view), not arrays")
    return fn(crop, size)


# --- OpenCV ---------------------------------------------------------------------------------------------------------

@register("cv2-area-linear", needs="cv2", fallback="numpy-area-linear",
          note="OpenCV INTER_AREA halvings, then INTER_LINEAR")
def cv2_area_linear(crop: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    cv2 = _cv2()
    ky, kx = decimation(crop.shape[:2], size)
    while ky > 1 or kx > 1:
        (h, w), sy, sx = crop.shape[:2], min(ky, 2), min(kx, 2)
        crop = cv2.resize(crop[: h // sy * sy, : w // sx * sx], (w // sx, h // sy), interpolation=cv2.INTER_AREA)
        ky, kx = ky // sy, kx // sx
    if crop.shape[:2] == tuple(size):
        return crop
    return cv2.resize(crop, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def _cv2():
    try:
        return require("cv2", purpose="the 'cv2-area-linear' resize")
    except MissingDependencyError as e:
        raise MissingDependencyError(f"{str(e).split('  [')[0]} (or use resize_method 'numpy-area-linear')") from e


# --- numpy ----------------------------------------------------------------------------------------------------------

@register("numpy-area-linear", note="numpy: 2x2 box-mean halvings, then OpenCV-style fixed-point linear")
def numpy_area_linear(crop: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    ky, kx = decimation(crop.shape[:2], size)
    while ky > 1 or kx > 1:
        (h, w), sy, sx = crop.shape[:2], min(ky, 2), min(kx, 2)
        crop = box_decimate(crop[: h // sy * sy, : w // sx * sx], sy, sx)
        ky, kx = ky // sy, kx // sx
    if crop.shape[:2] == tuple(size):
        return crop
    return linear_fixed(crop, size)


def box_decimate(a: np.ndarray, ky: int, kx: int) -> np.ndarray:
    """uint8 [h*ky, w*kx, C] -> uint8 [h, w, C]: mean of each ky x kx block, rounded as OpenCV's INTER_AREA does at
    integer factors (2x2: half up; otherwise the float mean rounded half to even)."""
    if (ky, kx) == (2, 2):  # rows first (contiguous), then columns of half the data: ~2x faster than 4 strided adds
        rows = a[0::2].astype(np.uint16)
        rows += a[1::2]
        acc = rows[:, 0::2] + rows[:, 1::2]
        acc += 2
        acc >>= 2
        return acc.astype(np.uint8)
    acc = np.zeros((a.shape[0] // ky, a.shape[1] // kx, a.shape[2]), np.uint16 if ky * kx <= 257 else np.uint32)
    for dy in range(ky):
        for dx in range(kx):
            acc += a[dy::ky, dx::kx]
    return np.rint(acc * np.float32(1 / (ky * kx))).astype(np.uint8)


def linear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's INTER_LINEAR taps (half-pixel centres, clamped at the edges): indices i0, i1 and weights w0, w1 in
    1/2048ths (each rounded from float32, as cv::saturate_cast<short> does)."""
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5).astype(np.float32)
    i0 = np.floor(f).astype(np.int64)
    f = f - i0.astype(np.float32)
    low, high = i0 < 0, i0 >= src - 1
    f[low | high] = 0
    i0 = np.clip(i0, 0, src - 1)
    i1 = np.minimum(i0 + 1, src - 1)
    scale = np.float32(1 << _LINEAR_BITS)
    w0 = np.rint((np.float32(1) - f) * scale).astype(np.int32)
    w1 = np.rint(f * scale).astype(np.int32)
    return i0, i1, w0, w1


def linear_fixed(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [h, w, C] -> uint8 [H, W, C]: bilinear in OpenCV's fixed point (each row, then between rows with the
    rounding of OpenCV's SIMD vertical pass: bit-exact with cv2.INTER_LINEAR when shrinking, on OpenCV 4.x/5.0)."""
    h, w = a.shape[:2]
    xi0, xi1, xw0, xw1 = linear_taps(w, size[1])
    yi0, yi1, yw0, yw1 = linear_taps(h, size[0])
    rows = np.union1d(yi0, yi1)  # only the source rows the output reads
    src = a[rows].astype(np.int32)
    horiz = src[:, xi0] * xw0[None, :, None] + src[:, xi1] * xw1[None, :, None]  # [r, W, C] in 1/2048ths
    horiz >>= 4
    top, bottom = horiz[np.searchsorted(rows, yi0)], horiz[np.searchsorted(rows, yi1)]
    top *= yw0[:, None, None]
    top >>= 16
    bottom *= yw1[:, None, None]
    bottom >>= 16
    top += bottom + 2
    top >>= 2
    return np.clip(top, 0, 255).astype(np.uint8)
