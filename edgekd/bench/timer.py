"""Wall-clock timing of a callable: warm-up, then perf_counter laps (with a device sync) until both a minimum
iteration count and a minimum time are reached; latency percentiles; a separate pipelined throughput loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekd import EdgekdError


def latency_stats(times_s: list[float] | np.ndarray) -> dict[str, float]:
    """Per-call times in seconds -> {p50, p90, p99, mean, std, min, max} in milliseconds and n (count)."""
    t = np.asarray(times_s, dtype=np.float64) * 1e3
    if t.size == 0:
        raise EdgekdError("no timed iterations to summarise")
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(t.mean()),
            "std": float(t.std(ddof=1)) if t.size > 1 else 0.0, "min": float(t.min()), "max": float(t.max()),
            "n": int(t.size)}


@dataclass
class Timing:
    """Result of `Timer.measure`: per-iteration times (s) of the timed loop plus what the warm-up did."""

    times_s: list[float]
    first_call_s: float
    warmup_iters: int
    warmup_s: float
    elapsed_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    def stats_ms(self) -> dict[str, float]:
        return latency_stats(self.times_s)


@dataclass
class Timer:
    """Times `fn()`; `sync` (e.g. torch.cuda.synchronize) runs after every call so asynchronous devices are measured
    to completion. Warm-up runs at least one call (the first call, often much slower, is reported separately)."""

    warmup_s: float = 2.0
    min_time_s: float = 5.0
    min_iters: int = 10
    sync: Callable[[], Any] | None = None

    def __post_init__(self) -> None:
        if self.warmup_s < 0 or self.min_time_s < 0:
            raise EdgekdError(f"warm-up and minimum time must be >= 0 s, got {self.warmup_s} and {self.min_time_s}")
        if self.min_iters < 1:
            raise EdgekdError(f"--min-iters must be >= 1, got {self.min_iters}")

    def _call(self, fn: Callable[[], Any]) -> float:
        t0 = time.perf_counter()
        fn()
        if self.sync is not None:
            self.sync()
        return time.perf_counter() - t0

    def warmup(self, fn: Callable[[], Any]) -> tuple[float, int, float]:
        """-> (first call seconds, warm-up iterations including the first, warm-up seconds)."""
        start = time.perf_counter()
        first = self._call(fn)
        n = 1
        while time.perf_counter() - start < self.warmup_s:
            self._call(fn)
            n += 1
        return first, n, time.perf_counter() - start

    def measure(self, fn: Callable[[], Any], warm: bool = True) -> Timing:
        """Warm up (unless `warm` is False), then time calls until >= min_iters calls and >= min_time_s seconds."""
        first, n_warm, warm_s = self.warmup(fn) if warm else (float("nan"), 0, 0.0)
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < self.min_iters or time.perf_counter() - start < self.min_time_s:
            times.append(self._call(fn))
        return Timing(times, first, n_warm, warm_s, time.perf_counter() - start)

    def throughput(self, fn: Callable[[], Any], items_per_call: int, min_time_s: float,
                   min_iters: int = 2) -> dict[str, float]:
        """Pipelined loop: calls back to back with one sync at the end (asynchronous devices overlap launches).
        -> {"ips": items per second, "iters", "elapsed_s"}."""
        n = 0
        start = time.perf_counter()
        while n < min_iters or time.perf_counter() - start < min_time_s:
            fn()
            n += 1
        if self.sync is not None:
            self.sync()
        elapsed = time.perf_counter() - start
        return {"ips": n * items_per_call / elapsed, "iters": n, "elapsed_s": elapsed}
