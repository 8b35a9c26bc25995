"""Named student presets for edge devices, and their size (parameters, MACs) at a given input resolution.

A preset is a plain dict entry filled by `register_preset`; any other timm model name works as a student too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from edgekd import EdgekdError


@dataclass(frozen=True)
class StudentPreset:
    name: str
    arch: str  # timm model name
    family: str
    head: str = "linear"
    note: str = ""


PRESETS: dict[str, StudentPreset] = {}


def register_preset(name: str, arch: str | None = None, family: str = "", head: str = "linear",
                    note: str = "") -> StudentPreset:
    preset = StudentPreset(name, arch or name, family, head, note)
    PRESETS[name] = preset
    return preset


register_preset("mobilenetv3_large_100", family="MobileNetV3", note="classic mobile CNN; hard-swish, SE")
register_preset("mobilenetv4_conv_small", family="MobileNetV4", note="fastest; Jetson/phone NPUs friendly (pure conv)")
register_preset("mobilenetv4_conv_medium", family="MobileNetV4", note="accuracy/latency sweet spot")
register_preset("efficientvit_b0", family="EfficientViT (MIT)", note="linear attention; tiny")
register_preset("efficientvit_b1", family="EfficientViT (MIT)", note="linear attention; larger")
register_preset("resnet18", family="ResNet", note="baseline; runs everywhere")


def resolve_student(name: str) -> StudentPreset:
    """Preset name -> preset; any other timm model name -> an ad-hoc preset; unknown names raise EdgekdError."""
    if name in PRESETS:
        return PRESETS[name]
    import timm

    if not timm.is_model(name):
        close = sorted(set(timm.list_models(f"*{name.split('_')[0]}*")[:8]))
        hint = f"; similar timm models: {', '.join(close)}" if close else ""
        raise EdgekdError(f"student {name!r} is neither a preset ({', '.join(PRESETS)}) nor a timm model{hint}")
    return StudentPreset(name, name, family="timm")


def count_macs(model: torch.nn.Module, img_size: int, batch: int = 1) -> int:
    """Multiply-accumulates of one forward pass at `img_size` (torch FlopCounterMode FLOPs / 2, per image)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    x = torch.zeros(batch, 3, img_size, img_size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2 // batch


def describe_students(
    names: list[str] | None = None, img_size: int = 224, embed_dim: int = 512
) -> list[dict[str, Any]]:
    """Rows {name, arch, family, params, trunk_params, macs, features, note} for presets (or the given names), with
    a linear head to `embed_dim`. Models are built with random weights (no download)."""
    from edgekd.students.model import create_student

    rows = []
    for name in names or list(PRESETS):
        preset = resolve_student(name)
        student = create_student(preset.arch, embed_dim, img_size, preset.head)
        rows.append({
            "name": name, "arch": preset.arch, "family": preset.family,
            "params": sum(p.numel() for p in student.parameters()),
            "trunk_params": sum(p.numel() for p in student.trunk.parameters()),
            "features": student.head.in_features if hasattr(student.head, "in_features") else None,
            "macs": count_macs(student, img_size), "img_size": img_size, "embed_dim": embed_dim, "note": preset.note,
        })
    return rows
