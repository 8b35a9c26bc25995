"""JSONL files whose records each name an image by "path" (dataset lists, captions)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekd import EdgekdError


def read_path_records(path: Path, option: str, example: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record) for each non-blank line; a line that is not a JSON object with a "path" string
    raises an EdgekdError naming `option`, the file, the line and the expected `example` record."""
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise EdgekdError(f"{option} {path}: line {n} is not JSON ({e.msg})") from e
            if not isinstance(obj, dict) or not isinstance(obj.get("path"), str):
                raise EdgekdError(f"{option} {path}: line {n} needs a \"path\" string, e.g. {example}")
            yield n, obj
