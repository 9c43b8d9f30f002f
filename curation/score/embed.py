"""The two Ray Data steps of scoring: read+decode+tokenise (tasks) and embed (actor pool).

``read_shards`` runs as stateless Ray tasks: it reads a shard's tar sequentially, keeps
successful samples, decodes their images (Pillow, draft mode) or passes the raw bytes on
(GPU decode), and tokenises captions. ``ClipEmbedder`` is the callable class of the actor
pool: it loads the model once per actor and embeds a batch. Because they are separate
operators, Ray Data's streaming executor overlaps decoding of the next batches with the
forward pass of the current one. Neither step ever raises for one bad sample: the sample
leaves with a ``score_error`` reason and zero vectors, which the driver stores as nulls.
"""
from __future__ import annotations

import functools
from typing import Any, Iterator

import numpy as np

from curation.score.preprocess import PixelPipeline, decode_batch_torch, resize_normalize

EMPTY_CAPTION = ""  # a null/empty caption is still scored: CLIP embeds the bare SOT/EOT tokens


@functools.lru_cache(maxsize=4)
def _tokenizer(arch: str):
    import open_clip

    from curation.models import register_tiny_configs

    register_tiny_configs()
    return open_clip.get_tokenizer(arch)


def read_shards(batch: dict[str, np.ndarray], *, url: str, storage_options: dict, arch: str,
                pipe: PixelPipeline, decode: str, draft: bool, chunk: int) -> Iterator[dict[str, Any]]:
    """For each shard id in ``batch["shard"]``, yield chunks of decoded, tokenised samples.

    ``decode="pil"`` ships ``uint8 (S,S,3)`` pixels; ``decode="torch"`` ships raw bytes
    (the actor decodes them on its device).
    """
    from curation.io import Dataset

    ds = Dataset(url, storage_options)
    tok = _tokenizer(arch)
    for sid in batch["shard"].tolist():
        rows: list[dict[str, Any]] = []
        for sample in ds.iter_samples([int(sid)], columns=["uid", "key", "status", "caption", "tar_offset"]):
            if sample["status"] != "success" or sample["tar_offset"] is None:
                continue
            rows.append(sample)
            if len(rows) >= chunk:
                yield _prepare(rows, int(sid), tok, pipe, decode, draft)
                rows = []
        if rows:
            yield _prepare(rows, int(sid), tok, pipe, decode, draft)


def _prepare(rows: list[dict], sid: int, tok, pipe: PixelPipeline, decode: str, draft: bool) -> dict[str, Any]:
    captions = [r["caption"] if r["caption"] else EMPTY_CAPTION for r in rows]
    out: dict[str, Any] = {
        "uid": np.array([r["uid"] for r in rows], dtype=object),
        "shard": np.full(len(rows), sid, dtype=np.int32),
        # the tokenizer truncates to the context length and keeps EOT last, as CLIP training did
        "tokens": tok(captions).numpy().astype(np.int64),
    }
    if decode == "torch":
        out["image"] = np.array([r["image"] for r in rows], dtype=object)
        out["error"] = np.array([""] * len(rows), dtype=object)
        return out
    pixels = np.zeros((len(rows), pipe.size, pipe.size, 3), dtype=np.uint8)
    errors = []
    for i, r in enumerate(rows):
        arr, err = pipe.decode(r["image"], draft=draft)
        if arr is not None:
            pixels[i] = arr
        errors.append(err or "")
    out["pixels"] = pixels
    out["error"] = np.array(errors, dtype=object)
    return out


class ClipEmbedder:
    """Ray Data actor: loads the model once, embeds batches, returns scores + embeddings.

    Output per sample: ``uid``, ``shard``, ``clip_score`` (raw cosine, float32),
    ``score_error`` ("" when scored), ``image_emb``/``text_emb`` (L2-normalised float32).
    """

    def __init__(self, model: str, pretrained: str | None, device: str, precision: str,
                 pipe: PixelPipeline, threads: int = 1):
        import torch

        from curation.models import load_clip

        torch.set_num_threads(max(1, threads))
        self.device = device
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.clip = load_clip(model, pretrained, device=device)
        if self.dtype is not torch.float32:
            self.clip.model.to(self.dtype)  # pure bf16, like the baseline loop users write
        self.pipe = pipe
        with torch.inference_mode():  # embedding width, so all-failed batches keep the shape
            probe = torch.zeros((1, self.clip.context_length), dtype=torch.long, device=device)
            self.dim = int(self.clip.model.encode_text(probe).shape[-1])

    def _images(self, batch: dict[str, np.ndarray], errors: list[str]):
        """The normalised image batch of the rows that decoded (errors filled in place)."""
        if "pixels" in batch:
            ok = [i for i, e in enumerate(errors) if not e]
            return ok, self.pipe.to_tensor(batch["pixels"][ok], self.device, self.dtype)
        decoded = decode_batch_torch(list(batch["image"]), self.device)
        retry = [i for i, d in enumerate(decoded) if isinstance(d, str)]
        for i in retry:  # PNG/WebP/odd JPEGs: the exact CPU path, then to the device
            arr, err = self.pipe.decode(bytes(batch["image"][i]), draft=True)
            if arr is None:
                errors[i] = err or decoded[i]
            else:
                import torch

                decoded[i] = torch.from_numpy(arr).permute(2, 0, 1).to(self.device)
        ok = [i for i, e in enumerate(errors) if not e]
        if not ok:
            return ok, None
        return ok, resize_normalize([decoded[i] for i in ok], self.pipe, self.dtype)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch
        import torch.nn.functional as F

        n = len(batch["uid"])
        errors = [str(e) for e in batch["error"]]
        ok, images = self._images(batch, errors)
        d = self.dim
        img_emb = np.zeros((n, d), dtype=np.float32)
        txt_emb = np.zeros((n, d), dtype=np.float32)
        score = np.full(n, np.nan, dtype=np.float32)
        if ok:
            tokens = torch.from_numpy(np.ascontiguousarray(batch["tokens"][ok])).to(self.device)
            with torch.inference_mode():
                fi = F.normalize(self.clip.model.encode_image(images).float(), dim=-1)
                ft = F.normalize(self.clip.model.encode_text(tokens).float(), dim=-1)
                s = (fi * ft).sum(-1)
            img_emb[ok], txt_emb[ok], score[ok] = fi.cpu().numpy(), ft.cpu().numpy(), s.cpu().numpy()
        return {"uid": batch["uid"], "shard": batch["shard"], "clip_score": score,
                "score_error": np.array(errors, dtype=object), "image_emb": img_emb, "text_emb": txt_emb}
