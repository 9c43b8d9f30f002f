"""Training losses: CLIP contrastive (global batch under DDP), Mod-X distillation,
and Wang & Isola's alignment / uniformity terms.

All functions take L2-normalised features. Under ``torch.distributed`` the contrastive
loss gathers features with gradient from every rank so each rank computes the loss of the
*global* batch (as open_clip's ``gather_with_grad=True, local_loss=False``); with DDP's
gradient averaging that yields exactly the single-process gradient of the global batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def gather_features(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks in rank order, keeping the gradient path."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def clip_loss(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over the (global) batch: mean of image->text and text->image CE."""
    img, txt = gather_features(img), gather_features(txt)
    logits = logit_scale * img @ txt.t()
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def _masked_kl_rows(old_logits: torch.Tensor, new_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(old) || softmax(new)) per row, zero for rows the old model gets wrong."""
    target = torch.arange(old_logits.shape[0], device=old_logits.device)
    keep = (old_logits.argmax(dim=1) == target).float()
    p_old = F.softmax(old_logits, dim=1)
    kl = (p_old * (F.log_softmax(old_logits, dim=1) - F.log_softmax(new_logits, dim=1))).sum(dim=1)
    return (kl * keep).sum() / keep.sum().clamp(min=1.0)


def modx_loss(img: torch.Tensor, txt: torch.Tensor, old_img: torch.Tensor, old_txt: torch.Tensor,
              logit_scale: torch.Tensor, old_logit_scale: torch.Tensor) -> torch.Tensor:
    """Mod-X off-diagonal distillation (Ni et al., ICML 2023).

    The frozen previous-slice model's similarity rows are the targets for the current
    model's rows, in both directions (image->text rows and text->image rows). A row where
    the old model retrieves the wrong partner (argmax off the diagonal) carries no target.
    Returns the mean over kept rows of KL(old || new), averaged over the two directions.
    """
    img, txt = gather_features(img), gather_features(txt)
    old_img, old_txt = gather_features(old_img.detach()), gather_features(old_txt.detach())
    new_l = logit_scale * img @ txt.t()
    old_l = (old_logit_scale * old_img @ old_txt.t()).detach()
    return (_masked_kl_rows(old_l, new_l) + _masked_kl_rows(old_l.t(), new_l.t())) / 2


def alignment_loss(img: torch.Tensor, txt: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """Wang & Isola alignment: mean ||f(x) - g(y)||^alpha over positive pairs."""
    return (img - txt).norm(dim=1).pow(alpha).mean()


def uniformity_loss(x: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Wang & Isola uniformity: log mean exp(-t ||xi - xj||^2) over distinct pairs."""
    if x.shape[0] < 2:
        return x.sum() * 0.0
    return torch.pdist(x, p=2).pow(2).mul(-t).exp().mean().log()
