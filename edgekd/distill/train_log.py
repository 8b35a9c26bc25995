"""A run's training log: metrics.csv, one row per window of steps (loss parts averaged over it, the images/s it
ran at), mirrored to TensorBoard when that is installed; on resume, the rows after the checkpoint are cut."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

from edgekd._io import atomic_write_text

METRICS = "metrics.csv"


class StepWindow:
    """The steps since the last metrics row: sums of their loss parts, their images, when the window opened."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.reset()

    def reset(self) -> None:
        self.started, self.images, self.steps = time.perf_counter(), 0, 0
        self.sums = dict.fromkeys(self.names, 0.0)

    def add(self, parts: dict[str, float], images: int) -> None:
        for k in self.names:
            self.sums[k] += parts[k]
        self.steps += 1
        self.images += images

    def row(self, step: int, epoch: int, lr: float) -> dict[str, Any]:
        """The metrics row of the window: step, epoch, lr, the mean of each part, images_per_s."""
        dt = time.perf_counter() - self.started
        ips = self.images / dt if dt > 0 else 0.0
        return {"step": step, "epoch": epoch, "lr": lr, **{k: self.sums[k] / self.steps for k in self.names},
                "images_per_s": ips}


def log_metrics(path: Path, row: dict[str, Any], writer: Any) -> None:
    new = not path.is_file()
    with open(path, "a", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    if writer is not None:
        for k, v in row.items():
            if k not in ("step", "epoch"):
                writer.add_scalar(f"train/{k}", v, row["step"])


def trim_metrics(path: Path, step: int) -> None:
    """On resume, drop rows logged after the checkpoint (they will be logged again)."""
    if not path.is_file():
        return
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    keep = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step]
    buf = io.StringIO()
    csv.writer(buf).writerows(keep)
    atomic_write_text(path, buf.getvalue())


def open_tensorboard(out: Path) -> Any:
    """A SummaryWriter into out/tb, or None without tensorboard."""
    from edgekd._optional import is_available

    if not is_available("tensorboard"):
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out / "tb"))
