"""Calibration and held-out parity images, rendered with the student's own eval preprocessing (numpy + Pillow).

Images are rendered once as uint8 [N,H,W,3] (`ImageSet.frames`); `as_model_input` turns them into what the exported
graph takes ("pixels": normalised float32 [N,3,H,W]; "frames": the uint8 array itself).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekd import EdgekdError
from edgekd._io import sha256_json
from edgekd.data.images import BadImageError, load_rgb
from edgekd.preprocess import Preprocess

log = logging.getLogger(__name__)

DEFAULT_CALIB_IMAGES = 300
MIN_CALIB_IMAGES = 8  # INT8 calibration below this is a guess
MIN_VAL_FRACTION = 0.2  # held out of --calib at least, when the gate's minimum is waived (--small-gate-ok)
SEED = 0


@dataclass
class ImageSet:
    """Rendered images. frames uint8 [N,H,W,3]; labels int64 [N] (-1 unlabeled) into `classes`; entries hash input."""

    frames: np.ndarray
    labels: np.ndarray
    classes: list[str]
    paths: list[str]
    entries: list[dict] = field(default_factory=list)  # {"path", "size", "hash"} of the images used
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}
    root: str = ""

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def sha256(self) -> str:
        return sha256_json({"classes": self.classes, "entries": self.entries})

    def subset(self, idx: np.ndarray | list[int]) -> ImageSet:
        idx = list(idx)
        return ImageSet(self.frames[idx], self.labels[idx], list(self.classes), [self.paths[i] for i in idx],
                        [self.entries[i] for i in idx], [], self.root)

    def describe(self, method: str | None = None) -> dict:
        d = {"root": self.root, "images": len(self), "skipped": len(self.skipped), "sha256": self.sha256,
             "classes": len(self.classes)}
        if method is not None:
            d["method"] = method
        return d


class OriginalFrames:
    """The images of an ImageSet as whole uint8 [1, H, W, 3] frames, decoded one at a time (a model that resizes in
    its graph takes them as they are; sizes differ, so they are not stacked)."""

    def __init__(self, images: ImageSet):
        self.root, self.paths = Path(images.root), list(images.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(load_rgb(self.root / self.paths[i]), dtype=np.uint8)[None]


def as_model_input(frames: np.ndarray, input_name: str, preprocess: Preprocess) -> np.ndarray:
    """uint8 [N,H,W,3] -> the exported graph's input: float32 [N,3,H,W] ("pixels") or the frames ("frames")."""
    if input_name == "frames":
        return np.ascontiguousarray(frames, dtype=np.uint8)
    if input_name == "pixels":
        return preprocess.normalize(frames)
    raise EdgekdError(f"unknown model input {input_name!r}; expected 'pixels' or 'frames'")


def load_image_set(folder: str | os.PathLike, preprocess: Preprocess, max_images: int | None = None,
                   option: str = "--calib", seed: int = SEED) -> ImageSet:
    """Index `folder` (ImageFolder or flat, recursive), sample up to `max_images` deterministically, render each with
    the eval view of `preprocess`. Unreadable images are skipped (and listed); none readable -> EdgekdError."""
    from tqdm.auto import tqdm

    from edgekd.data.index import build_index

    folder = Path(folder)
    if not folder.is_dir():
        raise EdgekdError(f"{option} {folder}: no such folder")
    try:
        index = build_index(folder)
    except EdgekdError as e:
        raise EdgekdError(f"{option} {folder}: no image files found (jpg, png, bmp, webp, ...); point it at a folder "
                          "of representative images") from e
    order = np.random.default_rng(seed).permutation(len(index))
    h, w = preprocess.size
    frames, labels, paths, entries, skipped = [], [], [], [], []
    for i in tqdm(order, desc=f"rendering {option.lstrip('-')} images", unit="img", leave=False):
        if max_images is not None and len(frames) >= max_images:
            break
        entry = index.entries[int(i)]
        try:
            img = load_rgb(index.abs_path(int(i)))
        except BadImageError as e:
            skipped.append({"path": entry.path, "reason": e.reason})
            continue
        frames.append(preprocess.render(img))
        labels.append(entry.label)
        paths.append(entry.path)
        entries.append({"path": entry.path, "size": entry.size, "hash": entry.hash})
    if skipped:
        shown = "; ".join(f"{s['path']} ({s['reason']})" for s in skipped[:10])
        log.warning("%s %s: skipped %d unreadable image(s): %s%s", option, folder, len(skipped), shown,
                    f"; ... and {len(skipped) - 10} more" if len(skipped) > 10 else "")
    if not frames:
        raise EdgekdError(f"{option} {folder}: none of its {len(index)} image file(s) could be read")
    arr = np.stack(frames).astype(np.uint8) if frames else np.zeros((0, h, w, 3), np.uint8)
    return ImageSet(arr, np.asarray(labels, np.int64), list(index.classes), paths, entries, skipped, str(folder))


def split_calib_val(images: ImageSet, n_val: int, seed: int = SEED) -> tuple[ImageSet, ImageSet]:
    """Deterministic disjoint split of one set into (calibration, held-out parity) parts, `n_val` held out."""
    n = len(images)
    if not 0 < n_val <= n:
        raise EdgekdError(f"cannot hold out {n_val} of {n} image(s) for the parity gate")
    perm = np.random.default_rng([seed, 1]).permutation(n)
    return images.subset(np.sort(perm[n_val:])), images.subset(np.sort(perm[:n_val]))


def plan_held_out(available: int, calib_images: int, val_images: int, min_gate: int, needs_calib: bool,
                  folder: str | os.PathLike) -> int:
    """How many of `available` --calib images to hold out for the gate when there is no --val: up to `val_images`,
    at least `min_gate`, leaving `calib_images` (at least MIN_CALIB_IMAGES) for calibration when `needs_calib`.
    Says how many images are missing when the folder cannot give both."""
    if not needs_calib:
        return min(available, val_images)
    if available < min_gate + MIN_CALIB_IMAGES:
        raise EdgekdError(f"--calib {folder}: {available} usable image(s), but the parity gate needs {min_gate} "
                          f"held-out images besides at least {MIN_CALIB_IMAGES} for calibration: add "
                          f"{min_gate + MIN_CALIB_IMAGES - available} more images, pass --val DIR (held-out images), "
                          "or accept a smaller gate with --small-gate-ok")
    n_val = min(val_images, max(min_gate, available - calib_images, round(available * MIN_VAL_FRACTION)))
    n_val = min(n_val, available - MIN_CALIB_IMAGES)
    return n_val
