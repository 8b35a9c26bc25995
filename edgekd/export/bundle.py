"""Export bundle manifest (edgekd.json): write it with a sha256 of every file, read it back with verification.

numpy-free and torch-free. Reading and verification are shared with the runtime (edgekd.runtime.bundle).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

from edgekd import EdgekdError
from edgekd._io import atomic_write_json, read_json, sha256_file
from edgekd.runtime.bundle import BUNDLE_FILE as MANIFEST
from edgekd.runtime.bundle import BUNDLE_FORMAT as FORMAT
from edgekd.runtime.bundle import verify_files

VERSION = 1
PARITY_FILE = "parity.json"


def hash_files(bundle_dir: str | os.PathLike, names: list[str]) -> dict[str, str]:
    bundle_dir = Path(bundle_dir)
    return {n: sha256_file(bundle_dir / n) for n in sorted(set(names))}


def write_manifest(bundle_dir: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Fill format/version/created and the sha256 of every file named in manifest["files"]; write atomically."""
    bundle_dir = Path(bundle_dir)
    files = [f for f in manifest.get("files", {}).values() if f]
    manifest = {"format": FORMAT, "version": VERSION, **manifest,
                "sha256": hash_files(bundle_dir, files)}
    manifest.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat())
    path = bundle_dir / MANIFEST
    atomic_write_json(path, manifest)
    return path


def load_bundle_manifest(path: str | os.PathLike, verify: bool = True) -> dict[str, Any]:
    """Read BUNDLE/edgekd.json (path = the bundle directory or the json file); with `verify`, check every file's
    sha256. Raises EdgekdError (CorruptBundleError for missing/changed files)."""
    path = Path(path)
    mpath = path / MANIFEST if path.is_dir() else path
    if not mpath.is_file():
        raise EdgekdError(f"{path}: no {MANIFEST}; is this a bundle written by `edgekd export`?")
    try:
        manifest = read_json(mpath)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgekdError(f"{mpath}: not valid JSON ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise EdgekdError(f"{mpath}: not an edgekd bundle manifest (format {manifest.get('format')!r})"
                          if isinstance(manifest, dict) else f"{mpath}: not an edgekd bundle manifest")
    if int(manifest.get("version", 0)) > VERSION:
        raise EdgekdError(f"{mpath}: bundle format version {manifest['version']} is newer than this edgekd reads "
                          f"({VERSION}); upgrade edgekd")
    if verify:
        verify_bundle(mpath.parent, manifest)
    return manifest


def verify_bundle(bundle_dir: Path, manifest: dict[str, Any]) -> None:
    """Every file the manifest names must be present with its recorded sha256 (CorruptBundleError otherwise)."""
    required = [name for name in (manifest.get("files") or {}).values() if name]
    verify_files(bundle_dir, manifest.get("sha256") or {}, required=required)
