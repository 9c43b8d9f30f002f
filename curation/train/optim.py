"""AdamW with CLIP's parameter groups and a cosine schedule with linear warmup."""
from __future__ import annotations

import math

import torch


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float = 0.1,
                   betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-6,
                   fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW; gains, biases, embeddings and ``logit_scale`` get no weight decay (open_clip's rule).

    ``fused=True`` runs the update as one kernel per parameter group (same maths, on CPU too).
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name \
            or "embedding" in name
        (no_decay if exclude else decay).append(p)
    groups = [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)


def cosine_lr(step: int, total: int, base_lr: float, warmup: int, min_lr: float = 0.0) -> float:
    """Linear warmup over ``warmup`` steps, then cosine from ``base_lr`` down to ``min_lr``."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    span = max(1, total - warmup)
    frac = min(1.0, (step - warmup) / span)
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * frac))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr
