"""Label sets built off the streaming thread and swapped in at a frame boundary (gi-free).

    swap = LabelSwap(build=lambda request: make_label_set(request), on_refused=post_warning)
    swap.request(LabelRequest("person,forklift", threshold=0.2))   # returns at once (the caller never waits)
    ready = swap.take()                                            # at the start of each frame: None, or the new set

Embedding label texts runs the text encoder (a 254 MB fp32 tower takes 0.1-0.4 s on a small CPU), so it runs on a
thread of its own, never on the caller's (an app's UI or bus thread) nor on GStreamer's streaming thread. The newest
request wins: requests that arrive while one is being built replace each other and only the newest is built next;
a set that is built replaces one still waiting for its frame. A request the builder refuses (bad pack, no text
encoder) is reported through `on_refused` and changes nothing: the set in use, and the value it was built from, stay.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from edgekd import EdgekdError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelRequest:
    """What the `labels` and `threshold` properties asked for (threshold None: the pack's own thresholds)."""

    labels: str
    threshold: float | None = None
    threshold_set: bool = False


@dataclass(frozen=True)
class ReadyLabels:
    """A built label set, waiting for the next frame boundary."""

    request: LabelRequest
    labels: Any  # edgekd.runtime.labels.LabelSet
    build_ms: float
    requested_at: float  # time.perf_counter() of the request


class LabelSwap:
    """One builder thread; `request` never blocks, `take` hands the newest built set to the frame loop."""

    def __init__(self, build: Callable[[LabelRequest], Any], on_refused: Callable[[LabelRequest, Exception], None],
                 name: str = "edgekd-labels"):
        self._build, self._on_refused = build, on_refused
        self._lock = threading.Lock()
        self._wanted: tuple[LabelRequest, float] | None = None  # newest request not yet built
        self._ready: ReadyLabels | None = None
        self._busy = False
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def request(self, request: LabelRequest) -> None:
        """Queue `request` (replacing any queued one) and return at once."""
        with self._lock:
            self._wanted = (request, time.perf_counter())
            if self._busy:
                return
            self._busy = True
        self._pool.submit(self._run)

    def take(self) -> ReadyLabels | None:
        """The newest built set, once (None when nothing new): call it at a frame boundary."""
        if self._ready is None:  # the common case, without the lock
            return None
        with self._lock:
            ready, self._ready = self._ready, None
        return ready

    def pending(self) -> bool:
        """True while a request is queued or being built."""
        with self._lock:
            return self._busy

    def wait(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or being built (tests, EOS, shutdown). False on timeout."""
        deadline = None if timeout is None else time.perf_counter() + timeout
        while self.pending():
            if deadline is not None and time.perf_counter() > deadline:
                return False
            time.sleep(0.002)
        return True

    def close(self) -> None:
        """Finish the build in progress and stop the thread; later requests are refused."""
        self._pool.shutdown(wait=True)

    def _run(self) -> None:
        try:
            while self._build_next():
                pass
        except BaseException:  # an unexpected failure: free the queue so later requests still run, then report it
            with self._lock:
                self._busy = False
            raise

    def _build_next(self) -> bool:
        """Build the newest request; False (and not busy any more) when there is none."""
        with self._lock:
            if self._wanted is None:
                self._busy = False
                return False
            (request, requested_at), self._wanted = self._wanted, None
        t0 = time.perf_counter()
        try:
            labels = self._build(request)
        except (EdgekdError, ValueError, OSError, RuntimeError) as e:
            self._on_refused(request, e)
            return True
        ready = ReadyLabels(request, labels, (time.perf_counter() - t0) * 1e3, requested_at)
        with self._lock:  # published even when a newer request waits: that one may yet be refused
            self._ready = ready
        return True
