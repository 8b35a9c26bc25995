"""Run a model over N samples in batches it accepts: the one place that knows how (STYLE habit 12). The export parity
gate, the runtime classifier and text encoder, `edgekd classify`, evaluation and the on-device TensorRT check all call
`run_batched`. numpy only.

    outs = run_batched(backend, x)          # x [N, ...] -> {output name: [N, ...]}, whatever batch the model takes
    lo, hi = accepted_batch(backend)        # static [8, ...] -> (8, 8); TensorRT profile 1..8 -> (1, 8); (1, None)

A model that needs a fixed (or minimum) batch gets its last chunk padded with copies of the last sample (real data,
so no layer sees an input unlike the others); the padded rows are dropped from the outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgekd import EdgekdError

DEFAULT_BATCH = 32  # chunk size for a model without an upper bound (memory stays bounded on long inputs)


def shape_batch_range(input_shape: Sequence[Any] | None) -> tuple[int, int | None]:
    """(min, max) batch that an input shape admits: a fixed leading dim n -> (n, n), a dynamic one -> (1, None)."""
    first = input_shape[0] if input_shape else None
    if isinstance(first, (int, np.integer)) and not isinstance(first, bool) and first > 0:
        return int(first), int(first)
    return 1, None


def accepted_batch(backend: Any) -> tuple[int, int | None]:
    """(min, max) batch `backend` runs (max None = unbounded): its `batch_range`, else from its `input_shape`."""
    rng = getattr(backend, "batch_range", None)
    lo, hi = rng if rng is not None else shape_batch_range(getattr(backend, "input_shape", None))
    if lo < 1 or (hi is not None and hi < lo):
        raise EdgekdError(f"{getattr(backend, 'name', 'model')}: invalid batch range ({lo}, {hi})")
    return int(lo), None if hi is None else int(hi)


def chunk_size(backend: Any, batch_size: int | None = None) -> int:
    """Samples per call: `batch_size` (default DEFAULT_BATCH) clamped into the model's accepted range."""
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lo, hi = accepted_batch(backend)
    size = batch_size or DEFAULT_BATCH
    return max(lo, min(size, hi) if hi is not None else size)


def check_batch(backend: Any, n: int) -> None:
    """Raise a one-line EdgekdError when the model cannot take a batch of `n` in one call."""
    lo, hi = accepted_batch(backend)
    if n < lo or (hi is not None and n > hi):
        accepted = f"exactly {lo}" if lo == hi else f"{lo}..{hi if hi is not None else 'any'}"
        raise EdgekdError(f"{getattr(backend, 'name', 'model')}: batch {n} is outside what the model accepts "
                          f"({accepted}); rebuild it with another batch range (e.g. --max-batch / --static-batch)")


def run_batched(backend: Any, x: np.ndarray, feeds: dict[str, np.ndarray] | None = None,
                batch_size: int | None = None) -> dict[str, np.ndarray]:
    """Run `backend` over x [N, ...] in chunks it accepts -> {output name: [N, ...]}.

    batch_size: preferred samples per call (clamped to the model's range; default DEFAULT_BATCH). feeds: extra
    per-call inputs (e.g. `channel_order`), passed unchanged to every call. The input is cast to the backend's
    `input_dtype`; outputs keep theirs.
    """
    x = np.asarray(x)
    n = len(x)
    if n == 0:
        raise ValueError("run_batched: empty input (0 samples)")
    size = chunk_size(backend, batch_size)
    lo, _ = accepted_batch(backend)
    dtype = getattr(backend, "input_dtype", None)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, size):
        chunk = x[start:start + size]
        real = len(chunk)
        if real < lo:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], lo - real, axis=0)])
        chunk = np.ascontiguousarray(chunk, dtype=dtype)
        outs = backend.run(chunk, feeds) if feeds else backend.run(chunk)
        for name, value in outs.items():
            value = np.asarray(value)
            if value.ndim == 0 or len(value) != len(chunk):
                raise EdgekdError(f"{getattr(backend, 'name', 'model')}: output {name!r} has shape {value.shape} for "
                                  f"a batch of {len(chunk)}; expected one row per sample")
            parts.setdefault(name, []).append(value[:real])
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}
