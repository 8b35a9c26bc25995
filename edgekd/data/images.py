"""Robust image decoding: every odd file either becomes an RGB image or a clear `BadImageError`.

numpy + Pillow only (the runtime uses it too).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from edgekd import EdgekdError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
MAX_PIXELS = 64_000_000  # decompression-bomb guard: ~8000x8000; larger images are skipped, not decoded

# Truncated files must fail loudly, not decode into grey blocks.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class BadImageError(EdgekdError):
    """A file that cannot be used as an image; `reason` is a short machine-friendly tag."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str = ""):
        self.path, self.reason, self.detail = str(path), reason, detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


def is_image_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def load_rgb(path: str | os.PathLike, max_pixels: int = MAX_PIXELS,
             at_least: tuple[int, int] | None = None) -> Image.Image:
    """Decode `path` fully into an 8-bit RGB image, or raise `BadImageError`.

    Handles grayscale, palette, CMYK, 16-bit and alpha images (alpha is composited over black, as the eye of a
    camera would see nothing behind it). Zero-byte, truncated, non-image and oversized files raise.
    at_least: (w, h): a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, Pillow's `draft`)
    as long as both sides stay at least this large; other formats decode in full. Training never uses it.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise BadImageError(path, "unreadable", e.strerror or str(e)) from e
    if size == 0:
        raise BadImageError(path, "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise BadImageError(path, "too large", f"{w}x{h} > {max_pixels} pixels")
                if w < 1 or h < 1:
                    raise BadImageError(path, "empty image", f"{w}x{h}")
                if at_least is not None and img.format == "JPEG":
                    img.draft("RGB", at_least)
                img.load()
                return to_rgb(img)
    except BadImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImageError(path, "too large", str(e)) from e
    except UnidentifiedImageError as e:
        raise BadImageError(path, "not an image") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # PIL signals truncation/corruption this way
        raise BadImageError(path, "corrupt image", str(e)) from e


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB."""
    if img.mode == "RGB":
        return img.copy() if img.readonly else img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr8 = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def as_rgb_frame(frame: np.ndarray, color: str = "rgb") -> tuple[np.ndarray, str]:
    """Check a uint8 [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] numpy frame (RGB or BGR order) -> (uint8 [H, W, 3],
    its channel order), with clear errors for bad frames. An HxWx3 frame passes as it is (no copy); grey frames come
    back as RGB."""
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"expected a numpy array, got {type(frame).__name__}")
    if color not in ("rgb", "bgr"):
        raise ValueError(f"color must be 'rgb' or 'bgr', got {color!r}")
    if frame.dtype != np.uint8:
        raise ValueError(f"expected a uint8 frame, got dtype {frame.dtype}; convert with frame.astype(np.uint8) "
                         "(scale float images in [0, 1] by 255 first)")
    if frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an HxWx3 frame (or HxW grey, HxWx4), got shape {frame.shape}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"empty frame of shape {frame.shape}")
    if frame.shape[2] == 1:
        return np.repeat(frame, 3, axis=2), "rgb"
    return frame[:, :, :3], color


def frame_to_image(frame: np.ndarray, color: str = "rgb") -> Image.Image:
    """uint8 [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] numpy frame (RGB or BGR order) -> PIL RGB image, with clear
    errors for bad frames. BGR frames are reordered by Pillow's unpacker while it copies the pixels (no extra pass)."""
    frame, color = as_rgb_frame(frame, color)
    frame = np.ascontiguousarray(frame)
    height, width = frame.shape[:2]
    return Image.frombuffer("RGB", (width, height), frame, "raw", "BGR" if color == "bgr" else "RGB", 0, 1)
