"""Augmentation of the student's input on top of a cached view, drawn so that the cached teacher target stays valid.

The teacher embedded a view's whole box; the student may see a crop inside that box (most of the content, so the
target still describes it) and its pixels with colour jitter (the teacher is close to invariant to mild photometric
changes). Nothing here changes which view or target is drawn: with both settings off, no random number is drawn
and training is bit for bit what it was without augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekd.preprocess import ViewParams, sample_train_view

# aspect-ratio freedom of the inner crop, around the cached box's own ratio (the render squashes both to the input)
RATIO_JITTER = 0.9


@dataclass(frozen=True)
class Augment:
    """crop: smallest fraction of the cached box's area an inner crop keeps (1 = no crop).
    jitter: strength S of colour jitter: brightness, contrast and saturation factors each in [1 - S, 1 + S] (0 = off).
    """

    crop: float = 1.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.crop <= 1:
            raise ValueError(f"crop must be in (0, 1], got {self.crop}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")

    @property
    def enabled(self) -> bool:
        return self.crop < 1 or self.jitter > 0

    def inner_view(self, rng: np.random.Generator, view: ViewParams) -> ViewParams:
        """A box inside `view`'s box covering crop..1 of its area (its flip kept); `view` itself when crop is off."""
        if self.crop >= 1:
            return view
        x0, y0, x1, y1, flip = view
        w, h = x1 - x0, y1 - y0
        ratio = w / h
        bx0, by0, bx1, by1, _ = sample_train_view(rng, w, h, (self.crop, 1.0),
                                                  (ratio * RATIO_JITTER, ratio / RATIO_JITTER), flip_p=0.0)
        return (x0 + bx0, y0 + by0, x0 + bx1, y0 + by1, flip)

    def colour(self, rng: np.random.Generator, pixels: np.ndarray) -> np.ndarray:
        """Brightness, contrast and saturation jitter of uint8 [H, W, 3] RGB pixels (torchvision's definitions, in a
        fixed order, factors from `rng`); `pixels` unchanged when jitter is off."""
        if self.jitter <= 0:
            return pixels
        import torch
        from torchvision.transforms.v2 import functional as F

        lo, hi = 1 - self.jitter, 1 + self.jitter
        brightness, contrast, saturation = rng.uniform(lo, hi, size=3)
        x = torch.tensor(pixels).permute(2, 0, 1)  # a copy: rendered pixels may be read-only
        x = F.adjust_brightness(x, float(brightness))
        x = F.adjust_contrast(x, float(contrast))
        x = F.adjust_saturation(x, float(saturation))
        return np.ascontiguousarray(x.permute(1, 2, 0).numpy())
