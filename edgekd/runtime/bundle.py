"""Read an export bundle's edgekd.json and check its files against the recorded sha256 (numpy-free, torch-free).

    info = read_bundle("bundle/")          # BundleInfo: model path, input spec, preprocess, labels, ...

The format is documented in docs/FORMATS.md ("Export bundle"). A bundle may also carry an on-device text encoder
(`edgekd export-text`): `files.text_encoder` names its directory, or a `text/` folder with `text_encoder.json` sits
beside edgekd.json.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd import EdgekdError
from edgekd._io import sha256_file
from edgekd.preprocess import Preprocess

BUNDLE_FILE = "edgekd.json"
BUNDLE_FORMAT = "edgekd.bundle"
TEXT_ENCODER_FILE = "text_encoder.json"
DEFAULT_TEXT_DIR = "text"


class CorruptBundleError(EdgekdError):
    """A bundle whose metadata is unreadable or whose files do not match their recorded sha256."""


@dataclass(frozen=True)
class BundleInfo:
    """What the runtime needs from a bundle. `meta` is the full edgekd.json."""

    root: Path
    meta: dict[str, Any]
    model_path: Path
    labels_path: Path | None
    text_encoder_dir: Path | None
    preprocess: Preprocess
    preprocess_in_graph: bool
    resize_in_graph: bool  # the model takes whole frames of any size (crop + resize in the graph, onnxruntime)
    input_name: str
    input_layout: str  # NCHW (float32 pixels) | NHWC (uint8 frames)
    input_dtype: str
    output_name: str
    embed_dim: int
    logit_scale: float
    teacher_id: str
    verified: list[str] = field(default_factory=list)  # files whose sha256 was checked

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the model input."""
        return self.preprocess.size


def read_bundle(path: str | os.PathLike, verify: bool = True, model_role: str = "model") -> BundleInfo:
    """Parse `path`/edgekd.json (or the edgekd.json file itself); with `verify`, hash the files it needs.
    `model_role`: the "files" entry taken as the model (e.g. "onnx_fp16" of a TensorRT bundle whose engine is pending).

    Raises CorruptBundleError (an EdgekdError) naming the file and what to do on any problem.
    """
    path = Path(path)
    root = path.parent if path.name == BUNDLE_FILE else path
    meta_path = root / BUNDLE_FILE
    if not root.exists():
        raise EdgekdError(f"{root}: no such bundle directory (make one with `edgekd export RUN_DIR --out DIR`)")
    if not meta_path.is_file():
        raise EdgekdError(f"{root}: no {BUNDLE_FILE}; is this a bundle written by `edgekd export`?")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptBundleError(f"{meta_path}: unreadable bundle metadata ({e}); re-export the bundle") from e
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CorruptBundleError(f"{meta_path}: not an edgekd bundle (format {got!r}, expected {BUNDLE_FORMAT!r})")
    try:
        return _parse(root, meta, verify, model_role)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise CorruptBundleError(f"{meta_path}: malformed bundle metadata ({type(e).__name__}: {e}); "
                                 "re-export the bundle") from e


def _parse(root: Path, meta: dict[str, Any], verify: bool, model_role: str = "model") -> BundleInfo:
    files = meta["files"]
    model_path = _inside(root, files[model_role], f"files.{model_role}")
    if not model_path.is_file():
        raise CorruptBundleError(f"{model_path}: the bundle's model file is missing; copy the whole bundle directory")
    weights = files.get("weights")
    if weights and not _inside(root, weights, "files.weights").is_file():
        raise CorruptBundleError(f"{root / weights}: the bundle's weights file is missing")
    labels_path = _inside(root, files["labels"], "files.labels") if files.get("labels") else None
    if labels_path is not None and not labels_path.is_file():
        raise CorruptBundleError(f"{labels_path}: the bundle's label pack is missing")
    text_dir = None
    if files.get("text_encoder"):
        text_dir = _inside(root, files["text_encoder"], "files.text_encoder")
    elif (root / DEFAULT_TEXT_DIR / TEXT_ENCODER_FILE).is_file():
        text_dir = root / DEFAULT_TEXT_DIR
    required = [files[model_role], weights, files.get("labels")]
    verified = verify_files(root, meta.get("sha256") or {}, required=required) if verify else []
    inp, out = meta["input"], meta["output"]
    layout = str(inp.get("layout") or ("NHWC" if inp.get("dtype") == "uint8" else "NCHW")).upper()
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"input.layout {layout!r} is neither NCHW nor NHWC")
    pp = Preprocess.from_dict(meta["preprocess"])
    embed_dim = int(meta["embed_dim"])
    if embed_dim < 1:
        raise ValueError(f"embed_dim {embed_dim} < 1")
    return BundleInfo(
        root=root, meta=meta, model_path=model_path, labels_path=labels_path, text_encoder_dir=text_dir,
        preprocess=pp, preprocess_in_graph=bool(meta.get("preprocess_in_graph", False)),
        resize_in_graph=bool(meta.get("resize_in_graph", False)),
        input_name=str(inp["name"]), input_layout=layout, input_dtype=str(inp.get("dtype", "float32")),
        output_name=str(out.get("name", "embedding")), embed_dim=embed_dim,
        logit_scale=float(meta.get("logit_scale") or 100.0), teacher_id=str(meta.get("teacher_id") or ""),
        verified=verified,
    )


def verify_files(root: Path, sha256: dict[str, str], required: list[str | None] = ()) -> list[str]:
    """Check every file named in `sha256` that exists (and every `required` one, which must be listed and present).

    Returns the files checked; raises CorruptBundleError on a mismatch or a required file without a hash.
    """
    if not isinstance(sha256, dict):
        raise CorruptBundleError(f"{root / BUNDLE_FILE}: 'sha256' must map file names to hex digests")
    checked = []
    for name in [r for r in required if r]:
        if name not in sha256:
            raise CorruptBundleError(f"{root / BUNDLE_FILE}: no sha256 recorded for {name}; re-export the bundle "
                                     "(or load it with verify=False if you edited it on purpose)")
    for name, expected in sha256.items():
        p = _inside(root, name, "sha256")
        if not p.is_file():
            if name in required:
                raise CorruptBundleError(f"{p}: listed in {BUNDLE_FILE} but missing")
            continue  # e.g. a TensorRT bundle shipped without the ONNX it was built from
        got = sha256_file(p)
        if got != str(expected).lower():
            raise CorruptBundleError(f"{p}: sha256 mismatch (file {got[:12]}..., {BUNDLE_FILE} says "
                                     f"{str(expected)[:12]}...): the file is corrupt or was changed; copy or re-export "
                                     "the bundle again")
        checked.append(name)
    return checked


def _inside(root: Path, name: Any, what: str) -> Path:
    """Resolve a relative file name from the metadata, refusing absolute paths and '..' escapes."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} must be a relative file name, got {name!r}")
    p = Path(name)
    if p.is_absolute() or ".." in p.parts:
        raise ValueError(f"{what} {name!r} must be a plain relative path inside the bundle")
    return root / p


# --- the parity verdict a bundle carries ---------------------------------------------------------------------------

class UngatedBundleError(EdgekdError):
    """A bundle (or text encoder) whose gate failed or was skipped, loaded without allow_ungated."""


def gate_status(meta: dict[str, Any], key: str = "parity") -> str:
    """'passed', 'failed', 'skipped' (--no-gate, or an engine still to be built) or 'missing' (no verdict) of the
    verdict under `key` (a bundle's "parity"; a text encoder's "gate")."""
    parity = meta.get(key)
    if not isinstance(parity, dict):
        return "missing"
    if parity.get("passed") is True:
        return "passed"
    if parity.get("passed") is False:
        return "failed"
    return "skipped" if parity.get("skipped") else "missing"


def gate_summary(meta: dict[str, Any]) -> str:
    """One line: the verdict, what it measured and where, e.g. 'passed on 500 images: cosine mean 0.99990 / p1 0.99950
    / worst 0.99800, top-1 agreement 99.2% (95% 98.0-99.7%), on Intel Xeon (AVX512_CORE_AMX) with openvino 2026.4'."""
    status = gate_status(meta)
    parity = meta.get("parity") or {}
    if status in ("skipped", "missing"):
        why = "; ".join(parity.get("reasons") or []) or "no parity report in edgekd.json"
        return f"{status} ({why})"
    m = parity.get("metrics") or {}
    line = f"{status} on {m.get('images', '?')} images: cosine mean {m.get('cosine_mean', float('nan')):.5f}"
    if "cosine_p01" in m:
        line += f" / p1 {m['cosine_p01']:.5f}"
    line += f" / worst {m.get('cosine_min', float('nan')):.5f}"
    if "top1_agreement" in m:
        line += f", top-1 agreement {m['top1_agreement']:.1%}"
        if "top1_agreement_ci95" in m:
            lo, hi = m["top1_agreement_ci95"]
            line += f" (95% {lo:.1%}-{hi:.1%}; strict {m['top1_agreement_strict']:.1%})"
    if "accuracy_drop" in m:
        line += f", accuracy drop {m['accuracy_drop']:.2f} pts"
    host = parity.get("validated_on") or {}
    if host:
        from edgekd.cpu import describe

        line += f", on {describe(host.get('cpu') or {})} with {host.get('backend')} {host.get('backend_version')}"
        levels = host.get("onednn_isa_levels") or []
        if len(levels) > 1:
            line += f", judged under each of {', '.join(levels)}"
    if status == "failed":
        line += f"; failed: {'; '.join(parity.get('reasons') or [])}"
    return line


def require_gate(info: BundleInfo, allow_ungated: bool = False) -> str:
    """The bundle's gate status; raises UngatedBundleError for a failed, skipped or missing gate unless
    `allow_ungated` (then it only logs a warning)."""
    status = gate_status(info.meta)
    if status == "passed":
        return status
    report = info.root / "parity.json"
    where = f"; report: {report}" if report.is_file() else ""
    what = {"failed": "failed", "skipped": "was skipped", "missing": "left no verdict"}[status]
    message = (f"{info.root}: its parity gate {what} ({gate_summary(info.meta)}){where}; re-export it with the gate, "
               "or pass allow_ungated=True / --allow-ungated to use it anyway")
    refuse_ungated(message, allow_ungated)
    return status


def refuse_ungated(message: str, allow_ungated: bool) -> None:
    """Raise UngatedBundleError(message), or only log it as a warning under `allow_ungated`: the one place that
    decides whether an artifact without a passed gate is used."""
    if not allow_ungated:
        raise UngatedBundleError(message)
    logging.getLogger(__name__).warning("using an ungated artifact: %s", message)
