"""Train the seed filter CLIP on a clean set of pairs (the Data-Filtering-Network idea).

The seed model scores the noisy corpus: a small CLIP trained only on trusted pairs ranks
web pairs by image-text agreement. On 2 CPU cores ``curation-tiny`` (32 px) trains at
about 0.6 s per 256-pair step once images are decoded up front (DESIGN.md section 7).
"""
from __future__ import annotations

import logging
import math
import os
from typing import Any

import torch

from curation.augment import random_dihedral
from curation.models import register_tiny_configs, save_checkpoint
from curation.train.data import build_cache
from curation.train.losses import clip_loss
from curation.train.optim import cosine_lr, make_optimizer, set_lr

log = logging.getLogger(__name__)

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the temperature at 100


def create_train_model(model: str, pretrained: str | None = None, seed: int = 0) -> tuple[Any, Any, Any]:
    """(model in train mode, eval preprocess, tokenizer) for any open_clip form or checkpoint folder.

    Random init is seeded by ``seed`` so two runs with the same seed start identically.
    """

    from curation.models import load_clip

    register_tiny_configs()
    torch.manual_seed(seed)
    loaded = load_clip(model, pretrained)
    loaded.model.train()
    return loaded.model, loaded.preprocess, loaded.tokenizer


def train_seed_clip(pairs: Any, *, out_dir: str, model: str = "curation-tiny", pretrained: str | None = None,
                    steps: int = 400, batch_size: int = 256, lr: float = 1e-3, weight_decay: float = 0.1,
                    warmup: int | None = None, seed: int = 0, log_every: int = 50,
                    augment: bool = False, history: list[float] | None = None) -> str:
    """Train a CLIP with the contrastive loss on ``pairs`` and save a checkpoint folder.

    Args:
        pairs: iterable of ``(image bytes | PIL image, caption)`` (dicts with ``image``,
            ``caption`` also work) or a pyarrow Table with ``image``/``caption`` columns.
        out_dir: checkpoint folder to write (``config.json`` + ``model.safetensors``).
        model: open_clip architecture (default the 32 px ``curation-tiny``).
        pretrained: optional start weights (tag, file or project checkpoint folder).
        steps, batch_size, lr, weight_decay, warmup: AdamW + cosine-with-warmup schedule;
            ``warmup`` defaults to 5% of ``steps``.
        seed: seeds init and batch order; same seed + same pairs -> same weights.
        augment: flip and transpose each image at random (the 8 symmetries of the square).
            Only for captions that say nothing about orientation or left/right, such as the
            synthetic corpus's; on 3000 seed pairs it lifts held-out shape accuracy from
            0.47 to 0.62 at 600 steps (a supervised probe; bench/RESULTS.md "Demo").
        history: if given, per-step training losses are appended to it.
    Returns:
        ``out_dir``, loadable with ``load_clip(model, pretrained=out_dir)``.
    """
    if steps < 1 or batch_size < 2:
        from curation.errors import ConfigError

        raise ConfigError(f"train_seed_clip: steps must be >= 1 and batch_size >= 2 (got {steps}, {batch_size})")
    net, preprocess, tokenizer = create_train_model(model, pretrained, seed)
    cache = build_cache(pairs, preprocess, tokenizer)
    bs = min(batch_size, len(cache))
    opt = make_optimizer(net, lr, weight_decay)
    warm = max(1, steps // 20) if warmup is None else warmup
    gen = torch.Generator().manual_seed(seed)
    perm, pos = torch.randperm(len(cache), generator=gen), 0
    for step in range(steps):
        if pos + bs > len(perm):  # new epoch: reshuffle, drop the ragged tail
            perm, pos = torch.randperm(len(cache), generator=gen), 0
        idx = perm[pos:pos + bs]
        pos += bs
        set_lr(opt, cosine_lr(step, steps, lr, warm))
        images = cache.images[idx]
        if augment:
            images = random_dihedral(images, gen)
        img, txt, scale = net(images, cache.tokens[idx])
        loss = clip_loss(img, txt, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            net.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        if history is not None:
            history.append(float(loss.detach()))
        if log_every and (step % log_every == 0 or step == steps - 1):
            log.info("seed step %d/%d loss %.4f", step + 1, steps, float(loss.detach()))
    net.eval()
    os.makedirs(out_dir, exist_ok=True)
    return save_checkpoint(net, _arch(model, pretrained), out_dir,
                           extra={"trained_by": "train_seed_clip", "steps": steps, "batch_size": bs,
                                  "lr": lr, "seed": seed, "pairs": len(cache)})


def _arch(model: str, pretrained: str | None) -> str:
    from curation.models import _resolve

    return _resolve(model, pretrained)[0]
