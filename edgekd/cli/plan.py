"""`edgekd plan`: time this machine's teacher and student briefly, then print the `edgekd cache` and `edgekd distill`
commands (images, views, resolution, epochs) that fit a budget of minutes (issue #17)."""

from __future__ import annotations

import datetime as _dt
import os
import shlex
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import click

from edgekd.cli._teacher_opts import load_teacher_from_options, teacher_options

if TYPE_CHECKING:
    from edgekd.data.index import DatasetIndex
    from edgekd.plan import Plan


def _teacher_args(teacher: str, pretrained: str | None, teacher_weights: str | None, random_teacher: bool) -> list[str]:
    """The teacher options as given, for the printed `edgekd cache` command."""
    source = (["--random-teacher"] if random_teacher else ["--teacher-weights", teacher_weights] if teacher_weights
              else ["--pretrained", pretrained] if pretrained else [])
    return ["--teacher", teacher, *source]


@click.command("plan")
@click.option("--data", required=True, type=click.Path(),
              help="Dataset: ImageFolder (class sub-folders), any image folder, or a CSV/JSONL list of path[,label].")
@click.option("--minutes", required=True, type=click.FloatRange(min=0, min_open=True),
              help="Wall-clock budget for `edgekd cache` + `edgekd distill` on this machine.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Plan folder: plan.json, commands.sh, and train.csv when only a subset fits.")
@click.option("--student", default="mobilenetv4_conv_small", show_default=True,
              help="Student preset (`edgekd students`) or any timm model name.")
@click.option("--img-size", type=click.IntRange(16, 2048), default=None,
              help="Student input resolution  [default: PlanRules.img_size, 128].")
@teacher_options
@click.option("--batch-size", type=click.IntRange(2), default=64, show_default=True,
              help="Distill's global batch size (timed, and passed on to `edgekd distill`).")
@click.option("--cache-dir", default=None, help="Cache folder named in the commands  [default: OUT/cache].")
@click.option("--run-dir", default=None, help="Run folder named in the commands  [default: OUT/run].")
@click.option("--teacher-ips", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Skip timing the teacher: use this many forwards/s (e.g. from an earlier plan.json).")
@click.option("--train-ips", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Skip timing the student: use this many training images/s (e.g. from an earlier plan.json).")
@click.option("--resize-method", default="auto", show_default=True,
              help="Passed to distill: auto = cv2-area-linear where OpenCV is installed (the camera fast path, as "
                   "faithful as Pillow in the study), else distill's default (pillow); or a method name.")
def plan(data, minutes, out, student, img_size, teacher, pretrained, teacher_weights, random_teacher, device,
         batch_size, cache_dir, run_dir, teacher_ips, train_ips, resize_method) -> None:
    """Plan a distillation that fits MINUTES: how many images, views, epochs and which resolution.

    Times the teacher on a few images of DATA and a few student training steps (seconds each), keeps a margin,
    takes as many images as fit at the minimum epochs (balanced over classes: the first N sorted images of each),
    spends time the dataset leaves over on more epochs, and prints the two commands to run.

    \b
    Example:
      edgekd plan --data imgs/ --minutes 30 --out plan/ --random-teacher
      bash plan/commands.sh
    """
    from edgekd import EdgekdError
    from edgekd.cpu import cpu_facts, describe
    from edgekd.data.index import build_index
    from edgekd.plan import PlanRules, choose_plan, class_counts, plan_commands, save_plan

    rules = PlanRules()
    img_size = img_size or rules.img_size
    out_path = Path(out)
    index = build_index(data, hash_files=False)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    measured, teacher_ips, train_ips, loader_s = _speeds(
        index, student, img_size, batch_size, teacher_ips, train_ips, load,
        (teacher, pretrained, teacher_weights, random_teacher, device))
    p = choose_plan(class_counts(index), minutes, teacher_ips, train_ips, rules, img_size, loader_s)
    if p.images < batch_size:
        raise EdgekdError(f"the plan has {p.images} images, fewer than one --batch-size {batch_size} step of "
                          "`edgekd distill`; lower --batch-size")

    train_csv, data_arg = _train_list(out_path, index, p, data)
    cache_dir = cache_dir or str(out_path / "cache")
    run_dir = run_dir or str(out_path / "run")
    targs = _teacher_args(teacher, pretrained, teacher_weights, random_teacher)
    resize_method = _resize_method(resize_method)
    commands = plan_commands(data_arg, cache_dir, run_dir, p, student, batch_size, targs, device, resize_method)
    facts = cpu_facts()
    doc = {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
           "inputs": {"data": data, "minutes": minutes, "student": student, "img_size": img_size,
                      "batch_size": batch_size, "teacher_args": targs, "device": device,
                      "resize_method": resize_method},
           "host": {"cpu": describe(facts), "cpu_facts": facts, "cpu_count": os.cpu_count(),
                    "load_avg_1min": load},
           "measurements": measured,
           "speeds": {"teacher_ips": teacher_ips, "train_ips": train_ips, "loader_s": loader_s},
           "rules": asdict(rules), "plan": {**asdict(p), "subset": p.subset},
           "train_list": str(train_csv) if p.subset else None}
    save_plan(out_path, doc, commands)
    _echo_plan(p, out_path, commands, train_csv)


def _speeds(index: DatasetIndex, student: str, img_size: int, batch_size: int, teacher_ips: float | None,
            train_ips: float | None, load: float | None, teacher_opts: tuple[str, str | None, str | None, bool, str]
            ) -> tuple[dict, float, float, float]:
    """-> (what was measured, teacher forwards/s, training images/s, decode + render s per image on a CPU): the
    speeds given as options, the others timed here with the teacher of `teacher_opts` (load_teacher_from_options)."""
    measured: dict = {}
    loader_s = 0.0
    if teacher_ips is None or train_ips is None:
        t = load_teacher_from_options(*teacher_opts)
        if t.device.type == "cpu" and load is not None and load >= 0.5 * (os.cpu_count() or 1):
            click.echo(f"WARNING: load average {load:.1f} on {os.cpu_count()} CPUs: other processes are busy, and "
                       "the speeds measured now (so the plan) reflect that; plan on a quiet machine or pass "
                       "--teacher-ips/--train-ips", err=True)
        measured = _measure(t, index, student, img_size, batch_size, teacher_ips is None, train_ips is None)
        teacher_ips = teacher_ips or measured["teacher"]["images_per_s"]
        train_ips = train_ips or measured["student"]["images_per_s"]
        if t.device.type == "cpu" and "teacher" in measured:  # the loader shares the cores (on a GPU it overlaps)
            loader_s = measured["teacher"]["detail"]["decode_render_s_per_image"]
    return measured, teacher_ips, train_ips, loader_s


def _train_list(out_path: Path, index: DatasetIndex, p: Plan, data: str) -> tuple[Path, str]:
    """-> (OUT/train.csv, the --data of the printed cache command): the list of the plan's subset when it takes
    one, else DATA itself (and no list: a stale subset of an earlier plan would mislead)."""
    from edgekd.plan import TRAIN_LIST, subset_entries, write_train_list

    train_csv = out_path / TRAIN_LIST
    if p.subset:
        write_train_list(train_csv, index, subset_entries(index, p))
        return train_csv, str(train_csv)
    train_csv.unlink(missing_ok=True)
    return train_csv, data


def _resize_method(resize_method: str) -> str:
    """--resize-method: auto -> the camera fast path (plan.camera_resize_method), else a known method name."""
    from edgekd.plan import camera_resize_method

    if resize_method == "auto":
        return camera_resize_method()
    from edgekd.resize import RESIZE_METHODS

    if resize_method not in RESIZE_METHODS:
        raise click.BadParameter(f"{resize_method!r}: use auto or one of {', '.join(sorted(RESIZE_METHODS))}",
                                 param_hint="--resize-method")
    return resize_method


def _measure(t, index, student: str, img_size: int, batch_size: int, teacher: bool, train: bool) -> dict:
    """Time the teacher and/or the student on this machine; echo and return what was measured."""
    from edgekd.plan import measure_teacher_ips, measure_train_ips, sample_paths

    measured = {}
    if teacher:
        tb = 16 if t.device.type == "cpu" else 64
        m = measure_teacher_ips(t, sample_paths(index, 4 * tb), batch_size=tb, batches=2)
        click.echo(f"measured teacher {t.spec.name} on {m.device}: {m.images_per_s:.1f} forwards/s ({m.images} "
                   f"images of --data after a warm-up batch, {m.seconds:.1f} s; decode + render "
                   f"{m.detail['decode_render_s_per_image'] * 1000:.1f} ms/image)")
        measured["teacher"] = asdict(m)
    if train:
        m = measure_train_ips(student, img_size, t.embed_dim, batch_size, steps=4, device=str(t.device),
                              preprocess=t.preprocess)
        click.echo(f"measured student {student} at {img_size} px on {m.device}: {m.images_per_s:.1f} training "
                   f"images/s (batch {batch_size}, {m.images // batch_size} AdamW steps after a warm-up step, "
                   f"{m.seconds:.1f} s)")
        measured["student"] = asdict(m)
    return measured


def _echo_plan(p, out_path: Path, commands: list[list[str]], train_csv: Path) -> None:
    click.echo(f"plan: {p.images} of {p.dataset_images} images x {p.views} view(s), {p.img_size} px, {p.epochs} "
               f"epochs; estimated cache {p.est_cache_s / 60:.1f} min + training {p.est_train_s / 60:.1f} min of "
               f"{p.budget_s / 60:g} min")
    for r in p.reasons:
        click.echo(f"  {r}")
    click.echo(f"wrote {out_path / 'plan.json'} and {out_path / 'commands.sh'}"
               + (f" and {train_csv}" if p.subset else "") + "; run:")
    for c in commands:
        click.echo(f"  {shlex.join(c)}")
