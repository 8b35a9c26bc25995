"""Jetson power from `tegrastats`: parse the power rails of each line and sample them during a timed loop.

Rails look like `VDD_IN 4937mW/4937mW` (Orin, JetPack 5/6), `VDD_IN 4944/4944` (Xavier) or `POM_5V_IN 2127/2127`
(Nano/TX2): current/average in mW. The board's input rail (VDD_IN or POM_5V_IN) is the total power; boards without
one (AGX Orin, AGX Xavier) are summed over all rails.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")
# NAME current[mW]/average[mW]; the lookahead keeps 'RAM 2611/7620MB' and 'IRAM 0/252kB' out
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?![\w%])")
_NOT_RAILS = {"RAM", "SWAP", "IRAM", "LFB"}


def parse_line(line: str) -> dict[str, float]:
    """One tegrastats line -> {rail: current mW}; {} when it has no power rails."""
    return {name: float(cur) for name, cur, _avg in _RAIL.findall(line) if name not in _NOT_RAILS}


def total_power(rails: dict[str, float]) -> tuple[float, str] | None:
    """-> (mW, rail name) of the board's input power, or the sum of all rails when there is no input rail."""
    for name in TOTAL_RAILS:
        if name in rails:
            return rails[name], name
    if not rails:
        return None
    return sum(rails.values()), "sum(" + "+".join(sorted(rails)) + ")"


def summarize(samples: list[tuple[float, dict[str, float]]]) -> dict[str, Any] | None:
    """[(time, rails)] -> {avg_mw, peak_mw, samples, rail, rails_avg_mw}, or None without power samples."""
    totals = [t for _, rails in samples if (t := total_power(rails)) is not None]
    if not totals:
        return None
    values = [v for v, _ in totals]
    names = sorted({n for _, rails in samples for n in rails})
    rails_avg = {n: sum(r.get(n, 0.0) for _, r in samples) / len(samples) for n in names}
    return {"avg_mw": sum(values) / len(values), "peak_mw": max(values), "samples": len(values),
            "rail": totals[0][1], "rails_avg_mw": rails_avg}


def is_available() -> bool:
    return shutil.which("tegrastats") is not None


class TegrastatsSampler:
    """Context manager: runs `tegrastats --interval MS` in the background and keeps the parsed power samples.

        with TegrastatsSampler() as power:
            ...timed loop...
        power.summary()  # {avg_mw, peak_mw, ...} or None
    """

    def __init__(self, interval_ms: int = 100, command: list[str] | None = None):
        self.command = command or ["tegrastats", "--interval", str(interval_ms)]
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> TegrastatsSampler:
        try:
            self._proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError as e:
            log.warning("tegrastats could not start (%s); no power figures", e)
            return self
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            rails = parse_line(line)
            if rails:
                self.samples.append((time.perf_counter(), rails))

    def __exit__(self, *exc: Any) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def summary(self) -> dict[str, Any] | None:
        return summarize(self.samples)
