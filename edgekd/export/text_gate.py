"""The gate an on-device text encoder passes before `edgekd export-text` writes it.

fp32: the ONNX tower against the torch teacher (edgekd.export.text, MIN_COSINE on its parity texts). fp16 / int8: the
compact tower against that fp32 tower over GATE_CLASSES x gate_templates() (class-major prompts), judged on
  - each prompt's embedding cosine (mean, 1st percentile, worst): with the runtime's default single template a label
    *is* one prompt, so this is what single-template labels move by;
  - each class's label embedding, the normalised template mean as TextEncoder.build_label_pack makes it (mean, worst);
  - top-1 agreement: every fp32 prompt embedding as a query (a stand-in for an image of that class: both live in the
    teacher's space) picks its best class under the compact labels and under the fp32 ones; a flip is forgiven when
    the query lies within the image gate's tie margin of the boundary between the two classes
    (edgekd.export.parity.boundary_agreement), and the strict rate is reported too. Random unit vectors would be
    near-orthogonal to every label and test noise, not decisions a camera makes.
Floors per precision are FLOORS; the verdict, the numbers and the CPU go into text_encoder.json under `gate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekd.export.parity import INT8_TIE_MARGIN, boundary_agreement

# Floors, from what ViT-B-32 with random weights (its classes lie within cosine ~0.986 of each other: closer calls than
# a trained tower's) and the tests' 32-d tower measured over the 480 prompts here, with a margin:
#   fp16: prompt cosine p1 0.999999 and label cosine worst 0.999999 on both, top-1 100% (strict 99.8% / 100%). The
#         floors sit at the image gate's fp16 level (0.999) to leave room for runtimes that compute in fp16.
#   int8: prompt cosine p1 0.9976 / 0.9975, label cosine worst 0.9984 / 0.9983, top-1 100% / 98.3% (strict 99.0% /
#         95.6%), ViT-B-32 / tiny. benchmarks/results/text_encoder.md has the ViT-B-32 run in full.
FLOORS: dict[str, dict[str, float]] = {
    "fp16": {"prompt_cosine_p01": 0.999, "label_cosine_min": 0.999, "top1_agreement": 0.99},
    "int8": {"prompt_cosine_p01": 0.99, "label_cosine_min": 0.995, "top1_agreement": 0.95},
}
GATE_METRICS = ("prompt_cosine_mean", "prompt_cosine_p01", "prompt_cosine_min", "label_cosine_mean", "label_cosine_min",
                "top1_agreement", "top1_agreement_strict")  # what a floor may name
# CIFAR-10, things a camera sees, and strings that stress the tokenizer (punctuation, case, digits, unicode, emoji)
GATE_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    "person", "bicycle", "car", "motorcycle", "bus", "train", "traffic light", "stop sign", "fire hydrant", "bench",
    "backpack", "umbrella", "handbag", "suitcase", "bottle", "cup", "chair", "couch", "potted plant", "bed",
    "dining table", "laptop", "cell phone", "keyboard", "book", "clock", "scissors", "forklift", "pallet",
    "cardboard box", "shopping cart", "delivery van", "ladder", "safety vest", "fire", "smoke", "an open door",
    "an empty room", "a crowd of people", "a package on a doorstep", "a person wearing a hard hat",
    "a damaged parcel",
    "it's a café's menu — 3½ dishes", "zebra crossing, at night 42", "UPPER-case LABEL", "数字 123 ４５６",
    "emoji 🐱🚗 ok", "e-mail: someone@example.com (v2.0)", "x-ray / CT scan (2nd)", "ÀÉÎÕÜ straße",
)


def gate_templates() -> list[str]:
    """The runtime's default template ("a photo of a {}.") + open_clip's 7 SIMPLE_IMAGENET_TEMPLATES."""
    from edgekd.runtime.text import DEFAULT_TEMPLATES
    from edgekd.teacher.prompts import builtin_templates

    return list(dict.fromkeys([*DEFAULT_TEMPLATES, *builtin_templates()["simple"]]))


def gate_prompts() -> list[str]:
    """GATE_CLASSES x gate_templates(), class-major: [n_classes * n_templates] strings."""
    templates = gate_templates()
    return [t.format(c) for c in GATE_CLASSES for t in templates]


def compare_towers(ref: np.ndarray, got: np.ndarray, n_classes: int, floors: dict[str, float]) -> dict[str, Any]:
    """Compact vs fp32 prompt embeddings, class-major ([n_classes * n_templates, D] unit rows each) -> {passed,
    metrics, floors}; passed: every floored metric at or above its floor (the module docstring has the metrics)."""
    cos = np.sum(ref * got, axis=1)

    def labels(e: np.ndarray) -> np.ndarray:
        m = e.reshape(n_classes, -1, e.shape[1]).mean(axis=1)
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    lr, lg = labels(ref), labels(got)
    label_cos = np.sum(lr * lg, axis=1)
    agrees, boundary = boundary_agreement(ref @ lr.T, np.argmax(ref @ lg.T, axis=1), lr, INT8_TIE_MARGIN)
    metrics = {"prompts": int(len(cos)), "classes": n_classes, "prompt_cosine_mean": float(cos.mean()),
               "prompt_cosine_p01": float(np.percentile(cos, 1)), "prompt_cosine_min": float(cos.min()),
               "label_cosine_mean": float(label_cos.mean()), "label_cosine_min": float(label_cos.min()),
               "top1_agreement": float(agrees.mean()), "top1_agreement_strict": float(np.mean(np.isinf(boundary))),
               "tie_margin": INT8_TIE_MARGIN}
    return {"passed": all(metrics[k] >= v for k, v in floors.items()), "metrics": metrics, "floors": dict(floors)}


def gate_compact(fp32: Path, compact: Path, tokenizer: Any, meta: dict[str, Any], precision: str,
                 floors: dict[str, float] | None = None) -> dict[str, Any]:
    """Embed gate_prompts() with both ONNX towers on onnxruntime (loading the compact one there is part of the test;
    `meta`: the text_encoder.json dict) and judge them against FLOORS[precision] (`floors` overrides entries).
    Returns the `gate` dict."""
    floors = {**FLOORS[precision], **(floors or {})}
    prompts = gate_prompts()
    ref, got = _embed(fp32, tokenizer, meta, prompts), _embed(compact, tokenizer, meta, prompts)
    gate = compare_towers(ref, got, len(GATE_CLASSES), floors)
    return {"precision": precision, "reference": "the fp32 tower", **gate,
            "templates": len(gate_templates()), "validated_on": validated_on()}


def fp32_gate(parity: dict[str, Any]) -> dict[str, Any]:
    """The fp32 tower's verdict: its parity with the torch teacher (which raised already if it failed)."""
    return {"precision": "fp32", "reference": "the torch teacher", "passed": True,
            "metrics": {"prompts": parity["texts"], "prompt_cosine_min": parity["min_cosine"]},
            "floors": {"prompt_cosine_min": parity["threshold"]}, "validated_on": validated_on()}


def failure_message(gate: dict[str, Any]) -> str:
    """One line for a failed gate: the metrics under their floors and the way out."""
    m = gate["metrics"]
    failed = ", ".join(f"{k} {m[k]:.5f} < {v}" for k, v in gate["floors"].items() if m[k] < v)
    return (f"{gate['precision']} text encoder gate failed against {gate['reference']} on {m['prompts']} prompts "
            f"({failed}); export it with --precision fp32")


def validated_on() -> dict[str, Any]:
    """Where the gate ran: the CPU (edgekd.cpu) and onnxruntime's version."""
    from edgekd._optional import installed_version
    from edgekd.cpu import cpu_facts, describe

    facts = cpu_facts()
    return {"cpu_name": describe(facts), "cpu": facts, "backend": "onnxruntime",
            "backend_version": installed_version("onnxruntime")}


def _embed(model: Path, tokenizer: Any, meta: dict[str, Any], texts: list[str]) -> np.ndarray:
    """Unit embeddings [N, D] of `texts` through the ONNX tower `model`, the runtime's way (TextEncoder.encode)."""
    from edgekd.runtime.backends import create_backend
    from edgekd.runtime.text import TextEncoder

    backend = create_backend(model, "onnxruntime", spin=False)
    return TextEncoder(model.parent, meta, tokenizer, backend).encode(texts, batch_size=64)
