"""`edgekd export`: run dir -> fp32 ONNX -> target artifact -> parity gate -> edgekd.json (+ labels.npz)."""

from __future__ import annotations

import copy
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekd import EdgekdError
from edgekd._io import atomic_write_json
from edgekd.export.bundle import MANIFEST, PARITY_FILE, write_manifest
from edgekd.export.targets import (
    ExportRequest,
    ExportResult,
    IntermediateGateError,
    NeedsDeviceError,
    check_precision,
    get_target,
)

if TYPE_CHECKING:
    from edgekd.labelpack import LabelPack

log = logging.getLogger(__name__)

LABELS_FILE = "labels.npz"
ONNX_FILE = "model.onnx"
IN_PROGRESS = ".edgekd-export-in-progress"  # hidden marker: this folder is an export that has not finished
DEFAULT_VAL_IMAGES = 500  # 98 % agreement on 200 images is +-2 points (95 % interval)


class GateFailedError(EdgekdError):
    """The exported model failed its parity gate; the bundle and parity.json are kept for inspection."""

    exit_code = 3  # edgekd.cli.EXIT_GATE_FAILED

    def __init__(self, message: str, bundle: Path, report: dict[str, Any]):
        super().__init__(message)
        self.bundle, self.report = bundle, report


def backend_versions() -> dict[str, str | None]:
    """Installed versions of the export toolchain (without importing the packages)."""
    from edgekd._optional import installed_version

    return {key: installed_version(*dists) for key, dists in {
        "torch": ["torch"], "onnx": ["onnx"], "onnxruntime": ["onnxruntime", "onnxruntime-gpu"],
        "openvino": ["openvino"], "tensorrt": ["tensorrt", "tensorrt-cu12", "tensorrt-cu13"]}.items()}


def _prepare_out(out: Path, overwrite: bool) -> None:
    """Make `out` ready for a new bundle: empty, an old bundle, or an export that was interrupted (its marker file
    is there); anything else needs --overwrite. The marker stays until edgekd.json is written."""
    if out.exists() and not out.is_dir():
        raise EdgekdError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        ours = (out / MANIFEST).is_file() or (out / IN_PROGRESS).is_file()
        if not ours and not overwrite:
            raise EdgekdError(f"--out {out}: folder is not empty and not an edgekd bundle; choose a new folder")
        (out / IN_PROGRESS).touch()  # before edgekd.json goes: a killed re-export can be re-run as it is
        for name in (MANIFEST, PARITY_FILE):  # a half-rewritten bundle must never look valid
            (out / name).unlink(missing_ok=True)
        for p in out.iterdir():  # temp files of a killed atomic write (hidden, `.NAME.*.tmp*`)
            if p.is_file() and p.name.startswith(".") and ".tmp" in p.name:
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / IN_PROGRESS).touch()


def _load_labels(run_dir: Path, labels: str | os.PathLike | None, student_cfg: Any) -> tuple[Any, str | None]:
    from edgekd.labelpack import load_label_pack

    if labels is None:
        path = run_dir / LABELS_FILE
        if not path.is_file():
            return None, None
    else:
        path = Path(labels)
    pack = load_label_pack(path)
    pack.check_compatible(student_cfg.teacher_id or None, student_cfg.embed_dim, what=f"the student in {run_dir}")
    return pack, str(path)


def _val_labels(val: Any, pack: Any) -> np.ndarray | None:
    """Map ImageFolder labels of the parity images onto the pack's class indices (None when names do not match)."""
    if pack is None or not val.classes or not np.any(val.labels >= 0):
        return None
    missing = [c for c in val.classes if c not in pack.class_names]
    if missing:
        log.info("parity images' classes %s are not in the label pack; accuracy drop not measured", missing[:3])
        return None
    mapping = np.array([pack.class_names.index(c) for c in val.classes])
    return np.where(val.labels >= 0, mapping[np.maximum(val.labels, 0)], -1)


def export_bundle(run_dir: str | os.PathLike, target: str, precision: str, out: str | os.PathLike,
                  calib_dir: str | os.PathLike | None = None, val_dir: str | os.PathLike | None = None,
                  labels: str | os.PathLike | None = None, *, preprocess_in_graph: bool | str = False,
                  with_labels: bool = False, static_batch: int | None = None, opset: int = 17, gate: bool = True,
                  calib_images: int = 300, val_images: int = DEFAULT_VAL_IMAGES, max_drop: float | None = None,
                  tie_margin: float | None = None, small_gate_ok: bool = False, gate_isa: str = "all",
                  threads: int | None = None, overwrite: bool = False, eval_file: str | os.PathLike | None = None,
                  **options: Any) -> Path:
    """Export the student of `run_dir` to a bundle at `out` and gate it. Returns the bundle path.

    `preprocess_in_graph`: False (the model takes normalised float32 pixels), True / "normalize" (uint8 frames at the
    model's size) or "full" (uint8 frames of any size: crop and resize in the graph too; onnx target only).
    `gate_isa`: "all" judges an OpenVINO model under every oneDNN ISA level of this CPU (a verdict that holds for
    AVX2, AVX-512 VNNI and AMX kernels alike), "host" only under the one in force.
    `eval_file`: JSON written by `edgekd eval RUN --out FILE`, embedded as edgekd.json "eval" (bench plots quality
    against latency from it); it must describe this run's student and teacher.
    Raises EdgekdError for bad input, GateFailedError (exit 3) when parity fails (bundle + parity.json kept),
    NeedsDeviceError (exit 4) when a target prepared work for another machine.
    """
    from edgekd.export.calibration import as_model_input
    from edgekd.export.onnx import export_student_onnx
    from edgekd.export.parity import GateCriteria, failure_advice
    from edgekd.students.io import load_student, load_student_config
    from edgekd.students.model import reparameterize

    t0 = time.perf_counter()
    run_dir, out = Path(run_dir), Path(out)
    spec, in_graph = _check_arguments(run_dir, target, precision, preprocess_in_graph, static_batch,
                                      with_labels and labels is None)
    cfg = load_student_config(run_dir)
    trained = load_student(run_dir).eval()  # the gate's reference: the student as trained
    student = reparameterize(copy.deepcopy(trained)).eval()  # what is exported (fused blocks)
    pp = cfg.get_preprocess()
    pack, pack_path = _load_labels(run_dir, labels, cfg)
    if in_graph == "full":
        opset = _full_head_opset(pp, opset)
    eval_results = load_run_eval(eval_file, run_dir, cfg) if eval_file is not None else None

    criteria = GateCriteria.default(precision, max_drop=max_drop, tie_margin=tie_margin, small_gate_ok=small_gate_ok)
    calib, val = _image_sets(calib_dir, val_dir, pp, calib_images, val_images, gate, precision, criteria.min_images)

    _prepare_out(out, overwrite)
    input_name = "frames" if in_graph else "pixels"
    io = export_student_onnx(student, out / ONNX_FILE, pp, bool(in_graph), pack if with_labels else None,
                             static_batch, opset)
    req = ExportRequest(student=student, preprocess=pp, out_dir=out, precision=precision, onnx_path=out / ONNX_FILE,
                        input_name=input_name,
                        calib=as_model_input(calib.frames, input_name, pp) if calib is not None else None,
                        val=as_model_input(val.frames, input_name, pp) if val is not None else None,
                        label_pack=pack, options={**options, "max_drop": max_drop, "gate": criteria,
                                                  "threads": threads, "gate_isa": gate_isa})
    source = {"run_dir": run_dir, "cfg": cfg, "pp": pp, "pack": pack, "pack_path": pack_path, "io": io,
              "target": target, "precision": precision, "opset": opset, "t0": t0, "in_graph": in_graph,
              "eval": eval_results, "gate_isa": gate_isa, "calib": calib.describe(options.get("calib_method") or (
                  "minmax" if target == "onnx" else "default")) if calib is not None and precision == "int8" else None}
    def build() -> tuple[ExportResult, dict[str, str | None], dict[str, Any]]:
        return _build_and_gate(spec, req, source, gate, val, val_dir, trained, student, criteria, threads)

    def export_again() -> None:  # the first build replaced or removed the ONNX
        source["io"] = export_student_onnx(student, out / ONNX_FILE, pp, bool(in_graph), pack if with_labels else None,
                                           static_batch, opset)

    try:  # a target that prepares work for another machine raises NeedsDeviceError from either attempt
        result, files, report = _build_with_auto_mixed_retry(build, export_again, req, options.get("auto_mixed"))
    except NeedsDeviceError as e:  # e.g. TensorRT without tensorrt: record everything known, the device finishes it
        _record_pending(out, source, pack, e)
        raise
    atomic_write_json(out / PARITY_FILE, report)
    manifest = _manifest(source, result, files, report)
    write_manifest(out, manifest)
    (out / IN_PROGRESS).unlink(missing_ok=True)
    if report.get("passed") is False:
        model_faults = [r for r in report["reasons"] if "the gate ran on" not in r]  # not a too-small set
        advice = f"; {failure_advice(precision, target, bool(req.options.get('auto_mixed')))}" if model_faults else ""
        raise GateFailedError(f"parity gate failed for {target} {precision} ({'; '.join(report['reasons'])}); report "
                              f"in {out / PARITY_FILE}{advice}", out, report)
    log.info("exported %s %s bundle to %s in %.1f s", target, precision, out, manifest["build_seconds"])
    return out


def _check_arguments(run_dir: Path, target: str, precision: str, preprocess_in_graph: bool | str,
                     static_batch: int | None, labels_from_run: bool) -> tuple[Any, str | None]:
    """The one-line refusals export_bundle owes bad arguments -> (the target's spec, the in-graph mode)."""
    if not run_dir.is_dir():
        raise EdgekdError(f"RUN {run_dir}: no such run directory (the output folder of `edgekd distill`)")
    spec = get_target(target)
    check_precision(spec, precision)
    in_graph = in_graph_mode(preprocess_in_graph)
    if in_graph == "full" and target != "onnx":
        raise EdgekdError(f"--preprocess-in-graph full: needs --target onnx (onnxruntime's antialiased Resize); for "
                          f"--target {target} use --preprocess-in-graph (normalise in the graph, resize in the app)")
    if static_batch is not None and static_batch < 1:
        raise EdgekdError(f"--static-batch {static_batch}: must be >= 1")
    if labels_from_run and not (run_dir / LABELS_FILE).is_file():
        raise EdgekdError(f"--with-labels: {run_dir} has no {LABELS_FILE}; pass --labels PACK")
    return spec, in_graph


def _full_head_opset(pp: Any, opset: int) -> int:
    """--preprocess-in-graph full: refuse a student whose resize the graph cannot reproduce; the opset it needs."""
    from edgekd.export.frame_head import MIN_OPSET, unsupported_reason

    reason = unsupported_reason(pp)
    if reason:
        raise EdgekdError(f"--preprocess-in-graph full: {reason}; use --preprocess-in-graph (normalise only) or "
                          "distill with --interpolation bicubic")
    if opset < MIN_OPSET:
        log.info("--preprocess-in-graph full: opset %d -> %d (antialiased Resize)", opset, MIN_OPSET)
    return max(opset, MIN_OPSET)


def _build_with_auto_mixed_retry(build: Any, export_again: Any, req: ExportRequest, auto_mixed: bool | None
                                 ) -> tuple[ExportResult, dict[str, str | None], dict[str, Any]]:
    """build(); for INT8 that fails the gate, build again with --auto-mixed (the default: full INT8 first, fastest at
    run time; when it fails, the most sensitive layers go back to float until the criteria hold). The report keeps
    both attempts."""
    result, files, report = build()
    if not _retry_with_auto_mixed(req.precision, report, auto_mixed):
        return result, files, report
    log.warning("full INT8 failed the parity gate (%s); exporting again with --auto-mixed (--no-auto-mixed: never)",
                "; ".join(report["reasons"]))
    first = {"auto_mixed": False, "reasons": report["reasons"],
             "metrics": {k: report["metrics"].get(k) for k in ("cosine_mean", "cosine_p01", "cosine_min",
                                                               "top1_agreement", "top1_agreement_strict")}}
    export_again()
    req.options["auto_mixed"] = True
    result, files, report = build()
    report["int8_attempts"] = [first]
    return result, files, report


def _record_pending(out: Path, source: dict[str, Any], pack: Any, e: NeedsDeviceError) -> None:
    """A target left the rest to another machine: write the manifest of what is known (engine pending)."""
    if e.result is None:
        return
    files = {**e.result.files, "labels": _save_labels(out, pack)}
    write_manifest(out, _manifest(source, e.result, files, {
        "passed": None, "skipped": True, "reasons": [f"engine pending; {_first_line(e)}"],
        "onnx_gate": e.result.metadata.get("tensorrt", {}).get("onnx_gate")}))
    (out / IN_PROGRESS).unlink(missing_ok=True)


def _build_and_gate(spec: Any, req: ExportRequest, source: dict[str, Any], gate: bool, val: Any, val_dir: Any,
                    trained: Any, student: Any, criteria: Any, threads: int | None
                    ) -> tuple[ExportResult, dict[str, str | None], dict[str, Any]]:
    """Build the target's artifact from req.onnx_path (+ the in-graph frame head) and run the parity gate on it."""
    from edgekd.export.calibration import OriginalFrames
    from edgekd.export.parity import check_parity

    out, pp, pack = req.out_dir, source["pp"], source["pack"]
    val_input = OriginalFrames(val) if gate and source["in_graph"] == "full" else req.val

    def gate_model(path: Path, backend: str) -> dict[str, Any]:
        report = check_parity(trained, path, backend, val_input, pp.normalize(val.frames), criteria, pack,
                              _val_labels(val, pack), threads, reparameterized=student, gate_isa=source["gate_isa"])
        report["images"] = val.describe()
        report["held_out"] = "--val" if val_dir is not None else "split of --calib (never used for calibration)"
        return report

    req.gate_model = gate_model if gate else None
    try:
        result = spec.build(req)
    except IntermediateGateError as e:  # the intermediate model failed: the report is the gate's verdict
        return e.result, {**e.result.files, "labels": _save_labels(out, pack)}, e.report
    if (out / ONNX_FILE).exists() and ONNX_FILE not in result.files.values():
        (out / ONNX_FILE).unlink()
    files = {**result.files, "labels": _save_labels(out, pack)}
    if source["in_graph"] == "full":  # added after quantisation: the crop + resize head stays float32 at any precision
        from edgekd.export.frame_head import add_frame_head

        source["io"]["input"] = add_frame_head(out / files["model"], pp)
    if not gate:
        return result, files, {"passed": None, "skipped": True, "reasons": ["--no-gate"]}
    report = gate_model(out / files["model"], result.backend)
    onnx_gate = result.metadata.get(result.backend, {}).get("onnx_gate")
    if onnx_gate:
        report["onnx_gate"] = onnx_gate
    if not report["passed"] and result.metadata.get("quantization", {}).get("sensitivity"):
        report["most_sensitive_nodes"] = [r["node"] for r in result.metadata["quantization"]["sensitivity"][:10]]
    return result, files, report


def _retry_with_auto_mixed(precision: str, report: dict[str, Any], auto_mixed: bool | None) -> bool:
    """INT8 with --auto-mixed left at its default (None) whose gate failed on the model, not on a too-small set."""
    if precision != "int8" or auto_mixed is not None or report.get("passed") is not False:
        return False
    return any("the gate ran on" not in r for r in report["reasons"])


def _image_sets(calib_dir: str | os.PathLike | None, val_dir: str | os.PathLike | None, pp: Any, calib_images: int,
                val_images: int, gate: bool, precision: str, min_gate: int) -> tuple[Any, Any]:
    """Calibration and held-out parity images, never the same images. Without --val the gate's images are held out
    of --calib: enough to reach the gate's minimum, or an error that says how many more are needed."""
    from edgekd.export.calibration import load_image_set, plan_held_out, split_calib_val

    needs_calib = precision == "int8"
    if needs_calib and calib_dir is None:
        raise EdgekdError("--precision int8 needs --calib DIR (a few hundred representative images)")
    if gate and calib_dir is None and val_dir is None:
        raise EdgekdError("the parity gate needs real images: pass --val DIR (held-out images) or --calib DIR "
                          "(part of it is held out), or --no-gate to skip the check")
    val = load_image_set(val_dir, pp, val_images, "--val") if val_dir is not None else None
    calib = None
    if calib_dir is not None:
        held_out = gate and val is None
        calib = load_image_set(calib_dir, pp, calib_images + (val_images if held_out else 0), "--calib")
        if held_out:
            n_val = plan_held_out(len(calib), calib_images, val_images, min_gate, needs_calib, calib_dir)
            calib, val = split_calib_val(calib, n_val) if n_val < len(calib) else (None, calib)
    return calib, val


def in_graph_mode(value: bool | str | None) -> str | None:
    """--preprocess-in-graph as given (flag or value) -> None, "normalize" or "full"."""
    if value is None or value is False:
        return None
    if value is True or value == "normalize":
        return "normalize"
    if value == "full":
        return "full"
    raise EdgekdError(f"--preprocess-in-graph {value!r}: use normalize (uint8 frames at the model's size) or full "
                      "(uint8 frames of any size)")


def _save_labels(out: Path, pack: LabelPack | None) -> str | None:
    if pack is None:
        return None
    pack.save(out / LABELS_FILE)
    return LABELS_FILE


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _manifest(src: dict[str, Any], result: ExportResult, files: dict[str, str | None],
              report: dict[str, Any]) -> dict[str, Any]:
    """edgekd.json contents (docs/FORMATS.md "Export bundle"); write_manifest adds format, hashes and time."""
    from edgekd.students.io import weights_hash

    cfg, pack, io = src["cfg"], src["pack"], src["io"]
    return {
        "target": src["target"], "precision": src["precision"], "backend": result.backend, "files": files,
        "input": io["input"], "output": dict(io["output"]), **({"scores": io["scores"]} if "scores" in io else {}),
        "preprocess": src["pp"].to_dict(), "preprocess_in_graph": bool(src["in_graph"]),
        "resize_in_graph": src["in_graph"] == "full",
        "embed_dim": cfg.embed_dim, "logit_scale": pack.logit_scale if pack is not None else None,
        "teacher_id": cfg.teacher_id, "student": cfg.to_dict(),
        "source_run": {"path": str(src["run_dir"].resolve()), "weights_sha256": weights_hash(src["run_dir"])},
        "labels_source": src["pack_path"], "opset": src["opset"], "versions": backend_versions(),
        "calibration": src["calib"],
        "parity": {k: report.get(k) for k in ("passed", "skipped", "reasons", "criteria", "metrics", "validated_on",
                                              "reparameterization", "int8_attempts", "per_isa", "onnx_gate", "where")
                   if k in report},
        "eval": src["eval"], "target_metadata": result.metadata,
        "build_seconds": round(time.perf_counter() - src["t0"], 3),
    }


def load_run_eval(path: str | os.PathLike, run_dir: Path, cfg: Any) -> dict[str, Any]:
    """Read `edgekd eval RUN --out FILE` results and check they describe this run (student, teacher, step)."""
    from edgekd._io import read_json

    path = Path(path)
    if not path.is_file():
        raise EdgekdError(f"--eval {path}: no such file (write it with `edgekd eval RUN --data DIR --out FILE`)")
    try:
        results = read_json(path)
    except (ValueError, UnicodeDecodeError) as e:
        raise EdgekdError(f"--eval {path}: not valid JSON ({e})") from e
    if not isinstance(results, dict) or results.get("format") != "edgekd.eval":
        raise EdgekdError(f"--eval {path}: not the output of `edgekd eval` (format {results.get('format')!r})"
                          if isinstance(results, dict) else f"--eval {path}: not the output of `edgekd eval`")
    source = results.get("source") or {}
    run_meta = read_json(run_dir / "config.json").get("edgekd", {})
    expected = {"kind": "run", "arch": cfg.arch, "teacher_id": cfg.teacher_id, "step": run_meta.get("step")}
    wrong = [f"{k} {source.get(k)!r} != {v!r}" for k, v in expected.items() if v is not None and source.get(k) != v]
    if wrong:
        raise EdgekdError(f"--eval {path} was not made on this run's student ({'; '.join(wrong)}); re-run "
                          f"`edgekd eval {run_dir} --data DIR --out FILE`")
    return {**results, "file": path.name}
