"""Image preprocessing shared by every stage (teacher cache, student training, export parity, runtime).

numpy + Pillow (+ OpenCV for the resize methods that name it), so the on-device runtime uses exactly the same code
as training. Every view of an image is a crop box in the original image's pixel coordinates plus a horizontal flip;
`render_view` turns a view into pixels at any resolution with the `resize_method` of edgekd.resize (by default one
Pillow ``resize(..., box=...)`` call). That is how the teacher (at 224) and a student (at, say, 128) see the same crop,
and how a student's runtime renders camera frames bit for bit as its training rendered the cached views.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from edgekd.data.images import as_rgb_frame, frame_to_image
from edgekd.resize import PILLOW, get_method, pixel_box, resize_array

# (x0, y0, x1, y1, flip): crop box in source pixels, flip in {0, 1}
ViewParams = tuple[float, float, float, float, float]

_INTERPOLATION = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}
RESIZE_MODES = ("shortest", "squash", "longest")
INTERPOLATIONS = tuple(_INTERPOLATION)


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes a model input: render the eval view at `size`, scale to [0, 1], normalise.

    size: (height, width) of the model input.
    resize_mode: 'shortest' (resize the short side, centre crop), 'squash' (resize to size), 'longest' (pad to square).
    resize_method: how a view's box becomes pixels (edgekd.resize.RESIZE_METHODS); 'pillow' uses `interpolation`.
    """

    size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill: int = 0
    resize_method: str = PILLOW
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        size = self.size
        if isinstance(size, int):
            size = (size, size)
        object.__setattr__(self, "size", (int(size[0]), int(size[1])))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.interpolation not in _INTERPOLATION:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; use one of {sorted(_INTERPOLATION)}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"unknown resize_mode {self.resize_mode!r}; use one of {RESIZE_MODES}")
        get_method(self.resize_method)
        if self.resize_method != PILLOW and self.resize_mode == "longest":
            raise ValueError(f"resize_method {self.resize_method!r} crops inside the image; resize_mode 'longest' "
                             "(padding) needs resize_method 'pillow'")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean/std must be 3 values with std > 0, got mean={self.mean} std={self.std}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = list(self.size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        d.pop("extra")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        keys = {"size", "mean", "std", "interpolation", "resize_mode", "fill", "resize_method"}  # no key: pillow
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in keys})

    def with_size(self, size: int | tuple[int, int]) -> Preprocess:
        d = self.to_dict()
        d["size"] = (size, size) if isinstance(size, int) else tuple(size)
        return Preprocess.from_dict(d)

    def eval_view(self, width: int, height: int) -> ViewParams:
        """The deterministic evaluation view (view 0) of a `width` x `height` image."""
        return eval_view(width, height, self.size, self.resize_mode)

    def region_view(self, box: Sequence[float], width: int, height: int) -> ViewParams | None:
        """The eval view of region `box` of a `width` x `height` frame (see `region_view`)."""
        return region_view(box, width, height, self.size, self.resize_mode)

    def render(self, img: Image.Image | np.ndarray, view: ViewParams | None = None, color: str = "rgb") -> np.ndarray:
        """PIL image or uint8 [H, W, 3] frame (`color` order) -> uint8 [h, w, 3] RGB for `view` (default: the eval
        view), with this preprocessing's resize method."""
        if isinstance(img, np.ndarray):
            img, color = as_rgb_frame(img, color)  # clear errors for bad frames before their size is used
        if view is None:
            view = self.eval_view(*image_size(img))
        return render_view(img, view, self.size, self.interpolation, self.fill, self.resize_method, color)

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3] or [B, H, W, 3] -> float32 [3, H, W] or [B, 3, H, W]."""
        return normalize(pixels, self.mean, self.std)

    def __call__(self, img: Image.Image, view: ViewParams | None = None) -> np.ndarray:
        """PIL RGB image -> float32 [3, H, W], normalised."""
        return self.normalize(self.render(img, view))


def eval_view(width: int, height: int, size: tuple[int, int], resize_mode: str = "shortest") -> ViewParams:
    """Crop box of the eval view. 'shortest' = centre crop with the target aspect ratio; 'squash' = whole image;
    'longest' = a box larger than the image (padded with the fill colour when rendered)."""
    th, tw = size
    target_ar = tw / th
    if resize_mode == "squash":
        return (0.0, 0.0, float(width), float(height), 0.0)
    if resize_mode == "shortest":
        if width / height > target_ar:  # too wide: full height
            cw, ch = height * target_ar, float(height)
        else:
            cw, ch = float(width), width / target_ar
    elif resize_mode == "longest":
        if width / height > target_ar:
            cw, ch = float(width), width / target_ar
        else:
            cw, ch = height * target_ar, float(height)
    else:
        raise ValueError(f"unknown resize_mode {resize_mode!r}")
    x0, y0 = (width - cw) / 2, (height - ch) / 2
    return (x0, y0, x0 + cw, y0 + ch, 0.0)


def region_view(box: Sequence[float], width: int, height: int, size: tuple[int, int],
                resize_mode: str = "shortest") -> ViewParams | None:
    """The eval view of a region of a `width` x `height` frame: `eval_view` of the crop `clip_box` keeps of `box`,
    in frame coordinates, for renders that cannot cut the crop out first (YUV planes: edgekd.gst.frames); None when
    nothing of the box is left. Pillow's filters read past the box inside the frame, so near the box's edges that
    render can differ from rendering the crop alone (what classify_regions does), by many grey levels on noisy
    pixels."""
    clipped = clip_box(box, width, height)
    if clipped is None:
        return None
    x0, y0, x1, y1 = clipped
    vx0, vy0, vx1, vy1, flip = eval_view(x1 - x0, y1 - y0, size, resize_mode)
    return (x0 + vx0, y0 + vy0, x0 + vx1, y0 + vy1, flip)


def clip_box(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int] | None:
    """A region box (x0, y0, x1, y1 in frame pixels) rounded to whole pixels and clipped to a `width` x `height`
    frame; None when nothing of it is left (outside the frame, or under one pixel wide or high). ValueError for a box
    that is not 4 finite numbers."""
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"a region box is (x0, y0, x1, y1) in pixels, got {box!r}") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"region box {box!r} has a coordinate that is not a finite number")
    x0, x1 = (min(max(round(v), 0), width) for v in (x0, x1))
    y0, y1 = (min(max(round(v), 0), height) for v in (y0, y1))
    return None if x1 - x0 < 1 or y1 - y0 < 1 else (x0, y0, x1, y1)


def sample_train_view(
    rng: np.random.Generator,
    width: int,
    height: int,
    scale: tuple[float, float] = (0.35, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_p: float = 0.5,
) -> ViewParams:
    """RandomResizedCrop + horizontal flip, drawn from `rng` (torchvision's algorithm, in numpy)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    box = None
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = math.sqrt(target_area * aspect)
        h = math.sqrt(target_area / aspect)
        if 0 < w <= width and 0 < h <= height:
            x0 = rng.uniform(0, width - w)
            y0 = rng.uniform(0, height - h)
            box = (x0, y0, x0 + w, y0 + h)
            break
    if box is None:  # fall back to a centre crop clamped to the ratio range
        in_ratio = width / height
        if in_ratio < ratio[0]:
            w, h = float(width), width / ratio[0]
        elif in_ratio > ratio[1]:
            w, h = height * ratio[1], float(height)
        else:
            w, h = float(width), float(height)
        x0, y0 = (width - w) / 2, (height - h) / 2
        box = (x0, y0, x0 + w, y0 + h)
    flip = 1.0 if rng.uniform() < flip_p else 0.0
    return (*(float(v) for v in box), flip)


def image_size(img: Image.Image | np.ndarray) -> tuple[int, int]:
    """(width, height) of a PIL image or an [H, W, ...] frame."""
    return (img.shape[1], img.shape[0]) if isinstance(img, np.ndarray) else img.size


def render_view(img: Image.Image | np.ndarray, view: ViewParams, size: tuple[int, int], interpolation: str = "bicubic",
                fill: int = 0, resize_method: str = PILLOW, color: str = "rgb") -> np.ndarray:
    """Crop `view`'s box out of `img` (a PIL image, or a uint8 [H, W, 3] frame in `color` order), resize it to `size`
    (H, W) with `resize_method` and flip: -> uint8 [H, W, 3] RGB. A frame already at `size` whose box is the whole
    frame is not resampled (every method is the identity there: camera caps negotiated at the model's size)."""
    if isinstance(img, np.ndarray) and img.shape[:2] == tuple(size) and _whole(view, img.shape):
        return finish_pixels(*as_rgb_frame(img, color), view[4])
    if resize_method == PILLOW:
        img = frame_to_image(img, color) if isinstance(img, np.ndarray) else img
        return _render_pillow(img, view, size, interpolation, fill)
    frame, color = as_rgb_frame(img, color) if isinstance(img, np.ndarray) else (np.asarray(img.convert("RGB")), "rgb")
    x0, y0, x1, y1 = pixel_box(view[:4], frame.shape[:2], size)
    return finish_pixels(resize_array(frame[y0:y1, x0:x1], size, resize_method), color, view[4])


def _whole(view: ViewParams, shape: tuple[int, ...]) -> bool:
    return tuple(view[:4]) == (0, 0, shape[1], shape[0])


def finish_pixels(pixels: np.ndarray, color: str, flip: float) -> np.ndarray:
    """uint8 [H, W, 3] in `color` order -> RGB, flipped when `flip` >= 0.5, C-contiguous. Reversing each row's bytes
    flips and swaps BGR<->RGB in one fast pass (numpy copies a reversed pixel axis alone ~5x slower)."""
    if flip >= 0.5:
        h, w = pixels.shape[:2]
        pixels = np.ascontiguousarray(pixels).reshape(h, w * 3)[:, ::-1].reshape(h, w, 3)  # flipped, channels swapped
        color = "rgb" if color == "bgr" else "bgr"
    if color == "bgr":
        cv2 = sys.modules.get("cv2")  # already imported by an OpenCV resize: its swap is ~10x faster (same bytes)
        if cv2 is not None and hasattr(cv2, "cvtColor"):
            return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_BGR2RGB)
        out = np.empty(pixels.shape, np.uint8)  # three plane copies (fancy indexing returns a non-C layout)
        for c in range(3):
            out[..., c] = pixels[..., 2 - c]
        return out
    return np.ascontiguousarray(pixels)


def _render_pillow(img: Image.Image, view: ViewParams, size: tuple[int, int], interpolation: str,
                   fill: int) -> np.ndarray:
    x0, y0, x1, y1, flip = view
    if img.mode != "RGB":
        img = img.convert("RGB")
    w, h = img.size
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:  # 'longest' mode: pad so the box lies inside the canvas
        pad_x, pad_y = max(0.0, -x0, x1 - w), max(0.0, -y0, y1 - h)
        px, py = math.ceil(pad_x), math.ceil(pad_y)
        canvas = Image.new("RGB", (w + 2 * px, h + 2 * py), (fill, fill, fill))
        canvas.paste(img, (px, py))
        img, x0, y0, x1, y1 = canvas, x0 + px, y0 + py, x1 + px, y1 + py
    out = img.resize((size[1], size[0]), pillow_filter(interpolation), box=(x0, y0, x1, y1))
    return finish_pixels(np.asarray(out, dtype=np.uint8), "rgb", flip)


def pillow_filter(interpolation: str) -> Image.Resampling:
    """Preprocess.interpolation -> the Pillow resampling filter every Pillow render uses."""
    return _INTERPOLATION[interpolation]


def normalize(pixels: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """uint8 [..., H, W, 3] -> float32 [..., 3, H, W] with (x / 255 - mean) / std, computed as x * scale + shift per
    channel plane (the same float32 constants as the in-graph preprocessing of edgekd.export.onnx)."""
    scale, shift = normalize_constants(mean, std)
    x = np.ascontiguousarray(np.moveaxis(pixels, -1, -3)).astype(np.float32)  # transpose the uint8 bytes, then cast
    x *= scale.reshape(3, 1, 1)
    x += shift.reshape(3, 1, 1)
    return x


def normalize_constants(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """float32 (scale [3], shift [3]) with (x / 255 - mean) / std == x * scale + shift."""
    mean64, std64 = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    return (1.0 / (255.0 * std64)).astype(np.float32), (-mean64 / std64).astype(np.float32)
