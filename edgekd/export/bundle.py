"""Export bundle manifest (edgekd.json): write it with a sha256 of every file, read it back with verification.

numpy-free and torch-free, so the on-device runtime can use `load_bundle_manifest`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

from edgekd import EdgekdError
from edgekd._io import atomic_write_json, read_json, sha256_file

FORMAT = "edgekd.bundle"
VERSION = 1
MANIFEST = "edgekd.json"
PARITY_FILE = "parity.json"


class BundleIntegrityError(EdgekdError):
    """A bundle file is missing or its content does not match the sha256 recorded in edgekd.json."""


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
    sha256. Raises EdgekdError (BundleIntegrityError for missing/changed files)."""
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
    expected = manifest.get("sha256") or {}
    for role, name in (manifest.get("files") or {}).items():
        if name and name not in expected:
            raise BundleIntegrityError(f"{bundle_dir / MANIFEST}: file {name} ({role}) has no recorded sha256")
    for name, digest in expected.items():
        f = bundle_dir / name
        if not f.is_file():
            raise BundleIntegrityError(f"{f}: missing from the bundle; re-export it with `edgekd export`")
        if sha256_file(f) != digest:
            raise BundleIntegrityError(f"{f}: sha256 does not match edgekd.json (file changed or corrupted); "
                                       "re-export the bundle")
