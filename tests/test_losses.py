"""Each loss: (near) zero where it should be, positive elsewhere, gradient pointing the right way."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from edgekd.distill import losses as L

B, D, C = 8, 16, 5


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def descend(loss_fn, s0: torch.Tensor, lr: float = 0.05) -> tuple[float, float]:
    """Loss before and after one small step along -grad (on the sphere): the gradient sign is right iff it drops."""
    s = s0.clone().requires_grad_(True)
    before = loss_fn(F.normalize(s, dim=-1))
    (g,) = torch.autograd.grad(before, s)
    after = loss_fn(F.normalize(s0 - lr * g / g.norm().clamp_min(1e-12), dim=-1))
    return float(before.detach()), float(after)


@pytest.fixture
def data():
    t = unit(B, D, seed=1)
    w = unit(C, D, seed=2)
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1, -1])
    return t, w, y


def test_feature_losses_zero_at_teacher_and_descend(data):
    t, _, _ = data
    assert L.cosine_loss(t, t).abs() < 1e-6
    assert L.mse_loss(t, t).abs() < 1e-6
    s = unit(B, D, seed=3)
    assert torch.allclose(L.mse_loss(s, t), 2 * L.cosine_loss(s, t), atol=1e-5)  # unit vectors: 2 - 2 cos
    for fn in (L.cosine_loss, L.mse_loss):
        before, after = descend(lambda x, fn=fn: fn(x, t), s)
        assert before > 0.1 and after < before


def test_cls_loss_minimal_at_own_class_ignores_unlabeled(data):
    _, w, y = data
    s_right = w[y.clamp_min(0)]
    s_wrong = w[(y.clamp_min(0) + 1) % C]
    assert L.cls_loss(s_right, w, y) < 0.1 < L.cls_loss(s_wrong, w, y)
    # the unlabeled row does not count: changing it changes nothing
    s2 = s_right.clone()
    s2[-1] = unit(D, seed=9)
    assert torch.equal(L.cls_loss(s_right, w, y), L.cls_loss(s2, w, y))
    all_unlabeled = torch.full((B,), -1)
    s = unit(B, D, seed=3).requires_grad_(True)
    z = L.cls_loss(s, w, all_unlabeled)
    assert z.item() == 0.0 and z.requires_grad
    before, after = descend(lambda x: L.cls_loss(x, w, y), unit(B, D, seed=4))
    assert after < before


def test_cls_loss_long_tail_modes(data):
    _, w, y = data
    s = unit(B, D, seed=5)
    counts = torch.tensor([100.0, 50.0, 10.0, 2.0, 1.0])
    prior = L.class_log_prior(counts)
    plain = L.cls_loss(s, w, y, mode="plain")
    bal = L.cls_loss(s, w, y, mode="balanced", log_prior=prior)
    la1 = L.cls_loss(s, w, y, mode="logit-adjust", log_prior=prior, tau=1.0)
    la2 = L.cls_loss(s, w, y, mode="logit-adjust", log_prior=prior, tau=2.0)
    assert torch.allclose(bal, la1) and not torch.allclose(plain, bal) and not torch.allclose(la1, la2)
    # balanced softmax penalises rare-class labels more (it must beat the head classes' prior)
    rare = torch.tensor([4] * B)
    assert L.cls_loss(w[rare], w, rare, mode="balanced", log_prior=prior) > L.cls_loss(w[rare], w, rare)
    with pytest.raises(ValueError, match="log prior"):
        L.cls_loss(s, w, y, mode="balanced")


def test_vl_align_zero_at_teacher_topk_and_filter(data):
    t, w, y = data
    assert L.vl_align_loss(t, t, w, k=3).abs() < 1e-5
    s = unit(B, D, seed=6)
    assert L.vl_align_loss(s, t, w, k=3) > 1e-3
    before, after = descend(lambda x: L.vl_align_loss(x, t, w, k=3), s)
    assert after < before
    # teacher-correct filter: with labels the teacher always gets wrong, only the unlabeled row remains
    pred = (t @ w.T).argmax(-1)
    wrong = (pred + 1) % C
    y_wrong = wrong.clone()
    y_wrong[-1] = -1
    only_last = L.vl_align_loss(s, t, w, k=3, y=y_wrong, teacher_correct=True)
    assert torch.allclose(only_last, L.vl_align_loss(s[-1:], t[-1:], w, k=3))
    # all rows filtered out: exactly 0 and still differentiable (the original returned NaN)
    z = L.vl_align_loss(s.requires_grad_(True), t, w, k=3, y=wrong, teacher_correct=True)
    assert z.item() == 0.0 and z.requires_grad and torch.isfinite(z)
    # k >= C is the full KL
    full = L.vl_align_loss(s, t, w, k=C)
    assert torch.allclose(full, L.vl_align_loss(s, t, w, k=256))


def test_kd_loss_zero_at_teacher_and_t2_scaling(data):
    t, w, _ = data
    assert L.kd_loss(t, t, w).abs() < 1e-5
    s = unit(B, D, seed=7)
    assert L.kd_loss(s, t, w) > 0
    before, after = descend(lambda x: L.kd_loss(x, t, w, kd_temperature=4.0), s)
    assert after < before
    # T^2 scaling: the KL itself at T=4 times 16
    zt, zs = t @ w.T / 0.07 / 4, s @ w.T / 0.07 / 4
    ref = F.kl_div(F.log_softmax(zs, -1), F.log_softmax(zt, -1), log_target=True, reduction="batchmean") * 16
    assert torch.allclose(L.kd_loss(s, t, w, kd_temperature=4.0), ref, rtol=1e-5)


def test_contrastive_minimal_at_teacher(data):
    t, _, _ = data
    s = unit(B, D, seed=8)
    assert L.contrastive_loss(t, t) < L.contrastive_loss(s, t)
    assert L.contrastive_loss(t, t, temperature=0.01) < 1e-3  # random unit vectors are near-orthogonal
    before, after = descend(lambda x: L.contrastive_loss(x, t), s)
    assert after < before


def test_affinity_zero_for_same_structure(data):
    t, _, _ = data
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=torch.Generator().manual_seed(0)))
    rotated = t @ q  # same pairwise similarities, different embeddings
    assert L.affinity_loss(t, t).abs() < 1e-5 and L.affinity_loss(rotated, t).abs() < 1e-4
    assert L.cosine_loss(rotated, t) > 0.5  # affinity is about structure, not position
    s = unit(B, D, seed=10)
    assert L.affinity_loss(s, t) > 1e-3
    before, after = descend(lambda x: L.affinity_loss(x, t), s)
    assert after < before
    assert L.affinity_loss(s[:2], t[:2]).item() == 0.0  # too small a batch


def test_caption_ood_masks_same_class():
    c = unit(6, D, seed=11)
    y = torch.tensor([0, 0, 1, 1, 2, -1])
    has = torch.ones(6, dtype=torch.bool)
    # student equal to a same-class neighbour's caption: masking makes that neighbour not a competitor
    s = c.clone()
    s[0] = c[1]
    masked = L.caption_ood_loss(s, c, has, y)
    unmasked = L.caption_ood_loss(s, c, has, torch.arange(6))
    assert masked < unmasked
    # rows without a caption are dropped
    has2 = has.clone()
    has2[5] = False
    assert torch.allclose(L.caption_ood_loss(s, c, has2, y), L.caption_ood_loss(s[:5], c[:5], has[:5], y[:5]))
    before, after = descend(lambda x: L.caption_ood_loss(x, c, has, y), unit(6, D, seed=12), lr=0.2)
    assert after < before
    assert L.caption_ood_loss(s, c, torch.zeros(6, dtype=torch.bool), y).item() == 0.0


def test_caption_contrastive_symmetric_and_unlabeled():
    c = unit(B, D, seed=13)
    has = torch.ones(B, dtype=torch.bool)
    s = unit(B, D, seed=14)
    assert L.caption_contrastive_loss(c, c, has, temperature=0.01) < 1e-3
    sym = L.caption_contrastive_loss(s, c, has)
    assert torch.allclose(sym, L.caption_contrastive_loss(c, s, has), atol=1e-6)
    before, after = descend(lambda x: L.caption_contrastive_loss(x, c, has), s)
    assert after < before
