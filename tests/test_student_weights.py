"""--student-weights: a report of what matched, and a refusal when (almost) nothing did."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import TINY_STUDENT

from edgekd import EdgekdError
from edgekd.students.model import MIN_TRUNK_MATCH, create_student, load_trunk_weights


def _trunk():
    torch.manual_seed(0)
    return create_student(TINY_STUDENT, 16, img_size=32).trunk


def test_full_checkpoint_loads_and_reports_classifier_as_unexpected(tmp_path, caplog):
    src = _trunk()
    state = {**src.state_dict(), "head.weight": torch.zeros(10, 4), "head.bias": torch.zeros(10)}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "full.pth")
    dst = _trunk()
    with torch.no_grad():
        for p in dst.parameters():
            p.zero_()
    with caplog.at_level(logging.INFO, logger="edgekd.students.model"):
        report = load_trunk_weights(dst, tmp_path / "full.pth")
    assert report["missing"] == [] and report["mismatched"] == []
    assert sorted(report["unexpected"]) == ["head.bias", "head.weight"]
    assert report["tensor_fraction"] == 1.0 and report["weight_fraction"] == 1.0
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
    assert "unexpected 2 (e.g. head.weight, head.bias)" in caplog.text


def test_partial_checkpoint_reports_missing_and_mismatched(tmp_path, caplog):
    own = _trunk().state_dict()
    keys = list(own)
    drop = keys[-2:]
    state = {k: v for k, v in own.items() if k not in drop}
    bad = keys[0]
    state[bad] = torch.zeros(*[s + 1 for s in own[bad].shape])
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "partial.safetensors"))
    with caplog.at_level(logging.WARNING, logger="edgekd.students.model"):
        report = load_trunk_weights(_trunk(), tmp_path / "partial.safetensors")
    assert report["missing"] == drop
    assert len(report["mismatched"]) == 1 and report["mismatched"][0].startswith(f"{bad}: ")
    assert "missing 2" in caplog.text and "shape mismatch 1" in caplog.text


def test_one_matching_tensor_is_not_a_success(tmp_path):
    own = _trunk().state_dict()
    norm = next(k for k in own if k.endswith("norm.weight"))  # the kind of tensor another architecture shares
    torch.save({norm: own[norm].clone(), "conv_stem.weight": torch.zeros(8, 3, 3, 3)}, tmp_path / "other.pt")
    with pytest.raises(EdgekdError, match=rf"--student-weights .*need >= 50% .*only 1 of {len(own)} trunk tensors"):
        load_trunk_weights(_trunk(), tmp_path / "other.pt")


def test_nothing_matching_and_not_a_state_dict_are_refused(tmp_path):
    torch.save({"x.weight": torch.zeros(3)}, tmp_path / "none.pt")
    with pytest.raises(EdgekdError, match="only 0 of"):
        load_trunk_weights(_trunk(), tmp_path / "none.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(EdgekdError, match="not a state dict of tensors"):
        load_trunk_weights(_trunk(), tmp_path / "list.pt")


def test_threshold_is_on_weights_too(tmp_path):
    """Most tensors but few of the weights (all norms and biases, no matrices) is not a warm start either."""
    own = _trunk().state_dict()
    small = {k: v for k, v in own.items() if v.ndim <= 1}
    assert len(small) / len(own) >= MIN_TRUNK_MATCH  # passes on tensor count alone
    torch.save(small, tmp_path / "small.pt")
    with pytest.raises(EdgekdError, match="of weights"):
        load_trunk_weights(_trunk(), tmp_path / "small.pt")
