"""Embed an image dataset with one or more encoders in a single decoding pass.

Every image is decoded once (`load_rgb`), rendered once per distinct `Preprocess` (student and teacher see the same
eval-view box at their own resolutions) and fed to each encoder in batches. Unreadable images are skipped and
reported, never silently replaced: their rows are zero and `valid` is False.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd import EdgekdError
from edgekd.data.images import BadImageError, load_rgb
from edgekd.preprocess import Preprocess

log = logging.getLogger(__name__)


@dataclass
class Encoder:
    """A named embedding function over rendered views: uint8 [B, H, W, 3] (at `preprocess.size`) -> float [B, D]."""

    name: str
    preprocess: Preprocess
    fn: Callable[[np.ndarray], np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Embeddings:
    """Result of `embed_dataset`: per encoder float32 [N, D] (zero rows where invalid), valid bool [N], skipped."""

    embeds: dict[str, np.ndarray]
    valid: np.ndarray
    skipped: list[dict[str, str]]


def torch_encoder(name: str, module: Any, preprocess: Preprocess, device: Any) -> Encoder:
    """Wrap a torch module [B,3,H,W] -> [B,D] (e.g. a Student in eval mode) as an Encoder."""
    import torch

    from edgekd.devices import autocast

    module = module.to(device).eval()

    @torch.no_grad()
    def fn(pixels: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(preprocess.normalize(pixels)).to(device)
        with autocast(device):
            out = module(x)
        return out.float().cpu().numpy()

    return Encoder(name, preprocess, fn)


def teacher_encoder(teacher: Any) -> Encoder:
    """An open_clip `Teacher` as an Encoder (its own preprocessing: size, mean/std, resize mode)."""
    return Encoder("teacher", teacher.preprocess, lambda px: teacher.encode_pixels(px).cpu().numpy(),
                   {"teacher_id": teacher.teacher_id})


class _Views:
    """torch Dataset: index i -> (i, {size key: uint8 [H, W, 3]} or None, error reason)."""

    def __init__(self, paths: list[Path], preprocesses: dict[str, Preprocess]):
        self.paths, self.preprocesses = paths, preprocesses

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, dict[str, np.ndarray] | None, str]:
        try:
            img = load_rgb(self.paths[i])
        except BadImageError as e:
            return i, None, e.reason + (f" ({e.detail})" if e.detail else "")
        return i, {k: pp.render(img) for k, pp in self.preprocesses.items()}, ""


def _collate(batch: list) -> list:
    return batch


def _pp_key(pp: Preprocess) -> str:
    return repr(sorted(pp.to_dict().items()))


def embed_dataset(
    paths: list[Path],
    encoders: list[Encoder],
    batch_size: int = 64,
    workers: int = 0,
    desc: str = "embedding",
    rel_paths: list[str] | None = None,
) -> Embeddings:
    """Run every encoder over every image. paths [N] -> Embeddings (embeds[name] float32 [N, D]).

    Raises EdgekdError when no image at all could be decoded.
    """
    import torch
    from tqdm.auto import tqdm

    if not encoders:
        raise EdgekdError("nothing to embed with (no encoder)")
    if batch_size < 1:
        raise EdgekdError(f"--batch-size must be >= 1, got {batch_size}")
    pps = {_pp_key(e.preprocess): e.preprocess for e in encoders}
    loader = torch.utils.data.DataLoader(_Views(paths, pps), batch_size=batch_size, shuffle=False,
                                         num_workers=workers, collate_fn=_collate)
    n = len(paths)
    rel_paths = rel_paths or [str(p) for p in paths]
    embeds: dict[str, np.ndarray | None] = {e.name: None for e in encoders}
    valid = np.zeros(n, dtype=bool)
    skipped: list[dict[str, str]] = []
    with tqdm(total=n, desc=desc, unit="img", disable=None) as bar:
        for batch in loader:
            ok = [(i, views) for i, views, _ in batch if views is not None]
            skipped += [{"path": rel_paths[i], "reason": why} for i, views, why in batch if views is None]
            if ok:
                idx = np.array([i for i, _ in ok])
                valid[idx] = True
                for enc in encoders:
                    key = _pp_key(enc.preprocess)
                    out = np.asarray(enc.fn(np.stack([v[key] for _, v in ok])), dtype=np.float32)
                    if embeds[enc.name] is None:
                        embeds[enc.name] = np.zeros((n, out.shape[1]), dtype=np.float32)
                    embeds[enc.name][idx] = out
            bar.update(len(batch))
    for s in skipped:
        log.warning("skipped unreadable image %s: %s", s["path"], s["reason"])
    if not valid.any():
        raise EdgekdError(f"none of the {n} images could be decoded (first: {skipped[0]['path']}: "
                          f"{skipped[0]['reason']})")
    return Embeddings({k: v for k, v in embeds.items() if v is not None}, valid, skipped)


def default_workers() -> int:
    """DataLoader workers: decoding dominates on CPU, but leave a core for the model."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))
