"""Frozen configs for distillation and the named loss recipes (YAML/CLI parsing lives in edgekd.cli.distill)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from edgekd import EdgekdError
from edgekd.distill.losses import CE_LT_MODES
from edgekd.preprocess import INTERPOLATIONS
from edgekd.resize import RESIZE_METHODS

# term -> what it is (the numbering). The CLI has one --w-<term> option per entry.
TERMS: dict[str, str] = {
    "cos": "1. feature imitation: 1 - cos(student, teacher image embedding)",
    "mse": "1. feature imitation: ||s - t||^2 (OOD-2023 L_mse)",
    "cls": "2. CE to the ground truth over label text embeddings (L_cls / CE_LT); labeled rows only",
    "kl": "2. T^2-scaled KL to the teacher's zero-shot distribution (VLM-KD)",
    "vlalign": "2. KL over the teacher's top-k classes (OOD-2023 L_vlalign)",
    "cst": "3. in-batch student-teacher InfoNCE (OOD-2023 L_cst)",
    "rel": "3. relational: match in-batch image-image similarity rows (KL)",
    "cap": "4. caption CE, no temperature, same-class masked (OOD-2023 L_cap)",
    "capcon": "4. symmetric caption contrastive, tau = temperature (VLM-KD); works unlabeled",
}
LABEL_TERMS = ("cls",)  # need labeled rows
LABEL_TEXT_TERMS = ("cls", "kl", "vlalign")  # need a label pack (class text embeddings)
CAPTION_TERMS = ("cap", "capcon")

# Named recipes: term weights plus loss settings. "default" is resolved from the data (see resolve_weights).
RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    "ood2023": {"weights": {"cls": 1.0, "vlalign": 1.0, "mse": 1.0, "cst": 1.0}, "temperature": 0.07, "topk": 256,
                "teacher_correct": True, "label_text": "enriched"},
    "vlmkd": {"weights": {"cls": 1.0, "kl": 1.0, "capcon": 1.0}, "temperature": 0.07, "kd_temperature": 2.0},
}
LABEL_TEXTS = ("enriched", "simple")


@dataclass(frozen=True)
class LossConfig:
    """Loss weights (term -> weight, 0 = off) and the settings the terms share."""

    weights: dict[str, float] = field(default_factory=dict)
    temperature: float = 0.07  # T of cls/vlalign/cst/rel and tau of capcon
    kd_temperature: float = 2.0  # T of the VLM-KD KL (scaled by T^2)
    topk: int = 256  # classes kept by vlalign
    teacher_correct: bool = True  # vlalign: drop labeled rows the teacher misclassifies
    ce_lt: str = "plain"  # plain | balanced | logit-adjust
    la_tau: float = 1.0  # logit-adjustment strength

    def __post_init__(self) -> None:
        unknown = sorted(set(self.weights) - set(TERMS))
        if unknown:
            raise EdgekdError(f"unknown loss term(s) {', '.join(unknown)}; known: {', '.join(TERMS)}")
        bad = {k: v for k, v in self.weights.items() if not v >= 0}
        if bad:
            raise EdgekdError(f"loss weights must be >= 0, got {bad}")
        if self.temperature <= 0 or self.kd_temperature <= 0:
            raise EdgekdError("--temperature and --kd-temperature must be > 0")
        if self.topk < 1:
            raise EdgekdError("--topk must be >= 1")
        if self.ce_lt not in CE_LT_MODES:
            raise EdgekdError(f"--ce-lt {self.ce_lt!r}: use one of {', '.join(CE_LT_MODES)}")

    @property
    def active(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.weights.items() if v > 0}


@dataclass(frozen=True)
class DistillConfig:
    """Everything `edgekd distill` needs; saved resolved as the run's config.yaml."""

    cache: str
    student: str
    out: str
    data_root: str | None = None  # where the cached dataset's images are now (None = the root the cache recorded)
    img_size: int = 224
    interpolation: str | None = None  # the student's resize filter; None = the teacher's (from the cache)
    resize_method: str | None = None  # edgekd.resize method of the student (training and runtime); None = pillow
    aug_crop: float = 1.0  # student input: crop inside the cached view keeping >= this fraction of its area (1 = off)
    aug_jitter: float = 0.0  # student input: brightness/contrast/saturation jitter strength (0 = off)
    head: str = "linear"
    head_hidden: int = 0
    student_weights: str | None = None
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: float = 0.05  # fraction of the total steps
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0  # 0 = off
    accum: int = 1
    ema: bool = False
    ema_decay: float = 0.999
    compile: bool = False
    channels_last: bool | None = None  # None = on (CPU and CUDA)
    sync_bn: bool = False  # DDP on CUDA: BatchNorm statistics over the global batch (SyncBatchNorm)
    device: str = "auto"
    workers: int = 2
    seed: int = 0
    max_steps: int = 0  # 0 = epochs * steps per epoch; else caps the run (and its schedule)
    online_teacher: bool = False
    recipe: str = "default"
    label_text: str = "enriched"  # enriched = cache labels.npz, simple = labels_simple.npz
    labels: str | None = None  # another label pack (same teacher) instead of the cache's
    loss: LossConfig = field(default_factory=LossConfig)
    log_every: int = 10

    def __post_init__(self) -> None:
        checks = [(self.epochs >= 1, "--epochs must be >= 1"), (self.batch_size >= 2, "--batch-size must be >= 2"),
                  (self.lr > 0, "--lr must be > 0"), (self.accum >= 1, "--accum must be >= 1"),
                  (0 <= self.warmup < 1, "--warmup must be a fraction in [0, 1)"),
                  (0 < self.ema_decay < 1, "--ema-decay must be in (0, 1)"), (self.workers >= 0, "--workers >= 0"),
                  (self.max_steps >= 0, "--max-steps must be >= 0"),
                  (self.recipe in RECIPES, f"--recipe {self.recipe!r}: use one of {', '.join(RECIPES)}"),
                  (self.label_text in LABEL_TEXTS, f"--label-text: use one of {', '.join(LABEL_TEXTS)}"),
                  (self.interpolation is None or self.interpolation in INTERPOLATIONS,
                   f"--interpolation {self.interpolation!r}: use one of {', '.join(INTERPOLATIONS)}"),
                  (self.resize_method is None or self.resize_method in RESIZE_METHODS,
                   f"--resize-method {self.resize_method!r}: use one of {', '.join(RESIZE_METHODS)}")]
        for ok, msg in checks:
            if not ok:
                raise EdgekdError(msg)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DistillConfig:
        d = {k: v for k, v in d.items() if k in {f.name for f in fields(cls)}}
        if isinstance(d.get("loss"), dict):
            d["loss"] = LossConfig(**d["loss"])
        return cls(**d)


def recipe_loss_config(recipe: str, overrides: dict[str, float | None] | None = None, **settings: Any) -> LossConfig:
    """LossConfig of a named recipe with per-term weight overrides (None = keep) and explicit settings (None = keep).

    The 'default' recipe has no weights yet; `resolve_weights` fills them from the data.
    """
    if recipe not in RECIPES:
        raise EdgekdError(f"--recipe {recipe!r}: use one of {', '.join(RECIPES)}")
    spec = RECIPES[recipe]
    weights = dict(spec.get("weights", {}))
    weights.update({k: float(v) for k, v in (overrides or {}).items() if v is not None})
    kw = {k: v for k, v in spec.items() if k in {f.name for f in fields(LossConfig)} and k != "weights"}
    kw.update({k: v for k, v in settings.items() if v is not None})
    return LossConfig(weights=weights, **kw)


def resolve_weights(
    loss: LossConfig, recipe: str, explicit: set[str], labeled: bool, has_label_pack: bool, has_captions: bool
) -> LossConfig:
    """Fill the 'default' recipe from the data and check every requested term has what it needs.

    default: feature imitation (cos); + capcon with captions. Chosen by the fidelity study (docs/distill.md
    "Defaults"): adding rel, cls and kl cut retrieval@1 from 55% to 15%. Terms that were set explicitly (`explicit`,
    from --w-*) or by a named recipe raise when their data is missing; defaults that cannot apply are dropped quietly.
    """
    weights = dict(loss.weights)
    if recipe == "default":
        auto = {"cos": 1.0}
        if has_captions:
            auto["capcon"] = 1.0
        weights = {**auto, **{k: v for k, v in weights.items() if k in explicit}}
    required = {k for k, v in weights.items() if v > 0 and (recipe != "default" or k in explicit)}
    for term in sorted(required):
        if term in LABEL_TERMS and not labeled:
            raise EdgekdError(f"loss {term!r} needs labels but no cached image has one (all labels are -1); "
                              f"use labeled data or set --w-{term} 0")
        if term in LABEL_TEXT_TERMS and not has_label_pack:
            raise EdgekdError(f"loss {term!r} needs class text embeddings but the cache has no label pack "
                              "(build the cache from labeled data, or pass --labels PACK, or set --w-" + term + " 0)")
        if term in CAPTION_TERMS and not has_captions:
            raise EdgekdError(f"loss {term!r} needs captions but the cache has none; rebuild it with "
                              f"`edgekd cache --captions FILE` or set --w-{term} 0")
    if not any(v > 0 for v in weights.values()):
        raise EdgekdError("every loss weight is 0; nothing to train")
    # one order (TERMS'), so metrics.csv has the same columns however the weights were given (CLI, API, recipe)
    return replace(loss, weights={k: weights[k] for k in TERMS if k in weights})
