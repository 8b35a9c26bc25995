"""`--precision auto`: export every precision the target offers, gate each, time each on this machine, keep the
fastest one that passes.

Which precision is fastest depends on the device, not on the model alone: INT8 CNNs gain on VNNI/AMX CPUs, ARM
dot-product cores and GPUs, yet lose on CPUs without them or for models whose activations have no int8 kernel
(onnxruntime runs efficientvit's HardSwish in float between int8 convolutions). So the choice is measured: batch 1 on
the runtime backend, with the parity gate's verdict as the filter. The candidates and their timings are recorded in
the chosen bundle's edgekd.json under "precision_auto".

INT8 is tried the way a plain `--precision int8` export is: OpenVINO with the overflow fix that --gate-isa calls for
(edgekd/export/openvino.py), and, when full INT8 fails its gate, again with --auto-mixed (edgekd/export/pipeline.py).
Only when that fails too does auto keep fp32, and it says why in one line (logged, and "fell_back_because").
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgekd import EdgekdError
from edgekd._io import atomic_write_json, read_json
from edgekd.cpu import cpu_facts
from edgekd.export.bundle import MANIFEST
from edgekd.export.pipeline import GateFailedError, export_bundle
from edgekd.export.targets import get_target

log = logging.getLogger(__name__)

# fp16 is left out on CPU targets: onnxruntime's CPU kernels and OpenVINO's f32-pinned CPU plugin do not run it faster
AUTO_PRECISIONS = {"onnx": ("fp32", "int8"), "openvino": ("fp32", "int8")}


def auto_candidates(target: str, calib_dir: str | os.PathLike | None) -> list[str]:
    """Precisions `--precision auto` tries for `target` (int8 only with calibration images)."""
    spec = get_target(target)
    if target not in AUTO_PRECISIONS:
        raise EdgekdError(f"--precision auto: not available for --target {target} (it picks by timing the model on "
                          f"this machine); choose one of {', '.join(spec.precisions)}, or use trtexec --best on the "
                          "device")
    wanted = [p for p in AUTO_PRECISIONS[target] if p in spec.precisions]
    if calib_dir is None:
        log.warning("--precision auto: no --calib images, so int8 is not tried")
        wanted = [p for p in wanted if p != "int8"]
    return wanted


def time_bundles(bundles: dict[str, Path], threads: int | None, rounds: int = 7, iters: int = 20,
                 warmup: int = 10) -> dict[str, dict[str, float]]:
    """Batch-1 latency (ms) of each bundle's model on its runtime backend, measured in interleaved rounds so that
    load changes on a shared machine hit every candidate alike. -> {name: {"p50_ms", "min_ms"}}."""
    from edgekd.runtime.classifier import OpenVocabClassifier

    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    runs = {}
    for name, path in bundles.items():
        clf = OpenVocabClassifier.load(path, threads=threads)
        x = np.ascontiguousarray(clf.prepare(frame)[None], dtype=clf.input_dtype)
        for _ in range(warmup):
            clf.backend.run(x)
        runs[name] = (clf.backend, x)
    laps: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (backend, x) in runs.items():
            for _ in range(iters):
                t0 = time.perf_counter()
                backend.run(x)
                laps[name].append(time.perf_counter() - t0)
    return {name: {"p50_ms": round(float(np.median(t)) * 1e3, 4), "min_ms": round(float(np.min(t)) * 1e3, 4)}
            for name, t in laps.items()}


def time_bundles_job(bundles: dict[str, str], threads: int | None) -> dict[str, dict[str, float]]:
    """Child side of the timing in export_auto (edgekd.runtime.isolated)."""
    return time_bundles({name: Path(path) for name, path in bundles.items()}, threads)


def export_auto(run_dir: str | os.PathLike, target: str, out: str | os.PathLike, *,
                calib_dir: str | os.PathLike | None = None, threads: int | None = None, overwrite: bool = False,
                gate: bool = True, **kwargs: Any) -> Path:
    """Export `run_dir` at every candidate precision of `target`, keep the fastest that passes its parity gate at
    `out`. Raises GateFailedError (exit 3) when none passes (the candidates stay in OUT.auto/ for inspection)."""
    if not gate:
        raise EdgekdError("--precision auto chooses among precisions that pass the parity gate; drop --no-gate")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EdgekdError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file() and not overwrite:
        raise EdgekdError(f"--out {out}: folder is not empty and not an edgekd bundle; choose a new folder")
    precisions = auto_candidates(target, calib_dir)
    work = out.with_name(out.name + ".auto")
    work.mkdir(parents=True, exist_ok=True)
    verdicts: dict[str, dict[str, Any]] = {}
    for precision in precisions:
        cand = work / precision
        log.info("--precision auto: exporting %s %s", target, precision)
        try:
            export_bundle(run_dir, target, precision, cand, calib_dir=calib_dir, threads=threads, overwrite=True,
                          **kwargs)
            verdicts[precision] = {"passed": True}
        except GateFailedError as e:
            verdicts[precision] = {"passed": False, "reasons": e.report.get("reasons", [])}
            if precision == "int8":
                verdicts[precision]["tried"] = int8_tries(e.bundle, e.report, kwargs)
    passing = {p: work / p for p, v in verdicts.items() if v["passed"]}
    if not passing:
        reasons = "; ".join(f"{p}: {', '.join(v['reasons'])}" for p, v in verdicts.items())
        raise GateFailedError(f"--precision auto: no precision of {target} passed its parity gate ({reasons}); "
                              f"bundles and parity.json in {work}", work, {"candidates": verdicts})
    # a candidate that passed its gate in a child may still crash in this process: time them in a child too
    from edgekd.runtime.isolated import call_isolated

    timings = call_isolated("edgekd.export.auto:time_bundles_job",
                            {"bundles": {p: str(b) for p, b in passing.items()}, "threads": threads},
                            what=f"timing the {target} candidates of --precision auto in {work}",
                            advice="export one --precision at a time")
    for p, t in timings.items():
        verdicts[p].update(t)
    for p in precisions:
        verdicts[p]["model_mb"] = round(_model_bytes(work / p) / 1e6, 3)
    chosen = min(timings, key=lambda p: timings[p]["p50_ms"])
    fallback = fallback_reason(verdicts, chosen)
    if fallback:
        log.warning("--precision auto: %s", fallback)
    log.info("--precision auto: %s", ", ".join(f"{p} {v.get('p50_ms', '-')} ms (passed={v['passed']})"
                                              for p, v in verdicts.items()))
    _move_bundle(work / chosen, out)
    manifest = read_json(out / MANIFEST)
    manifest["precision_auto"] = {"chosen": chosen, "threads": threads, "batch": 1,
                                  "measured": "median of interleaved rounds on this machine",
                                  "cpu": cpu_facts(), "candidates": verdicts,
                                  **({"fell_back_because": fallback} if fallback else {})}
    atomic_write_json(out / MANIFEST, manifest)
    shutil.rmtree(work, ignore_errors=True)
    return out


def int8_tries(bundle: Path, report: dict[str, Any], options: dict[str, Any]) -> list[str]:
    """What a failed INT8 candidate tried, from its bundle's edgekd.json and gate report: ["overflow_fix=enable",
    "--auto-mixed"] (the overflow fix of an OpenVINO INT8; --auto-mixed from the start or as the retry after full
    INT8 failed)."""
    manifest = read_json(bundle / MANIFEST) if (bundle / MANIFEST).is_file() else {}
    meta = manifest.get("target_metadata") or {}
    quant = meta.get("quantization") or (meta.get(manifest.get("backend") or "") or {}).get("quantization") or {}
    tried = [f"overflow_fix={quant['overflow_fix']}"] if quant.get("overflow_fix") else []
    if report.get("int8_attempts") or options.get("auto_mixed"):
        tried.append("--auto-mixed")
    return tried


def fallback_reason(verdicts: dict[str, dict[str, Any]], chosen: str) -> str | None:
    """One line on why `chosen` was kept although INT8 was tried and failed its gate; None when INT8 was not tried,
    passed, or was chosen."""
    int8 = verdicts.get("int8")
    if chosen == "int8" or int8 is None or int8["passed"]:
        return None
    reasons = int8.get("reasons") or ["no reason recorded"]
    more = f" (+{len(reasons) - 1} more in edgekd.json precision_auto)" if len(reasons) > 1 else ""
    tried = f" with {' and '.join(int8['tried'])}" if int8.get("tried") else ""
    return f"int8 failed its parity gate{tried}: {reasons[0]}{more}; kept {chosen}"


def _move_bundle(src: Path, out: Path) -> None:
    """Put the bundle `src` at `out`: an old bundle there is swapped out whole (never a moment with a half bundle);
    into a folder of other files (--overwrite) the bundle's files are moved one by one, the rest left alone."""
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        for f in src.iterdir():
            os.replace(f, out / f.name)
        return
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(src, out)
    shutil.rmtree(old, ignore_errors=True)


def _model_bytes(bundle: Path) -> int:
    """Bytes of the bundle's model files (everything hashed in edgekd.json but the label pack)."""
    manifest = read_json(bundle / MANIFEST) if (bundle / MANIFEST).is_file() else {}
    labels = (manifest.get("files") or {}).get("labels")
    return sum((bundle / f).stat().st_size for f in manifest.get("sha256", {})
               if f != labels and (bundle / f).is_file())
