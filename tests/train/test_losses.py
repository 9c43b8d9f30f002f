"""Mod-X distillation and the contrastive loss against direct small computations."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from curation.train.losses import alignment_loss, clip_loss, modx_loss, uniformity_loss


def _unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _kl_rows_direct(old, new, wrong_rows):
    """Plain-Python KL(softmax(old_i) || softmax(new_i)) averaged over the rows the old model gets right."""
    kept = []
    for i in range(len(old)):
        if i in wrong_rows:
            continue
        zo = sum(math.exp(v) for v in old[i])
        zn = sum(math.exp(v) for v in new[i])
        kept.append(sum((math.exp(o) / zo) * (o - math.log(zo) - (n - math.log(zn))) for o, n in zip(old[i], new[i])))
    return sum(kept) / len(kept)


def test_modx_matches_direct_computation_and_skips_wrong_rows():
    img, txt = _unit(5, 8, 0), _unit(5, 8, 1)
    old_txt = _unit(5, 8, 2)
    old_img = old_txt.clone()
    old_img[3] = old_txt[1]          # old model sends image 3 to text 1: row 3 has no target
    scale, old_scale = torch.tensor(3.0), torch.tensor(4.0)
    old_l = (old_scale * old_img @ old_txt.t()).tolist()
    new_l = (scale * img @ txt.t()).tolist()
    wrong_i2t = {i for i in range(5) if max(range(5), key=lambda j: old_l[i][j]) != i}
    old_t, new_t = [list(r) for r in zip(*old_l)], [list(r) for r in zip(*new_l)]
    wrong_t2i = {i for i in range(5) if max(range(5), key=lambda j: old_t[i][j]) != i}
    assert 3 in wrong_i2t
    expected = (_kl_rows_direct(old_l, new_l, wrong_i2t) + _kl_rows_direct(old_t, new_t, wrong_t2i)) / 2
    got = modx_loss(img, txt, old_img, old_txt, scale, old_scale)
    assert abs(float(got) - expected) < 1e-5


def test_modx_is_zero_when_models_agree_and_has_no_gradient_into_teacher():
    img, txt = _unit(6, 4, 3).requires_grad_(), _unit(6, 4, 4)
    old_img, old_txt = img.detach().clone().requires_grad_(), txt.clone()
    loss = modx_loss(img, txt, old_img, old_txt, torch.tensor(5.0), torch.tensor(5.0))
    assert float(loss.detach()) < 1e-6
    (loss + img.sum()).backward()
    assert old_img.grad is None


def test_clip_loss_matches_cross_entropy_both_ways():
    img, txt = _unit(4, 8, 5), _unit(4, 8, 6)
    lg = (2.0 * img @ txt.t()).tolist()
    want = sum(-math.log(math.exp(lg[i][i]) / sum(math.exp(v) for v in lg[i])) for i in range(4)) / 8 \
        + sum(-math.log(math.exp(lg[i][i]) / sum(math.exp(r[i]) for r in lg)) for i in range(4)) / 8
    assert abs(float(clip_loss(img, txt, torch.tensor(2.0))) - float(want)) < 1e-5


def test_alignment_and_uniformity():
    x = _unit(8, 3, 7)
    assert float(alignment_loss(x, x)) == 0.0
    collapsed = F.normalize(torch.ones(8, 3), dim=-1)
    assert float(uniformity_loss(collapsed)) > float(uniformity_loss(x))  # spread features score lower
