"""One training step and the resumable batch sampler used by continual runs.

The sampler draws *global* batches: under data parallelism every rank computes the same
global batch indices and takes its own contiguous chunk, so a run on ``W`` processes sees
exactly the samples (and, with gathered-feature losses and DDP's gradient average, makes
exactly the update) of one process with the same global batch size.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from curation.train.config import LossSpec
from curation.train.losses import alignment_loss, clip_loss, gather_features, modx_loss, uniformity_loss

MAX_LOGIT_SCALE = math.log(100.0)


class PoolSampler:
    """Epoch-wise shuffled batches over ``n`` rows; ``state_dict`` pins the exact next sample.

    Each epoch's permutation is a pure function of ``(seed, epoch)``, so restoring
    ``{"epoch", "pos"}`` resumes at the same sample. The ragged tail of an epoch is dropped.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0):
        self.n, self.batch_size, self.seed = n, min(batch_size, n), seed
        self.epoch, self.pos = 0, 0
        self._perm = self._permutation(0)

    def _permutation(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))

    def next(self) -> torch.Tensor:
        if self.pos + self.batch_size > self.n:
            self.epoch, self.pos = self.epoch + 1, 0
            self._perm = self._permutation(self.epoch)
        idx = self._perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos, "n": self.n, "batch_size": self.batch_size, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["n"] != self.n or state["batch_size"] != self.batch_size:
            raise ValueError(f"sampler state for n={state['n']}, batch={state['batch_size']} "
                             f"does not match n={self.n}, batch={self.batch_size}")
        self.epoch, self.pos = state["epoch"], state["pos"]
        self._perm = self._permutation(self.epoch)


def rank_chunk(idx: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous share of a global batch (the whole batch without torch.distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return idx
    w, r = dist.get_world_size(), dist.get_rank()
    if len(idx) % w:
        raise ValueError(f"global batch {len(idx)} is not divisible by world size {w}")
    per = len(idx) // w
    return idx[r * per:(r + 1) * per]


def compute_loss(model: Any, images: torch.Tensor, tokens: torch.Tensor, loss: LossSpec,
                 old_model: Any = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss for one (local) batch and its parts (contrastive, modx, align, uniform)."""
    img, txt, scale = model(images, tokens)
    total = clip_loss(img, txt, scale)
    parts = {"contrastive": float(total.detach())}
    if loss.modx_alpha > 0 and old_model is not None:
        with torch.no_grad():
            oi, ot, os_ = old_model(images, tokens)
        mx = modx_loss(img, txt, oi, ot, scale, os_)
        total = total + loss.modx_alpha * mx
        parts["modx"] = float(mx.detach())
    if loss.align_weight > 0 or loss.uniform_weight > 0:
        gi, gt = gather_features(img), gather_features(txt)
        if loss.align_weight > 0:
            al = alignment_loss(gi, gt)
            total, parts["align"] = total + loss.align_weight * al, float(al.detach())
        if loss.uniform_weight > 0:
            un = (uniformity_loss(gi) + uniformity_loss(gt)) / 2
            total, parts["uniform"] = total + loss.uniform_weight * un, float(un.detach())
    parts["loss"] = float(total.detach())
    return total, parts


def train_step(model: Any, opt: torch.optim.Optimizer, images: torch.Tensor, tokens: torch.Tensor,
               loss: LossSpec, old_model: Any = None) -> dict[str, float]:
    """Forward, backward (DDP averages gradients when ``model`` is wrapped), AdamW step, clamp τ."""
    total, parts = compute_loss(model, images, tokens, loss, old_model)
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    inner = getattr(model, "module", model)
    with torch.no_grad():
        inner.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
    return parts


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """An eval-mode, gradient-free copy (the Mod-X teacher)."""
    import copy

    old = copy.deepcopy(getattr(model, "module", model)).eval()
    for p in old.parameters():
        p.requires_grad_(False)
    return old

