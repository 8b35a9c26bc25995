"""Per-image captions (JSONL) and per-class descriptions (JSON), matched by relative path and by class name."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from edgekd import EdgekdError
from edgekd.data.jsonl import read_path_records

log = logging.getLogger(__name__)


def _norm(p: str) -> str:
    p = Path(p).as_posix()
    return p[2:] if p.startswith("./") else p


def load_captions(path: str | os.PathLike, rel_paths: list[str] | None = None) -> dict[str, list[str]]:
    """Read `{"path": "cls/img.jpg", "captions": ["...", ...]}` lines -> {relative path: [caption, ...]}.

    A line may also use `"caption": "..."` for a single caption; repeated paths are concatenated. When `rel_paths`
    (the dataset index) is given, captions of images not in it are dropped and counted in a warning.
    """
    path = Path(path)
    if not path.is_file():
        raise EdgekdError(f"--captions {path}: no such file")
    out: dict[str, list[str]] = {}
    for n, obj in read_path_records(path, "--captions", '{"path": "cat/0001.jpg", "captions": ["..."]}'):
        caps = obj.get("captions", obj.get("caption"))
        if isinstance(caps, str):
            caps = [caps]
        if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
            raise EdgekdError(f"--captions {path}: line {n}: \"captions\" must be a list of strings")
        caps = [c.strip() for c in caps if c.strip()]
        out.setdefault(_norm(obj["path"]), []).extend(caps)
    if rel_paths is not None:
        known = set(rel_paths)
        unknown = [p for p in out if p not in known]
        if unknown:
            log.warning("%d caption entries in %s match no image of the dataset (e.g. %s); ignored",
                        len(unknown), path, unknown[0])
        out = {p: c for p, c in out.items() if p in known}
        if not out:
            raise EdgekdError(f"--captions {path}: no caption path matches an image of the dataset; paths must be "
                              "relative to the dataset root, e.g. 'cat/0001.jpg'")
    return out


def load_descriptions(path: str | os.PathLike, class_names: list[str] | None = None) -> dict[str, list[str]]:
    """Read `{class name: description | [description, ...]}` JSON -> {class: [description, ...]}.

    Matched by class NAME (never by line order). With `class_names`, names that match no class are reported and an
    error is raised when none match.
    """
    path = Path(path)
    if not path.is_file():
        raise EdgekdError(f"--descriptions {path}: no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgekdError(f"--descriptions {path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise EdgekdError(f"--descriptions {path}: expected a JSON object {{\"class\": [\"description\", ...]}}")
    out: dict[str, list[str]] = {}
    for name, descs in data.items():
        if isinstance(descs, str):
            descs = [descs]
        if not isinstance(descs, list) or not all(isinstance(d, str) for d in descs):
            raise EdgekdError(f"--descriptions {path}: class {name!r} must map to a string or a list of strings")
        out[str(name)] = [d.strip() for d in descs if d.strip()]
    if class_names is not None:
        unknown = sorted(set(out) - set(class_names))
        if unknown:
            log.warning("--descriptions %s: %d names match no class (%s)", path, len(unknown), ", ".join(unknown[:5]))
        if not set(out) & set(class_names):
            raise EdgekdError(f"--descriptions {path}: no key matches a class name ({', '.join(class_names[:5])}, ...)")
        missing = [c for c in class_names if c not in out]
        if missing:
            log.info("%d classes have no description (%s); they use the templates only", len(missing),
                     ", ".join(missing[:5]))
        out = {c: d for c, d in out.items() if c in class_names}
    return out
