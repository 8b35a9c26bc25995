"""Parity gate: the exported model (through edgekd.runtime.backends) next to the torch student on held-out images.

Per precision (documented in docs/export.md):
  fp32: mean embedding cosine >= 0.9999;  fp16: >= 0.999;
  int8: top-1 agreement of zero-shot predictions >= 98 % and zero-shot accuracy drop <= --max-drop points (when the
        held-out images are labelled with the pack's classes); without a label pack, mean cosine >= 0.98.

Top-1 agreement forgives near-ties: an image counts as a disagreement only when the reference scores the exported
model's class more than `tie_margin` (cosine, default 0.001 = 0.1 logit at CLIP's scale 100) below its own top-1.
When the reference itself cannot tell two classes apart, which of them quantisation noise picks says nothing about
the exported model. The strict agreement (every flip counts) is reported next to it; `--tie-margin 0` gates on it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekd import EdgekdError

if TYPE_CHECKING:
    import torch.nn as nn

    from edgekd.labelpack import LabelPack

log = logging.getLogger(__name__)

MIN_MEAN_COSINE = {"fp32": 0.9999, "fp16": 0.999}
INT8_MIN_AGREEMENT = 0.98
INT8_MAX_DROP = 1.0  # accuracy points
INT8_FALLBACK_MIN_COSINE = 0.98
INT8_TIE_MARGIN = 1e-3  # cosine
CRASH_ADVICE = ("the exported model crashes the engine on this CPU (the bundle is left unfinished); export with the "
                "default INT8 settings, --precision fp32 or another --target, and report it with the log above")


@dataclass(frozen=True)
class GateCriteria:
    precision: str
    min_mean_cosine: float | None = None
    min_agreement: float | None = None
    max_drop: float | None = None
    tie_margin: float = 0.0

    @classmethod
    def default(cls, precision: str, max_drop: float | None = None, min_cosine: float | None = None,
                min_agreement: float | None = None, tie_margin: float | None = None) -> GateCriteria:
        if precision == "int8":
            return cls(precision, min_cosine, INT8_MIN_AGREEMENT if min_agreement is None else min_agreement,
                       INT8_MAX_DROP if max_drop is None else max_drop,
                       INT8_TIE_MARGIN if tie_margin is None else tie_margin)
        return cls(precision, MIN_MEAN_COSINE[precision] if min_cosine is None else min_cosine)


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
    tie_margin: cosine within which the reference's own top-1 and the exported top-1 count as a tie."""
    ref = reference / np.maximum(np.linalg.norm(reference, axis=1, keepdims=True), 1e-12)
    exp = exported / np.maximum(np.linalg.norm(exported, axis=1, keepdims=True), 1e-12)
    cos = np.sum(ref * exp, axis=1)
    m: dict[str, Any] = {"images": int(len(ref)), "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
                         "cosine_p05": float(np.percentile(cos, 5)),
                         "max_abs_diff": float(np.abs(reference - exported).max()),
                         "output_norm_min": float(np.linalg.norm(exported, axis=1).min())}
    if label_pack is not None:
        w = label_pack.embeddings
        ref_cos = ref @ w.T  # [N, C]
        pred_ref, pred_exp = ref_cos.argmax(1), (exp @ w.T).argmax(1)
        rows = np.arange(len(ref))
        gap = ref_cos[rows, pred_ref] - ref_cos[rows, pred_exp]  # how much worse the reference finds the new class
        runner_up = np.sort(ref_cos, axis=1)[:, -2] if w.shape[0] > 1 else ref_cos[:, 0] - np.inf
        m["top1_agreement_strict"] = float(np.mean(pred_ref == pred_exp))
        m["top1_agreement"] = float(np.mean(gap <= tie_margin))
        m["tie_margin"] = float(tie_margin)
        m["near_ties"] = int(np.sum(ref_cos[rows, pred_ref] - runner_up <= tie_margin))
        m["flips_within_tie_margin"] = int(np.sum((pred_ref != pred_exp) & (gap <= tie_margin)))
        if scores is not None:  # baked-in scores must equal logit_scale * embedding @ labels.T
            expect = label_pack.logit_scale * exported @ w.T
            m["scores_max_abs_diff"] = float(np.abs(scores - expect).max())
            m["logit_scale"] = label_pack.logit_scale
        if labels is not None and np.any(labels >= 0):
            known = labels >= 0
            acc_ref = float(np.mean(pred_ref[known] == labels[known]) * 100)
            acc_exp = float(np.mean(pred_exp[known] == labels[known]) * 100)
            m.update({"labelled_images": int(known.sum()), "accuracy_reference": acc_ref,
                      "accuracy_exported": acc_exp, "accuracy_drop": acc_ref - acc_exp})
    return m


def judge(metrics: dict[str, Any], criteria: GateCriteria) -> tuple[bool, list[str], str]:
    """(passed, failure reasons, criterion description) for `metrics` under `criteria`."""
    fails: list[str] = []
    used: list[str] = []
    if not np.isfinite(metrics["cosine_mean"]):
        return False, ["the exported model produced NaN/Inf"], "finite outputs"
    min_cos = criteria.min_mean_cosine
    if criteria.precision == "int8":
        if "top1_agreement" in metrics:
            used.append(f"top1_agreement >= {criteria.min_agreement:.2%} (ties within {criteria.tie_margin:g} "
                        "cosine forgiven)")
            if metrics["top1_agreement"] < criteria.min_agreement:
                fails.append(f"top-1 agreement {metrics['top1_agreement']:.2%} < {criteria.min_agreement:.2%} "
                             f"(strict: {metrics['top1_agreement_strict']:.2%})")
            if "accuracy_drop" in metrics:
                used.append(f"accuracy_drop <= {criteria.max_drop} points")
                if metrics["accuracy_drop"] > criteria.max_drop:
                    fails.append(f"zero-shot accuracy drop {metrics['accuracy_drop']:.2f} > {criteria.max_drop} "
                                 "points")
        elif min_cos is None:
            min_cos = INT8_FALLBACK_MIN_COSINE  # no label pack: fall back to embedding fidelity
    if min_cos is not None:
        used.append(f"cosine_mean >= {min_cos}")
        if metrics["cosine_mean"] < min_cos:
            fails.append(f"mean embedding cosine {metrics['cosine_mean']:.6f} < {min_cos}")
    if metrics.get("scores_max_abs_diff", 0.0) > 1e-2 * max(1.0, metrics.get("logit_scale", 100.0)):
        fails.append(f"baked-in scores differ from logit_scale * cosine by {metrics['scores_max_abs_diff']:.3g}")
    return not fails, fails, "; ".join(used)


def check_parity(student: nn.Module, model_path: str | os.PathLike, backend: str,
                 val_input: np.ndarray | Sequence[np.ndarray],
                 val_pixels: np.ndarray, criteria: GateCriteria, label_pack: LabelPack | None = None,
                 labels: np.ndarray | None = None, threads: int | None = None) -> dict[str, Any]:
    """Run the gate. val_input: the model's input format [N,...] (or whole frames, see run_model); val_pixels: the
    same images as float32 [N,3,H,W] for the torch student.
    Returns the parity report {"passed", "reasons", "criteria", "metrics", ...}."""
    from edgekd.runtime.backends import resolve_backend
    from edgekd.runtime.canary import host_record
    from edgekd.runtime.isolated import infer_isolated

    if len(val_input) == 0:
        raise EdgekdError("parity gate: no held-out images")
    name = resolve_backend(model_path, backend)
    # in a child process: a freshly quantised graph may crash the engine on this CPU, which must not end the export
    outs = infer_isolated(model_path, name, val_input, threads, what=f"the parity gate's {name} inference of "
                          f"{model_path}", advice=CRASH_ADVICE)
    if "embedding" not in outs:
        raise EdgekdError(f"{model_path}: the exported model has no 'embedding' output (outputs: {list(outs)})")
    ref = torch_embeddings(student, val_pixels)
    metrics = compare(ref, outs["embedding"], label_pack, labels, outs.get("scores"), criteria.tie_margin)
    passed, reasons, crit = judge(metrics, criteria)
    log.info("parity %s: %s", "passed" if passed else "FAILED", {k: metrics[k] for k in ("cosine_mean", "cosine_min")})
    return {"passed": passed, "skipped": False, "reasons": reasons, "criteria": crit, "backend": name,
            "precision": criteria.precision, "metrics": metrics, "validated_on": host_record(name)}


def failure_advice(precision: str, target: str, auto_mixed: bool = False) -> str:
    """Which options to try when the gate fails (not the ones already used)."""
    if precision == "int8":
        tips = ["more/more representative --calib images", "another --calib-method (minmax, entropy, percentile)"]
        if not auto_mixed:
            tips.insert(0, "--auto-mixed (keep the most sensitive layers in float)")
        tips.insert(1, "--keep-fp16 LAYERS" if target != "onnx" else "--keep-fp32 NODES (names from parity.json)")
    elif precision == "fp16":
        tips = ["--precision fp32", "--keep-fp16 with fewer layers" if target == "tensorrt" else "--precision fp32"]
    else:
        tips = ["check that the run's preprocessing matches (edgekd info RUN)", "re-export with --opset 17",
                "report a bug with parity.json"]
    return "try " + " / ".join(dict.fromkeys(tips)) + "; --no-gate skips the check (recorded in edgekd.json)"
