"""Train the seed filter CLIP on a clean set of pairs (the Data-Filtering-Network idea).

The seed model scores the noisy corpus: a small CLIP trained only on trusted pairs ranks
web pairs by image-text agreement. Images are decoded and preprocessed once up front; a
convolutional tower runs in channels-last layout and AdamW is fused (bench/RESULTS.md "Demo"
has the step-time breakdown on 2 cores).
"""
from __future__ import annotations

import logging
import math
import os
from typing import Any, Callable

import torch
import torch.nn.functional as F

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
                    augment: bool = False, history: list[float] | None = None,
                    threads: int | None = None, web_copies: int = 0) -> str:
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
        web_copies: also train on this many re-served copies of each pair
            (:func:`curation.augment.web_copy`: a random crop, resized back, recompressed as
            JPEG; drawn from ``seed``), so that a filter CLIP trained on clean pairs judges
            crawled images as it learned them.
        augment: flip and transpose each image at random (the 8 symmetries of the square).
            Only for captions that say nothing about orientation or left/right, such as the
            synthetic corpus's; on 3000 seed pairs it lifts held-out shape accuracy from
            0.47 to 0.62 at 600 steps (a supervised probe; bench/RESULTS.md "Demo").
        history: if given, per-step training losses are appended to it.
        threads: torch intra-op threads while training (default: leave torch's setting).
    Returns:
        ``out_dir``, loadable with ``load_clip(model, pretrained=out_dir)``.
    """
    if steps < 1 or batch_size < 2:
        from curation.errors import ConfigError

        raise ConfigError(f"train_seed_clip: steps must be >= 1 and batch_size >= 2 (got {steps}, {batch_size})")
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _train(pairs, out_dir, model, pretrained, steps, batch_size, lr, weight_decay, warmup, seed,
                      log_every, augment, history, web_copies)
    finally:
        torch.set_num_threads(before)


def _train(pairs: Any, out_dir: str, model: str, pretrained: str | None, steps: int, batch_size: int, lr: float,
           weight_decay: float, warmup: int | None, seed: int, log_every: int, augment: bool,
           history: list[float] | None, web_copies: int) -> str:
    net, preprocess, tokenizer = create_train_model(model, pretrained, seed)
    cache = build_cache(with_web_copies(pairs, web_copies, seed) if web_copies else pairs, preprocess, tokenizer)
    bs = min(batch_size, len(cache))
    images_all = cache.images
    if _has_conv(net):  # oneDNN convolutions run ~20% faster per step in channels-last (same maths)
        net = net.to(memory_format=torch.channels_last)
        images_all = images_all.contiguous(memory_format=torch.channels_last)
    tokens, restore = _compact_vocabulary(net, cache.tokens)
    opt = make_optimizer(net, lr, weight_decay, fused=True)
    encode_text = _trimmed_text_encoder(net, tokens[:bs])
    warm = max(1, steps // 20) if warmup is None else warmup
    gen = torch.Generator().manual_seed(seed)
    perm, pos = torch.randperm(len(cache), generator=gen), 0
    for step in range(steps):
        if pos + bs > len(perm):  # new epoch: reshuffle, drop the ragged tail
            perm, pos = torch.randperm(len(cache), generator=gen), 0
        idx = perm[pos:pos + bs]
        pos += bs
        set_lr(opt, cosine_lr(step, steps, lr, warm))
        images = images_all[idx]
        if augment:
            images = random_dihedral(images, gen)
        img = net.encode_image(images, normalize=True)
        loss = clip_loss(img, F.normalize(encode_text(tokens[idx]), dim=-1), net.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            net.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        if history is not None:
            history.append(float(loss.detach()))
        if log_every and (step % log_every == 0 or step == steps - 1):
            log.info("seed step %d/%d loss %.4f", step + 1, steps, float(loss.detach()))
    restore()
    net.eval()
    os.makedirs(out_dir, exist_ok=True)
    return save_checkpoint(net, _arch(model, pretrained), out_dir,
                           extra={"trained_by": "train_seed_clip", "steps": steps, "batch_size": bs,
                                  "lr": lr, "seed": seed, "pairs": len(cache)})


def with_web_copies(pairs: Any, copies: int, seed: int) -> list[dict]:
    """The pairs (as ``image``/``caption``/``class_label`` dicts), then ``copies`` rounds of
    :func:`~curation.augment.web_copy` of every image with the same caption, drawn from ``seed``."""
    import numpy as np

    from curation.augment import web_copy
    from curation.train.data import pair_rows, to_pil

    rows = [{"image": to_pil(image), "caption": caption, "class_label": label}
            for image, caption, _, label in pair_rows(pairs)]
    rng = np.random.default_rng([seed, 0x5EB])
    out = list(rows)
    for _ in range(copies):
        out += [{**r, "image": web_copy(r["image"], rng)} for r in rows]
    return out


def _compact_vocabulary(net: Any, tokens: torch.Tensor) -> tuple[torch.Tensor, Callable[[], None]]:
    """Train only the embedding rows of tokens that occur: returns (tokens renumbered 0..V-1, restore).

    Rows of tokens that never occur get zero gradients, so AdamW never moves them (embeddings
    have no weight decay): training a V-row copy and writing it back gives the same weights,
    without a dense 49,408-row gradient and optimizer update every step. The renumbering keeps
    the order of ids, so end-of-text (the largest id) stays the largest and ``argmax`` pooling
    finds the same position. ``restore()`` writes the rows back into the full table.
    """
    emb = getattr(net, "token_embedding", None)
    if not isinstance(emb, torch.nn.Embedding) or getattr(net, "text_pool_type", None) != "argmax":
        return tokens, lambda: None
    used = torch.unique(tokens)  # sorted
    remap = torch.zeros(emb.num_embeddings, dtype=torch.long)
    remap[used] = torch.arange(len(used))
    small = torch.nn.Embedding.from_pretrained(emb.weight.detach()[used].clone(), freeze=False)
    net.token_embedding = small

    def restore() -> None:
        with torch.no_grad():
            emb.weight[used] = small.weight.detach()
        net.token_embedding = emb

    return remap[tokens], restore


def _trimmed_text_encoder(net: Any, sample: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``encode_text`` over the first L positions only, L = the batch's last end-of-text + 1.

    With causal attention and the end-of-text token pooled (open_clip's ``argmax`` pooling),
    positions after it cannot change the output, so the trimmed pass computes the same features
    (the demo's captions end by position 11 of 16: a quarter of the text tower's work saved).
    The equivalence is checked on ``sample`` once; any other model uses ``net.encode_text``.
    """
    from open_clip.transformer import text_global_pool

    mask = getattr(net, "attn_mask", None)
    if getattr(net, "text_pool_type", None) != "argmax" or mask is None or not hasattr(net, "positional_embedding"):
        return net.encode_text

    def encode(text: torch.Tensor) -> torch.Tensor:
        n = int(text.argmax(dim=-1).max()) + 1
        text = text[:, :n]
        cast = net.transformer.get_cast_dtype()
        x = net.token_embedding(text).to(cast) + net.positional_embedding[:n].to(cast)
        x = net.ln_final(net.transformer(x, attn_mask=mask[:n, :n]))
        x = text_global_pool(x, text, "argmax")
        proj = net.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj

    with torch.no_grad():
        same = torch.allclose(encode(sample), net.encode_text(sample), atol=1e-5, rtol=1e-4)
    return encode if same else net.encode_text


def _has_conv(net: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) for m in net.modules())


def _arch(model: str, pretrained: str | None) -> str:
    from curation.models import _resolve

    return _resolve(model, pretrained)[0]
