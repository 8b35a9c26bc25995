"""`edgekd distill`: train a student from a teacher cache (thin: options -> DistillConfig -> edgekd.distill.loop)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from edgekd.resize import RESIZE_METHODS  # numpy only (no torch at --help)

# kept in sync with edgekd.distill.config.TERMS (importing it here would pull in torch for --help)
TERM_HELP = {
    "cos": "feature imitation 1 - cos(s, t)",
    "mse": "feature imitation ||s - t||^2 (OOD-2023 L_mse)",
    "cls": "CE to the label over label text embeddings (labeled rows)",
    "kl": "T^2 KL to the teacher's zero-shot distribution (VLM-KD)",
    "vlalign": "KL over the teacher's top-k classes (OOD-2023 L_vlalign)",
    "cst": "in-batch student/teacher InfoNCE (OOD-2023 L_cst)",
    "rel": "relational: in-batch image-image similarity (KL)",
    "cap": "caption CE, same-class masked (OOD-2023 L_cap)",
    "capcon": "symmetric caption contrastive (VLM-KD)",
}


def _weight_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for term in reversed(list(TERM_HELP)):
        f = click.option(f"--w-{term}", f"w_{term}", type=click.FloatRange(min=0), default=None,
                         show_default=False, help=f"Weight of {TERM_HELP[term]} (0 = off; default: from --recipe).")(f)
    return f


@click.command("distill")
@click.option("--cache", required=True, type=click.Path(), help="Teacher cache directory (`edgekd cache`).")
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="Folder that holds the cached dataset's images now, if they moved since `edgekd cache` "
                   "(paths in the cache are relative to it) [default: the root the cache recorded].")
@click.option("--student", required=True, help="Student preset (`edgekd students`) or any timm model name.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to write.")
@click.option("--img-size", type=click.IntRange(16, 2048), default=224, help="Student input resolution.")
@click.option("--interpolation", type=click.Choice(["bicubic", "bilinear", "box", "lanczos"]), default=None,
              help="Resize filter of the student's preprocessing (training and runtime alike) [default: the "
                   "teacher's]. box costs the runtime ~0.6 ms instead of bicubic's ~1.6 ms per 640x480 frame.")
@click.option("--resize-method", type=click.Choice(list(RESIZE_METHODS)), default=None,
              help="How the student's views and the runtime's frames are resized (edgekd.resize; the same function "
                   "for both) [default: pillow, with --interpolation]. cv2-area-linear (OpenCV, the camera extra) is "
                   "~8x faster per camera frame; see benchmarks/results/resize_methods.md.")
@click.option("--aug-crop", type=click.FloatRange(0, 1, min_open=True), default=1.0,
              help="Train the student on a crop inside each cached view that keeps at least this fraction of the "
                   "view's area (the teacher's target stays the whole view's; 1 = off). See docs/distill.md.")
@click.option("--aug-jitter", type=click.FloatRange(0, 1, max_open=True), default=0.0,
              help="Colour jitter of the student's input: brightness, contrast and saturation factors in "
                   "[1-S, 1+S] (0 = off). See docs/distill.md.")
@click.option("--head", type=click.Choice(["linear", "mlp"]), default="linear", help="Projection head.")
@click.option("--head-hidden", type=click.IntRange(0), default=0, help="MLP head width (0 = trunk width).")
@click.option("--student-weights", type=click.Path(dir_okay=False), default=None,
              help="Local timm checkpoint for the trunk (default: random init).")
@click.option("--epochs", type=click.IntRange(1), default=10)
@click.option("--batch-size", type=click.IntRange(2), default=64, help="Global batch size (all processes).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, help="Peak AdamW learning rate.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.05)
@click.option("--warmup", type=click.FloatRange(0, 1, max_open=True), default=0.05,
              help="Warm-up as a fraction of all steps (then cosine).")
@click.option("--grad-clip", type=click.FloatRange(min=0), default=1.0, help="Max gradient norm (0 = off).")
@click.option("--accum", type=click.IntRange(1), default=1, help="Gradient accumulation steps.")
@click.option("--ema/--no-ema", default=False, help="Keep an EMA of the weights (saved as the model).")
@click.option("--ema-decay", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.999)
@click.option("--compile/--no-compile", "compile_", default=False, help="torch.compile the student.")
@click.option("--channels-last/--no-channels-last", default=None,
              help="channels_last memory format (much faster conv backward on CPU too). [default: on]")
@click.option("--sync-bn", is_flag=True, default=False,
              help="Multi-GPU (torchrun, CUDA): BatchNorm layers use the global batch's statistics (SyncBatchNorm), "
                   "so BatchNorm students train as in one process.")
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:N (AMP bf16 on CUDA, fp32 on CPU).")
@click.option("--workers", type=click.IntRange(0), default=2, help="DataLoader decoding processes.")
@click.option("--seed", type=int, default=0)
@click.option("--max-steps", type=click.IntRange(0), default=0, help="Stop (and end the schedule) after N steps.")
@click.option("--online-teacher", is_flag=True, help="Run the cache's teacher live on fresh random views.")
@click.option("--recipe", type=click.Choice(["default", "ood2023", "vlmkd"]), default="default",
              help="default: cos (+capcon with captions), chosen by the fidelity study; ood2023: cls+vlalign+mse+cst; "
                   "vlmkd: cls+kl+capcon.")
@_weight_options
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=None,
              help="T of cls/vlalign/cst/rel and tau of capcon [default: 0.07].")
@click.option("--kd-temperature", type=click.FloatRange(min=0, min_open=True), default=None,
              help="T of the KL term, scaled by T^2 [default: 2].")
@click.option("--topk", type=click.IntRange(1), default=None, help="Classes kept by vlalign [default: 256].")
@click.option("--teacher-correct/--no-teacher-correct", default=None,
              help="vlalign: use only images the teacher classifies correctly [default: on].")
@click.option("--ce-lt", type=click.Choice(["plain", "balanced", "logit-adjust"]), default=None,
              help="Long-tail CE for cls [default: plain].")
@click.option("--la-tau", type=float, default=None, help="Logit-adjustment strength [default: 1].")
@click.option("--label-text", type=click.Choice(["enriched", "simple"]), default="enriched",
              help="Class texts: the cache's labels.npz (templates + descriptions) or labels_simple.npz.")
@click.option("--labels", type=click.Path(dir_okay=False), default=None,
              help="Use this label pack (same teacher) instead of the cache's.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--log-every", type=click.IntRange(1), default=10, help="Steps per metrics.csv row.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def distill(**kw: Any) -> None:
    """Train a student to imitate the teacher cached in CACHE.

    Multi-process: torchrun --nproc_per_node N $(which edgekd) distill ...  (same result as one process with the
    same global --batch-size for students without BatchNorm; BatchNorm students need --sync-bn on GPUs for that).
    Ctrl-C / SIGTERM saves a checkpoint; --resume continues it.
    """
    from edgekd import EdgekdError
    from edgekd.distill.config import DistillConfig, recipe_loss_config
    from edgekd.distill.loop import train

    weights = {t: kw.pop(f"w_{t}") for t in TERM_HELP}
    settings = {k: kw.pop(k) for k in ("temperature", "kd_temperature", "topk", "teacher_correct", "ce_lt", "la_tau")}
    resume, progress = kw.pop("resume"), kw.pop("progress")
    kw["compile"] = kw.pop("compile_")
    loss = recipe_loss_config(kw["recipe"], weights, **settings)
    cfg = DistillConfig(loss=loss, **kw)
    result = train(cfg, resume=resume, progress=progress)
    if result.interrupted:
        err = EdgekdError(f"interrupted at step {result.step}; checkpoint saved in {result.run_dir}. "
                          "Run the same command with --resume to continue")
        err.exit_code = 130
        raise err
    if result.rank != 0:
        return
    parts = ", ".join(f"{k} {v:.4g}" for k, v in result.last.items())
    click.echo(f"done: {result.step} steps, {result.epoch} epochs -> {result.run_dir} (last: {parts})")
