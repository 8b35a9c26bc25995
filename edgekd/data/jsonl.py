"""JSONL files whose records each name an image by "path" (dataset lists, captions)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekd import EdgekdError


def read_path_records(path: Path, option: str = "", example: str = "", *, no_path: str = "", fix: str = "",
                      complete_lines: bool = False, encoding: str = "utf-8-sig",
                      ) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record) for each non-blank line; a line that is not a JSON object with a "path" string
    raises an EdgekdError naming `option` (when given), the file, the line and the expected `example` record (or,
    instead, the `no_path` reason). `fix` follows the not-JSON message. complete_lines: stop at a last line without
    its newline (one being appended right now, or left by a kill), as the resumable captions store needs."""
    where = f"{option} {path}" if option else str(path)
    with open(path, encoding=encoding) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            if complete_lines and not line.endswith("\n"):
                break
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise EdgekdError(f"{where}: line {n} is not JSON ({e.msg}){fix}") from e
            if not isinstance(obj, dict) or not isinstance(obj.get("path"), str):
                raise EdgekdError(f"{where}: line {n} " + (no_path or f"needs a \"path\" string, e.g. {example}"))
            yield n, obj
