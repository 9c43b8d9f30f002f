"""Retrieval and zero-shot evaluation of a CLIP model on a held-out TensorCache.

Synthetic and web corpora repeat captions verbatim ("a red circle"), so a retrieval counts
as correct when the retrieved item has the *same caption text* as the query's partner,
not only the same row; otherwise identical captions would make recall depend on ties.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from curation.train.data import TensorCache


@torch.no_grad()
def encode(model: Any, cache: TensorCache, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised image and text features for every row (model in eval mode)."""
    was_training = model.training
    model.eval()
    imgs, txts = [], []
    for i in range(0, len(cache), batch_size):
        imgs.append(F.normalize(model.encode_image(cache.images[i:i + batch_size]), dim=-1))
        txts.append(F.normalize(model.encode_text(cache.tokens[i:i + batch_size]), dim=-1))
    model.train(was_training)
    return torch.cat(imgs), torch.cat(txts)


def _recall(sim: torch.Tensor, same: torch.Tensor, k: int) -> float:
    top = sim.topk(min(k, sim.shape[1]), dim=1).indices
    return float(same.gather(1, top).any(dim=1).float().mean())


@torch.no_grad()
def retrieval_metrics(model: Any, cache: TensorCache, tokenizer: Any = None,
                      template: str = "{}") -> dict[str, float]:
    """Recall@1/5 both directions, and zero-shot accuracy when the cache has labels.

    Returns keys ``i2t_r1 i2t_r5 t2i_r1 t2i_r5`` and, with labels and a tokenizer,
    ``zeroshot_acc`` (prompts ``template.format(label)`` over the sorted distinct labels).
    """
    img, txt = encode(model, cache)
    codes = {c: i for i, c in enumerate(dict.fromkeys(cache.captions))}
    cap = torch.tensor([codes[c] for c in cache.captions])
    same = cap[:, None] == cap[None, :]
    sim = img @ txt.t()
    out = {"i2t_r1": _recall(sim, same, 1), "i2t_r5": _recall(sim, same, 5),
           "t2i_r1": _recall(sim.t(), same, 1), "t2i_r5": _recall(sim.t(), same, 5)}
    if cache.labels and tokenizer is not None:
        out["zeroshot_acc"] = zero_shot_accuracy(model, img, cache.labels, tokenizer, template)
    return out


@torch.no_grad()
def zero_shot_accuracy(model: Any, img: torch.Tensor, labels: list, tokenizer: Any,
                       template: str = "{}") -> float:
    """Fraction of images whose nearest class prompt is their own label (rows without a label skipped)."""
    classes = sorted({str(lb) for lb in labels if lb is not None})
    if not classes:
        return float("nan")
    model.eval()
    cls = F.normalize(model.encode_text(tokenizer([template.format(c) for c in classes])), dim=-1)
    pred = (img @ cls.t()).argmax(dim=1)
    idx = {c: i for i, c in enumerate(classes)}
    rows = [i for i, lb in enumerate(labels) if lb is not None]
    truth = torch.tensor([idx[str(labels[i])] for i in rows])
    return float((pred[rows] == truth).float().mean())
