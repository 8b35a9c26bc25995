"""Student presets: name resolution and the parameter/MAC counts of `edgekd students`."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_STUDENT

from edgekd import EdgekdError
from edgekd.students.registry import PRESETS, count_macs, describe_students, resolve_student


def test_presets_are_timm_models():
    import timm

    assert {"mobilenetv3_large_100", "mobilenetv4_conv_small", "mobilenetv4_conv_medium", "efficientvit_b0",
            "efficientvit_b1", "resnet18"} <= set(PRESETS)
    assert all(timm.is_model(p.arch) for p in PRESETS.values())


def test_resolve_student():
    assert resolve_student("resnet18").family == "ResNet"
    assert resolve_student(TINY_STUDENT).arch == TINY_STUDENT  # any timm name works
    with pytest.raises(EdgekdError, match="nor a timm model"):
        resolve_student("definitely_not_a_model")


def test_count_macs_exact_for_known_layers():
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.Flatten(),
                               torch.nn.Linear(8 * 16 * 16, 10, bias=False))
    # conv: 16*16 outputs * 8 channels * 27 MACs; linear: 2048 * 10
    assert count_macs(conv, 16) == 16 * 16 * 8 * 27 + 2048 * 10
    assert count_macs(conv, 16) == count_macs(conv, 16, batch=4)  # per image


def test_describe_students_scales_with_resolution():
    small, big = (describe_students([TINY_STUDENT], img_size=s, embed_dim=32)[0] for s in (32, 64))
    assert small["params"] < big["params"]  # the ViT's position embedding grows with the resolution
    assert big["macs"] > 3 * small["macs"]
    assert small["params"] == small["trunk_params"] + 64 * 32 + 32  # linear head 64 -> 32
