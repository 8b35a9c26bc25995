"""Parity gate: the exported model (through edgekd.runtime.backends) next to the student as trained, on held-out
images. Thresholds and the data behind them: docs/export.md ("The parity gate").

Every precision is judged on the distribution of per-image embedding cosines (labels change at run time, so the
embedding itself must hold): its mean, its 1st percentile and its worst image. INT8 also needs top-1 agreement of
zero-shot predictions over the label pack and, on labelled images, a bounded accuracy drop. A gate on fewer than
MIN_GATE_IMAGES images fails unless asked for (small_gate_ok); agreement is reported with its 95 % interval.

Near-ties: an INT8 flip is forgiven when the reference embedding lies within `tie_margin` of the decision boundary
between the two classes, measured in the unit embedding space: (s_a - s_b) / ||w_a - w_b|| for the reference's
scores s and the classes' text embeddings w. That distance scales with the label pack's own spread: the same score
gap is a tie between two near-parallel labels and a real disagreement between two distinct ones. Every flip is still
reported (strict agreement); `tie_margin=0` gates on it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekd import EdgekdError
from edgekd.cpu import ONEDNN_ISA_ENV

if TYPE_CHECKING:
    import torch.nn as nn

    from edgekd.labelpack import LabelPack

log = logging.getLogger(__name__)

# embedding-cosine floors per precision: (mean, 1st percentile, worst image); docs/export.md says where they come from
COSINE_FLOORS = {"fp32": (0.9999, 0.9995, 0.999), "fp16": (0.999, 0.995, 0.99), "int8": (0.995, 0.98, 0.95)}
INT8_MIN_AGREEMENT = 0.98
INT8_MAX_DROP = 1.0  # accuracy points
INT8_TIE_MARGIN = 0.005  # distance of the reference embedding to the two classes' decision boundary
MIN_GATE_IMAGES = 200  # 98 % agreement on 200 images is +-2 points (95 % interval)
REPARAM_MIN_COSINE = 0.99999  # the reparameterised student against the student as trained, every image
# oneDNN ISA levels whose kernels differ (edgekd.cpu.ISA_LEVELS names): an OpenVINO verdict holds for each of them
GATE_ISA_LEVELS = ("AVX2", "AVX512_CORE_VNNI", "AVX512_CORE_AMX")
PER_ISA_METRICS = ("cosine_mean", "cosine_p01", "cosine_min", "top1_agreement", "top1_agreement_strict",
                   "accuracy_drop")
CRASH_ADVICE = ("the exported model crashes the engine on this CPU (the bundle is left unfinished); export with the "
                "default INT8 settings, --precision fp32 or another --target, and report it with the log above")


@dataclass(frozen=True)
class GateCriteria:
    precision: str
    min_mean_cosine: float
    min_p1_cosine: float
    min_worst_cosine: float
    min_agreement: float | None = None  # int8, with a label pack
    max_drop: float | None = None  # int8, on labelled images
    tie_margin: float = 0.0
    min_images: int = MIN_GATE_IMAGES

    @classmethod
    def default(cls, precision: str, max_drop: float | None = None, tie_margin: float | None = None,
                small_gate_ok: bool = False, **overrides: Any) -> GateCriteria:
        """The documented criteria of `precision`; `overrides` replace single fields (e.g. min_agreement=0.9)."""
        if precision not in COSINE_FLOORS:
            raise EdgekdError(f"no parity criteria for precision {precision!r}")
        mean, p1, worst = COSINE_FLOORS[precision]
        crit = cls(precision, mean, p1, worst, min_images=1 if small_gate_ok else MIN_GATE_IMAGES)
        if precision == "int8":
            crit = replace(crit, min_agreement=INT8_MIN_AGREEMENT, max_drop=INT8_MAX_DROP if max_drop is None
                           else max_drop, tie_margin=INT8_TIE_MARGIN if tie_margin is None else tie_margin)
        return replace(crit, **overrides)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (sound at 0 %, 100 % and small n, unlike p +- 1.96 * se)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def torch_embeddings(student: nn.Module, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Reference: the torch student on float32 [N,3,H,W] -> [N,D] unit rows."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(pixels), batch_size):
            out.append(student(torch.from_numpy(np.ascontiguousarray(pixels[i:i + batch_size]))).float().numpy())
    return np.concatenate(out)


def compare(reference: np.ndarray, exported: np.ndarray, label_pack: LabelPack | None = None,
            labels: np.ndarray | None = None, scores: np.ndarray | None = None,
            tie_margin: float = INT8_TIE_MARGIN) -> dict[str, Any]:
    """Metrics of exported vs reference embeddings [N,D]; labels int64 [N] index the pack's classes (-1 = unknown);
    tie_margin: distance to the decision boundary within which a flip is a tie (module docstring)."""
    ref = reference / np.maximum(np.linalg.norm(reference, axis=1, keepdims=True), 1e-12)
    exp = exported / np.maximum(np.linalg.norm(exported, axis=1, keepdims=True), 1e-12)
    cos = np.sum(ref * exp, axis=1)
    m: dict[str, Any] = {"images": int(len(ref)), "cosine_mean": float(cos.mean()),
                         "cosine_p01": float(np.percentile(cos, 1)), "cosine_p05": float(np.percentile(cos, 5)),
                         "cosine_min": float(cos.min()), "worst_image": int(cos.argmin()),
                         "max_abs_diff": float(np.abs(reference - exported).max()),
                         "output_norm_min": float(np.linalg.norm(exported, axis=1).min())}
    if label_pack is not None:
        m.update(_agreement(ref, exp, np.asarray(label_pack.embeddings, np.float64), tie_margin))
        if scores is not None:  # baked-in scores must equal logit_scale * embedding @ labels.T
            expect = label_pack.logit_scale * exported @ label_pack.embeddings.T
            m["scores_max_abs_diff"] = float(np.abs(scores - expect).max())
            m["logit_scale"] = label_pack.logit_scale
        if labels is not None and np.any(labels >= 0):
            known = labels >= 0
            pred_ref, pred_exp = (ref @ label_pack.embeddings.T).argmax(1), (exp @ label_pack.embeddings.T).argmax(1)
            acc_ref = float(np.mean(pred_ref[known] == labels[known]) * 100)
            acc_exp = float(np.mean(pred_exp[known] == labels[known]) * 100)
            m.update({"labelled_images": int(known.sum()), "accuracy_reference": acc_ref,
                      "accuracy_exported": acc_exp, "accuracy_drop": acc_ref - acc_exp})
    return m


def agreeing_images(ref: np.ndarray, exp: np.ndarray, w: np.ndarray, tie_margin: float) -> tuple[np.ndarray,
                                                                                                   np.ndarray]:
    """Per image: (agrees, flip's boundary distance) for unit embeddings ref/exp [N, D] over labels w [C, D].

    An image agrees when both pick the same class, or when the reference embedding lies within `tie_margin` of the
    decision boundary between the two classes it and the export picked; the distance is inf where they agree.
    """
    ref_cos = ref @ w.T  # [N, C]
    return boundary_agreement(ref_cos, (exp @ w.T).argmax(1), w, tie_margin)


def boundary_agreement(ref_cos: np.ndarray, pred_exp: np.ndarray, w: np.ndarray, tie_margin: float
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Per query: (agrees, flip's boundary distance) for the reference's scores ref_cos [N, C] over labels w [C, D]
    against another pick pred_exp [N] (the module docstring's near-tie rule; inf where both pick the same class)."""
    pred_ref = ref_cos.argmax(1)
    rows = np.arange(len(ref_cos))
    pair_dist = np.linalg.norm(w[pred_ref] - w[pred_exp], axis=1)
    boundary = np.where(pred_ref == pred_exp, np.inf,
                        (ref_cos[rows, pred_ref] - ref_cos[rows, pred_exp]) / np.maximum(pair_dist, 1e-12))
    return (pred_ref == pred_exp) | (boundary <= tie_margin), boundary


def _agreement(ref: np.ndarray, exp: np.ndarray, w: np.ndarray, tie_margin: float) -> dict[str, Any]:
    """Top-1 agreement over label embeddings w [C, D], strict and forgiving near-ties (module docstring)."""
    agrees, boundary = agreeing_images(ref, exp, w, tie_margin)
    flips = np.isfinite(boundary)
    lo, hi = wilson_interval(int(agrees.sum()), len(ref))
    return {"top1_agreement": float(agrees.mean()), "top1_agreement_ci95": [lo, hi],
            "top1_agreement_strict": float(np.mean(~flips)), "tie_margin": float(tie_margin),
            "flips": int(flips.sum()), "flips_within_tie_margin": int(np.sum(flips & agrees)),
            "flip_boundary_distances": sorted(round(float(d), 6) for d in boundary[flips])[:50]}


def gate_margin(metrics: dict[str, Any], criteria: GateCriteria) -> float:
    """How far `metrics` clear the gate's floors, as one number: the smallest share of its allowance that any
    criterion keeps, (value - floor) / (1 - floor) over the cosine mean, 1st percentile and worst image and the top-1
    agreement (when measured). 1 = identical to the reference, >= 0 = every one of those criteria passes, < 0 = one
    fails (-inf for NaN/Inf outputs). What --auto-mixed's search for OpenVINO maximises."""
    if not np.isfinite(metrics["cosine_mean"]):
        return float("-inf")
    pairs = [(metrics["cosine_mean"], criteria.min_mean_cosine), (metrics["cosine_p01"], criteria.min_p1_cosine),
             (metrics["cosine_min"], criteria.min_worst_cosine)]
    if criteria.min_agreement is not None and "top1_agreement" in metrics:
        pairs.append((metrics["top1_agreement"], criteria.min_agreement))
    return float(min((value - floor) / max(1.0 - floor, 1e-12) for value, floor in pairs))


def judge(metrics: dict[str, Any], criteria: GateCriteria) -> tuple[bool, list[str], str]:
    """(passed, failure reasons, criterion description) for `metrics` under `criteria`."""
    if not np.isfinite(metrics["cosine_mean"]):
        return False, ["the exported model produced NaN/Inf"], "finite outputs"
    checks = [  # (what is judged, its value, the floor, how to say it failed)
        ("images", metrics["images"], criteria.min_images,
         f"the gate ran on {metrics['images']} image(s), fewer than {criteria.min_images} (give --val DIR or more "
         "--calib images, or accept a small gate with --small-gate-ok)"),
        ("cosine_mean", metrics["cosine_mean"], criteria.min_mean_cosine,
         f"mean embedding cosine {metrics['cosine_mean']:.6f} < {criteria.min_mean_cosine}"),
        ("cosine_p01", metrics["cosine_p01"], criteria.min_p1_cosine,
         f"1st-percentile embedding cosine {metrics['cosine_p01']:.6f} < {criteria.min_p1_cosine}"),
        ("cosine_min", metrics["cosine_min"], criteria.min_worst_cosine,
         f"worst image's embedding cosine {metrics['cosine_min']:.6f} < {criteria.min_worst_cosine} (image "
         f"{metrics.get('worst_image')} of the gate set)"),
    ]
    if criteria.min_agreement is not None and "top1_agreement" in metrics:
        lo, hi = metrics["top1_agreement_ci95"]
        checks.append(("top1_agreement", metrics["top1_agreement"], criteria.min_agreement,
                       f"top-1 agreement {metrics['top1_agreement']:.2%} (95% interval {lo:.1%}-{hi:.1%}) < "
                       f"{criteria.min_agreement:.2%}; strict {metrics['top1_agreement_strict']:.2%}, "
                       f"{metrics['flips'] - metrics['flips_within_tie_margin']} flip(s) farther than "
                       f"{criteria.tie_margin:g} from the class boundary"))
    if criteria.max_drop is not None and "accuracy_drop" in metrics:
        checks.append(("accuracy_drop", -metrics["accuracy_drop"], -criteria.max_drop,
                       f"zero-shot accuracy drop {metrics['accuracy_drop']:.2f} > {criteria.max_drop} points"))
    fails = [message for _, value, floor, message in checks if value < floor]
    if metrics.get("scores_max_abs_diff", 0.0) > 1e-2 * max(1.0, metrics.get("logit_scale", 100.0)):
        fails.append(f"baked-in scores differ from logit_scale * cosine by {metrics['scores_max_abs_diff']:.3g}")
    used = [f"images >= {criteria.min_images}", f"cosine mean >= {criteria.min_mean_cosine}",
            f"p1 >= {criteria.min_p1_cosine}", f"worst >= {criteria.min_worst_cosine}"]
    if criteria.min_agreement is not None and "top1_agreement" in metrics:
        used.append(f"top-1 agreement >= {criteria.min_agreement:.0%} (flips within {criteria.tie_margin:g} of the "
                    "class boundary forgiven)")
    if criteria.max_drop is not None and "accuracy_drop" in metrics:
        used.append(f"accuracy drop <= {criteria.max_drop} points")
    return not fails, fails, "; ".join(used)


def check_reparameterization(trained: nn.Module, reparameterized: nn.Module, pixels: np.ndarray) -> dict[str, Any]:
    """The reparameterised student (what is exported) against the student as trained, on the gate's images."""
    a, b = torch_embeddings(trained, pixels), torch_embeddings(reparameterized, pixels)
    cos = np.sum(a * b, 1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    worst = float(cos.min())
    return {"cosine_min": worst, "passed": bool(worst >= REPARAM_MIN_COSINE), "min_cosine": REPARAM_MIN_COSINE}


def gate_isa_levels(backend: str, gate_isa: str = "all") -> list[str | None]:
    """The oneDNN ISA levels the gate runs the model under: for OpenVINO on a CPU, every level of GATE_ISA_LEVELS this
    CPU has up to the one in force (plus that one), so a verdict covers the kernel paths other CPUs take; one run
    (None: no cap) for other backends, whose kernels no cap reaches, or with gate_isa="host"."""
    from edgekd.cpu import cpu_facts

    if gate_isa not in ("all", "host"):
        raise EdgekdError(f"--gate-isa {gate_isa!r}: use all (every ISA level of this CPU) or host")
    facts = cpu_facts()
    levels, current = facts["onednn_isa_levels"], facts["onednn_isa"]
    if backend != "openvino" or gate_isa == "host" or current not in levels:
        return [None]
    top = levels.index(current)
    return [lvl for lvl in levels[:top + 1] if lvl in GATE_ISA_LEVELS or lvl == current]


def check_parity(student: nn.Module, model_path: str | os.PathLike, backend: str,
                 val_input: np.ndarray | Sequence[np.ndarray],
                 val_pixels: np.ndarray, criteria: GateCriteria, label_pack: LabelPack | None = None,
                 labels: np.ndarray | None = None, threads: int | None = None,
                 reparameterized: nn.Module | None = None, gate_isa: str = "all") -> dict[str, Any]:
    """Run the gate against `student` as trained. val_input: the model's input format [N,...] (or whole frames, see
    edgekd.runtime.isolated.run_model); val_pixels: the same images as float32 [N,3,H,W] for the torch student;
    reparameterized: the fused student that was exported, checked against `student` too; gate_isa: "all" judges an
    OpenVINO model under every ISA level of this CPU (gate_isa_levels) and passes it only if every level passes.
    Returns the parity report {"passed", "reasons", "criteria", "metrics", "per_isa", "validated_on", ...}."""
    from edgekd.runtime.backends import resolve_backend
    from edgekd.runtime.canary import host_record
    from edgekd.runtime.isolated import infer_isolated

    if len(val_input) == 0:
        raise EdgekdError("parity gate: no held-out images")
    name = resolve_backend(model_path, backend)
    ref = torch_embeddings(student, val_pixels)
    levels = gate_isa_levels(name, gate_isa)
    per_isa: dict[str, dict[str, Any]] = {}
    for level in levels:
        # in a child process: a freshly quantised graph may crash the engine on this CPU, which must not end the export
        outs = infer_isolated(model_path, name, val_input, threads, env={ONEDNN_ISA_ENV: level} if level else None,
                              what=f"the parity gate's {name} inference of {model_path}"
                                   + (f" under {ONEDNN_ISA_ENV}={level}" if level else ""), advice=CRASH_ADVICE)
        if "embedding" not in outs:
            raise EdgekdError(f"{model_path}: the exported model has no 'embedding' output (outputs: {list(outs)})")
        metrics = compare(ref, outs["embedding"], label_pack, labels, outs.get("scores"), criteria.tie_margin)
        passed, reasons, crit = judge(metrics, criteria)
        per_isa[level or "host"] = {"passed": passed, "reasons": reasons, "metrics": metrics}
    host = per_isa[levels[-1] or "host"]  # the level in force: what this machine runs
    reasons = [f"[{lvl}] {r}" if len(per_isa) > 1 else r for lvl, v in per_isa.items() for r in v["reasons"]]
    report = {"passed": all(v["passed"] for v in per_isa.values()), "skipped": False, "reasons": reasons,
              "criteria": crit, "backend": name, "precision": criteria.precision, "metrics": host["metrics"],
              "validated_on": {**host_record(name), "onednn_isa_levels": [lvl for lvl in levels if lvl]}}
    if len(per_isa) > 1:
        report["per_isa"] = {lvl: {"passed": v["passed"], **{k: v["metrics"].get(k) for k in PER_ISA_METRICS}}
                             for lvl, v in per_isa.items()}
    if reparameterized is not None and reparameterized is not student:
        report["reparameterization"] = check_reparameterization(student, reparameterized, val_pixels)
        if not report["reparameterization"]["passed"]:
            report["passed"] = False
            report["reasons"] = [f"the reparameterised student (what was exported) differs from the student as "
                                 f"trained: worst cosine {report['reparameterization']['cosine_min']:.6f} < "
                                 f"{REPARAM_MIN_COSINE}; export of this architecture's fused blocks is broken, "
                                 "report it", *reasons]
    log.info("parity %s: %s", "passed" if report["passed"] else "FAILED",
             {k: report["metrics"][k] for k in ("cosine_mean", "cosine_p01", "cosine_min")})
    return report


def failure_advice(precision: str, target: str, auto_mixed: bool = False) -> str:
    """Which options to try when the gate fails (not the ones already used)."""
    if precision == "int8":
        tips = ["more/more representative --calib images", "another --calib-method (minmax, entropy, percentile)"]
        if not auto_mixed:
            tips.insert(0, "--auto-mixed (keep the most sensitive layers in float)")
        tips.insert(1, "--keep-fp16 LAYERS" if target == "openvino" else "--keep-fp32 NODES (names from parity.json)")
    elif precision == "fp16":
        tips = ["--precision fp32"]
    else:
        tips = ["check that the run's preprocessing matches (edgekd info RUN)", "re-export with --opset 17",
                "report a bug with parity.json"]
    return "try " + " / ".join(dict.fromkeys(tips)) + "; --no-gate skips the check (recorded in edgekd.json)"
