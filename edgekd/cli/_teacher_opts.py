"""Shared click options that choose a teacher (`--teacher/--pretrained/--teacher-weights/--random-teacher`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def teacher_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add teacher selection options: teacher, pretrained, teacher_weights, random_teacher, device."""
    opts = [
        click.option("--teacher", default="ViT-B-32", show_default=True, help="open_clip model name of the teacher."),
        click.option("--pretrained", default="openai", show_default=True,
                     help="open_clip weight tag (needs the model hub or its local cache)."),
        click.option("--teacher-weights", type=click.Path(dir_okay=False), default=None,
                     help="Local teacher weights file (safetensors or state dict); overrides --pretrained."),
        click.option("--random-teacher", is_flag=True, default=False,
                     help="Random (seeded) teacher weights: for tests, speed and pipeline checks only."),
        click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def load_teacher_from_options(teacher: str, pretrained: str | None, teacher_weights: str | None,
                              random_teacher: bool, device: str):
    """Build the Teacher the options describe (imports torch/open_clip only now)."""
    from edgekd.teacher.clip import load_teacher

    if random_teacher:
        click.echo(f"NOTE: teacher {teacher} uses RANDOM weights; embeddings are meaningless for accuracy.", err=True)
    return load_teacher(teacher, pretrained=pretrained, weights=teacher_weights, random_init=random_teacher,
                        device=device)
