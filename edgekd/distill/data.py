"""Training data from a teacher cache: one cached view per image per epoch, rendered at the student's resolution.

Determinism lives in the main process: `GlobalBatchSampler` yields, for every step, the global batch as
`(image row, epoch)` pairs and each rank keeps its own contiguous slice. The dataset then draws the view (and the
caption) from `np.random.default_rng([seed, epoch, row])`, so the sample does not depend on which worker decodes it,
on the number of workers, or on the number of DDP ranks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekd import EdgekdError
from edgekd.data.images import load_rgb
from edgekd.distill.augment import Augment
from edgekd.preprocess import Preprocess, sample_train_view

log = logging.getLogger(__name__)


class CachedViewDataset(torch.utils.data.Dataset):
    """Item `(row, epoch)` -> {"pixels" [3,H,W], "labels" [], "index" [], "teacher" [D] + "view" [] (cached view k)
    | "teacher_pixels" [3,h,w] (online), ("caption" [D], "has_caption" [])}.

    Cached mode: view k ~ U{0..K-1} from rng([seed, epoch, row]); the student renders view k's stored box and the
    target is the cached teacher embedding of that exact view. Online mode (`teacher_preprocess` given): a fresh
    RandomResizedCrop+flip box from the same rng (with the cache's view settings), rendered for both models.
    `augment` (edgekd.distill.augment) then changes only the student's pixels: a crop inside the view's box and colour
    jitter, drawn from the same rng after the view (so the target is still the whole view's).
    `cache` is an opened TeacherCache (or its path): index.json is parsed once, in the main process; DataLoader
    workers receive the relative paths and labels with the dataset and open only the memmaps they read (lazily:
    memmaps do not pickle into workers cheaply).
    """

    def __init__(self, cache: Any, preprocess: Preprocess, seed: int = 0,
                 teacher_preprocess: Preprocess | None = None, data_root: str | Path | None = None,
                 augment: Augment | None = None):
        from edgekd.teacher.cache import TeacherCache

        if not isinstance(cache, TeacherCache):
            cache = TeacherCache.open(cache, data_root)
        self.cache_path = Path(cache.path)
        self.root = str(cache.root)
        self.rel_paths = list(cache.rel_paths)
        self.preprocess = preprocess
        self.teacher_preprocess = teacher_preprocess
        self.seed = int(seed)
        self.augment = augment or Augment()
        self.labels = np.asarray(cache.labels, dtype=np.int64)
        self.num_views = cache.num_views
        self.has_captions = cache.caption_embeds is not None
        vc = cache.view_config
        self.view_cfg = (tuple(vc.get("scale", (0.35, 1.0))), tuple(vc.get("ratio", (3 / 4, 4 / 3))),
                         float(vc.get("flip_p", 0.5)))
        self._arrays: dict[str, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """image_embeds, views (+ caption_embeds, caption_mask) memmaps, opened once per process."""
        if self._arrays is None:
            from edgekd.teacher.cache import open_cache_arrays

            self._arrays = open_cache_arrays(self.cache_path, self.has_captions)
        return self._arrays

    @property
    def paths(self) -> list[str]:
        """Absolute image paths (built on demand; items join root and relative path themselves)."""
        return [os.path.join(self.root, p) for p in self.rel_paths]

    def __len__(self) -> int:
        return len(self.rel_paths)

    def __getitem__(self, item: tuple[int, int]) -> dict[str, Any]:
        row, epoch = int(item[0]), int(item[1])
        rng = np.random.default_rng([self.seed, epoch, row])
        try:
            img = load_rgb(os.path.join(self.root, self.rel_paths[row]))
        except EdgekdError as e:
            raise EdgekdError(f"{e} (image changed since the cache was built? rebuild it with `edgekd cache`)") from e
        out: dict[str, Any] = {"labels": torch.tensor(self.labels[row]), "index": torch.tensor(row)}
        pp, arr = self.preprocess, self.arrays
        if self.teacher_preprocess is None:
            k = int(rng.integers(self.num_views))
            view = tuple(float(v) for v in arr["views"][row, k])
            out["teacher"] = torch.from_numpy(np.asarray(arr["image_embeds"][row, k], dtype=np.float32))
            out["view"] = torch.tensor(k)
        else:
            view = sample_train_view(rng, img.width, img.height, *self.view_cfg)
            tp = self.teacher_preprocess
            out["teacher_pixels"] = torch.from_numpy(tp.normalize(tp.render(img, view)))
        # the student's own resize method: the same function as its runtime's (edgekd.preprocess.render_view)
        aug = self.augment
        pixels = aug.colour(rng, pp.render(img, aug.inner_view(rng, view)))
        out["pixels"] = torch.from_numpy(pp.normalize(pixels))
        if self.has_captions:
            mask = np.asarray(arr["caption_mask"][row])
            choices = np.flatnonzero(mask)
            has = choices.size > 0
            m = int(choices[rng.integers(choices.size)]) if has else 0
            out["caption"] = torch.from_numpy(np.asarray(arr["caption_embeds"][row, m], dtype=np.float32))
            out["has_caption"] = torch.tensor(bool(has))
        return out


class GlobalBatchSampler(torch.utils.data.Sampler):
    """Per step, this rank's slice of a seeded global batch of `batch_size` rows, as `(row, epoch)` pairs.

    The permutation of `rows` depends on (seed, epoch) only; every batch is full (the incomplete tail is dropped);
    rank r of W gets items [r*B/W, (r+1)*B/W) of each global batch, so the concatenation over ranks in rank order is
    exactly the single-process batch. `set_epoch(epoch, start)` skips the first `start` batches (resume).
    """

    def __init__(self, rows: np.ndarray, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise EdgekdError(f"--batch-size {batch_size} must be divisible by the number of processes ({world_size})")
        if len(rows) < batch_size:
            raise EdgekdError(f"--batch-size {batch_size} is larger than the {len(rows)} usable images in the cache; "
                              "use a smaller batch size")
        self.rows = np.asarray(rows, dtype=np.int64)
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return len(self.rows) // self.batch_size - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        perm = np.random.default_rng([self.seed, self.epoch, 0x5EED]).permutation(len(self.rows))
        local = self.batch_size // self.world_size
        for b in range(self.start, len(self.rows) // self.batch_size):
            batch = self.rows[perm[b * self.batch_size:(b + 1) * self.batch_size]]
            mine = batch[self.rank * local:(self.rank + 1) * local]
            yield [(int(r), self.epoch) for r in mine]


def worker_init(_: int) -> None:
    """One decoding thread per worker (torch would otherwise start one per core in every worker); Ctrl-C is left
    to the main process, which finishes its step and checkpoints while the workers keep serving batches."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
