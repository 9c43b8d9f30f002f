"""Per-shard captioning (runs inside a Ray task): images -> synthetic captions -> scores -> sources.

Models and the embedded caption bank are cached per worker process, so a worker that
handles many shards loads them once. The function only reads the dataset and returns the
three new columns; the driver commits them (one writer per version, atomic per shard).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from curation.augment import views
from curation.caption.config import CaptionConfig
from curation.caption.mixing import caption_sources
from curation.caption.retrieval import build_bank, load_texts, retrieve
from curation.caption.search import decode_text, generate

NEW_COLUMNS = ("synthetic_caption", "synthetic_clip_score", "caption_source")


def pick_device(pref: str) -> str:
    return "cuda" if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()) else "cpu"


@functools.lru_cache(maxsize=4)
def _clip(model: str, pretrained: str | None, device: str):
    from curation.models import load_clip

    return load_clip(model, pretrained, device=device)


@functools.lru_cache(maxsize=2)
def _coca(model: str, pretrained: str | None, device: str):
    from curation.caption.coca import CachedCoca

    loaded = _clip(model, pretrained, device)
    return loaded, CachedCoca(loaded.model)


@functools.lru_cache(maxsize=4)
def _bank(model: str, pretrained: str | None, device: str, bank: str, classes: str | None, template: str):
    clip = _clip(model, pretrained, device)
    labels = load_texts(classes, "class labels") if classes else None
    return build_bank(clip.model, clip.tokenizer, load_texts(bank), classes=labels,
                      class_template=template, device=device)


def _images(ds, rows: list[dict[str, Any]], preprocess) -> tuple[torch.Tensor | None, list[bool]]:
    """Decode and preprocess rows' images; rows that fail to decode are marked False."""
    from curation.io.images import open_image

    tensors, ok = [], []
    for data in ds.read_images(rows):
        try:
            with open_image(data) as im:
                tensors.append(preprocess(im.convert("RGB")))
            ok.append(True)
        except Exception:  # a corrupt image gets no synthetic caption, never a failed shard
            ok.append(False)
    return (torch.stack(tensors) if tensors else None), ok


def _autocast(device: str):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)


def caption_shard(shard_id: int, *, url: str, storage_options: dict, version: int, config: dict,
                  clip_model: str, clip_pretrained: str | None) -> dict[str, list]:
    """Compute ``synthetic_caption``, ``synthetic_clip_score``, ``caption_source`` for one shard.

    Returns the three columns as lists aligned with the shard's metadata rows (version
    ``version``). Rows without a (decodable) image get nulls and source ``none``.
    Stored image embeddings are used when the dataset's embeddings come from the scoring
    CLIP; stored ``clip_score`` values are used when ``clip_model`` names it.
    """
    from curation.io import Dataset

    cfg = CaptionConfig.parse(config, "caption")
    torch.set_num_threads(max(1, int(cfg.num_cpus)))
    device = pick_device(cfg.device)
    ds = Dataset(url, storage_options, version=version)
    rows = ds.read_meta(shard_id).to_pylist()
    clip = _clip(clip_model, clip_pretrained, device)
    stored = _stored_embeddings(ds, shard_id, clip.name, len(rows))
    idx = [i for i, r in enumerate(rows) if r["status"] == "success" and r.get("tar_offset") is not None]
    syn_caption: list[str | None] = [None] * len(rows)
    syn_score: list[float | None] = [None] * len(rows)
    raw_score = [r.get("clip_score") if r.get("clip_model") == clip.name else None for r in rows]
    job = _Job(ds, cfg, device, clip, (clip_model, clip_pretrained), shard_id)
    for start in range(0, len(idx), cfg.batch_size):
        batch = idx[start:start + cfg.batch_size]
        caps, scores, raws = job.run([rows[i] for i in batch], [stored[i] for i in batch] if stored else None)
        for j, i in enumerate(batch):
            syn_caption[i], syn_score[i] = caps[j], scores[j]
            if raw_score[i] is None:
                raw_score[i] = raws[j]
    sources = caption_sources(raw_score, syn_score, syn_caption, cfg.threshold, cfg.mode)
    return {"synthetic_caption": syn_caption, "synthetic_clip_score": syn_score, "caption_source": sources}


def _stored_embeddings(ds, shard_id: int, clip_name: str, n: int) -> list[tuple | None] | None:
    """Per row ``(image_emb, text_emb)`` arrays (or None) when the scoring CLIP made them."""
    if not ds.embeddings or ds.embeddings.get("model") != clip_name:
        return None
    emb = ds.read_embeddings(shard_id, columns=["image_emb", "text_emb"])
    if emb.num_rows != n:
        return None
    img, txt = emb.column("image_emb").to_pylist(), emb.column("text_emb").to_pylist()
    return [(a, b) if a is not None and b is not None and any(a) else None for a, b in zip(img, txt)]


class _Job:
    """What one shard's batches share: dataset, config, device, scoring CLIP."""

    def __init__(self, ds, cfg: CaptionConfig, device: str, clip, clip_key: tuple[str, str | None], shard_id: int = 0):
        self.ds, self.cfg, self.device, self.clip, self.clip_key = ds, cfg, device, clip, clip_key
        self.shard_id, self.batches = shard_id, 0

    def _embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.model.encode_image(images.to(self.device)).float(), dim=-1).cpu()

    def _embed_text(self, texts: list[str]) -> torch.Tensor:
        tok = self.clip.tokenizer(texts).to(self.device)
        return F.normalize(self.clip.model.encode_text(tok).float(), dim=-1).cpu()

    @torch.no_grad()
    def run(self, rows: list[dict], stored: list | None):
        """One batch: ``(synthetic captions, synthetic scores, raw scores)``, None where no image."""
        n, cfg = len(rows), self.cfg
        caps: list[str | None] = [None] * n
        scores: list[float | None] = [None] * n
        raws: list[float | None] = [None] * n
        images = None
        with _autocast(self.device):
            kind = cfg.views if cfg.method == "retrieval" else "none"   # test-time views
            if stored is not None and all(s is not None for s in stored) and cfg.method == "retrieval" \
                    and kind == "none":
                good = list(range(n))    # stored embeddings: no image needs decoding
                img_emb = F.normalize(torch.tensor(np.array([s[0] for s in stored]), dtype=torch.float32), dim=-1)
                raw = (F.normalize(torch.tensor(np.array([s[1] for s in stored]), dtype=torch.float32), dim=-1)
                       * img_emb).sum(-1)
            else:
                images, ok = _images(self.ds, rows, self.clip.preprocess)
                good = [i for i in range(n) if ok[i]]
                if images is None:
                    return caps, scores, raws
                embs = [self._embed_images(v) for v in views(images, kind)]
                img_emb = embs[0]        # the plain image: every score uses it
                raw = (self._embed_text([rows[i]["caption"] or "" for i in good]) * img_emb).sum(-1)
            if cfg.method == "retrieval":
                bank = _bank(*self.clip_key, self.device, cfg.bank, cfg.classes, cfg.class_template)
                query = img_emb if kind == "none" else F.normalize(torch.stack(embs).mean(0), dim=-1)
                top_i, _ = retrieve(bank, query, restrict_to_class=cfg.restrict_to_class)
                chosen = top_i[:, 0]
                texts, syn = [bank.texts[int(t)] for t in chosen], (bank.emb[chosen] * img_emb).sum(-1)
            else:
                texts = self._generate([rows[i] for i in good])
                syn = (self._embed_text(texts) * img_emb).sum(-1)
        for j, i in enumerate(good):
            caps[i], scores[i], raws[i] = texts[j], float(syn[j]), float(raw[j])
        return caps, scores, raws

    def _generate(self, rows: list[dict]) -> list[str]:
        """CoCa captions (the CoCa model has its own preprocess, e.g. another image size)."""
        cfg = self.cfg
        loaded, coca = _coca(cfg.model, cfg.pretrained, self.device)
        images, _ = _images(self.ds, rows, loaded.preprocess)
        if images is None:
            raise ValueError("caption generate: none of the rows has a decodable image")
        tok = loaded.tokenizer
        sot, eot = int(getattr(tok, "sot_token_id", 49406)), int(getattr(tok, "eot_token_id", 49407))
        # sampling noise differs per shard and batch but is fixed by (seed, shard, batch): reruns agree
        seed = hash((cfg.seed, self.shard_id, self.batches)) & 0x7FFFFFFF
        opts = dataclasses.replace(cfg.decode_options(), seed=seed)
        self.batches += 1
        out = generate(coca, images.to(self.device), sot=sot, eot=eot, opts=opts)
        return [decode_text(tok, t) for t in out]
