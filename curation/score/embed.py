"""The Ray Data steps of scoring: read+decode (tasks or in-actor) and embed (actor pool).

Two layouts share these pieces (``curation.score.stage`` picks one):

* ``split`` (GPU): ``read_shards`` runs as stateless Ray tasks: it reads a shard's tar
  sequentially, keeps successful samples and decodes their images (Pillow, draft mode) or
  passes the raw bytes on (GPU decode); ``ClipEmbedder`` is the callable class of the actor
  pool: it loads the model once per actor, tokenises the captions (batched) and embeds a
  batch. Ray Data's streaming executor overlaps decoding of the next batches with the
  forward pass of the current one.
* ``fused`` (CPU): ``ShardScorer`` actors each take whole shards, read them sequentially,
  decode in a background thread one chunk ahead (Pillow releases the GIL) and run the model
  on the chunk before. On CPU the model and the decoder compete for the same cores, so one
  actor per ``threads_per_actor`` cores, each doing everything, keeps every core busy with no
  block hand-offs through the object store (the stage's actor pool runs it, one shard per
  call). ``ShardScorer`` also runs in-process (no Ray) for small datasets and small clusters.

Read tasks import only Pillow/numpy/pyarrow (captions travel as strings and are tokenised
next to the model), so a fresh read worker starts in a fraction of a second. No step ever
raises for one bad sample: the sample leaves with a ``score_error`` reason and zero vectors,
which are stored as nulls (:mod:`curation.score.assemble`). Whoever scores a shard writes it:
the in-process scorer or CPU actor after the whole shard, the split layout's model actors
through :mod:`curation.score.parts`.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Generator, Iterable, Iterator

import numpy as np

from curation.score.preprocess import PixelPipeline, decode_batch_torch, resize_normalize

EMPTY_CAPTION = ""  # a null/empty caption is still scored: CLIP embeds the bare SOT/EOT tokens
READ_COLUMNS = ["uid", "key", "status", "caption", "tar_offset"]


def read_shards(batch: dict[str, np.ndarray], *, url: str, storage_options: dict, version: int,
                pipe: PixelPipeline, decode: str, draft: bool, chunk: int, **_: Any) -> Iterator[dict[str, Any]]:
    """For each shard id in ``batch["shard"]``, yield chunks of decoded samples.

    ``decode="pil"`` ships ``uint8 (S,S,3)`` pixels; ``decode="torch"`` ships raw bytes
    (the actor decodes them on its device). Captions ship as strings.
    """
    from curation.io import Dataset

    ds = Dataset(url, storage_options, version=version)
    for sid in batch["shard"].tolist():
        yield from iter_shard_chunks(ds, int(sid), pipe, decode, draft, chunk)


def iter_shard_chunks(ds: Any, sid: int, pipe: PixelPipeline, decode: str, draft: bool,
                      chunk: int) -> Iterator[dict[str, Any]]:
    """One shard of ``ds``, read sequentially (one pass over its tar), in decoded chunks of ``chunk``."""
    rows: list[dict[str, Any]] = []
    for sample in ds.iter_samples([sid], columns=READ_COLUMNS):
        if sample["status"] != "success" or sample["tar_offset"] is None:
            continue
        rows.append(sample)
        if len(rows) >= chunk:
            yield _prepare(rows, sid, pipe, decode, draft)
            rows = []
    if rows:
        yield _prepare(rows, sid, pipe, decode, draft)


def _prepare(rows: list[dict], sid: int, pipe: PixelPipeline, decode: str, draft: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "uid": np.array([r["uid"] for r in rows], dtype=object),
        "shard": np.full(len(rows), sid, dtype=np.int32),
        "caption": np.array([r["caption"] or EMPTY_CAPTION for r in rows], dtype=object),
    }
    if decode == "torch":
        out["image"] = np.array([r["image"] for r in rows], dtype=object)
        out["error"] = np.array([""] * len(rows), dtype=object)
        return out
    out["pixels"], errors = pipe.decode_many([r["image"] for r in rows], draft=draft)
    out["error"] = np.array(errors, dtype=object)
    return out


def prefetch(it: Iterable[Any], depth: int = 1) -> Generator[Any, None, None]:
    """Run ``it`` in a background thread, ``depth`` items ahead of the consumer.

    Decoding (Pillow) and the forward pass (torch) both release the GIL, so the next chunk
    decodes while the model runs on this one. Exceptions re-raise in the consumer.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    end, stop = object(), threading.Event()

    def put(item: tuple) -> bool:
        while not stop.is_set():  # the consumer may leave early: never block forever
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for x in it:
                if not put((x, None)):
                    return
            put((end, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put((end, e))

    t = threading.Thread(target=work, name="score-decode", daemon=True)
    t.start()
    try:
        while True:
            x, err = q.get()
            if x is end:
                if err is not None:
                    raise err
                return
            yield x
    finally:
        stop.set()


class ClipEmbedder:
    """Ray Data actor: loads the model once, embeds batches, returns scores + embeddings.

    Output per sample: ``uid``, ``shard``, ``clip_score`` (raw cosine, float32),
    ``score_error`` ("" when scored), ``image_emb``/``text_emb`` (L2-normalised float32).
    With ``sink`` (the stage's shard job; the split layout) the actor writes those results
    itself (:class:`curation.score.parts.ShardSink`) and outputs only ``shard`` + ``record``
    (JSON commit records of the shards it committed).
    """

    def __init__(self, model: str, pretrained: str | None, device: str, precision: str,
                 pipe: PixelPipeline, threads: int | None = 1, clip: Any = None, sink: Any = None):
        import torch

        from curation.models import load_clip

        if threads:  # None: leave the process's setting alone (in-process use)
            torch.set_num_threads(max(1, threads))
        self.device = device
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.clip = clip if clip is not None else load_clip(model, pretrained, device=device)
        if self.dtype is not torch.float32:
            self.clip.model.to(self.dtype)  # pure bf16, like the baseline loop users write
        self.pipe = pipe
        self.sink = None
        if sink is not None:
            from curation.score.parts import ShardSink

            self.sink = ShardSink(sink, background=device == "cuda")
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
        out = self.embed(batch)
        if self.sink is None:
            return out
        import json

        records = self.sink.add(out)
        return {"shard": np.array([r["shard"] for r in records], dtype=np.int64),
                "record": np.array([json.dumps(r) for r in records], dtype=object)}

    def embed(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Scores and embeddings of one batch (see the class docstring)."""
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
            if "tokens" in batch:
                tokens = torch.from_numpy(np.ascontiguousarray(batch["tokens"][ok]))
            else:  # one batched call; truncates to the context length, EOT kept last as in training
                tokens = self.clip.tokenizer([str(c) for c in batch["caption"][ok]])
            tokens = tokens.to(self.device)
            with torch.inference_mode():
                fi = F.normalize(self.clip.model.encode_image(images).float(), dim=-1)
                ft = F.normalize(self.clip.model.encode_text(tokens).float(), dim=-1)
                s = (fi * ft).sum(-1)
            img_emb[ok], txt_emb[ok], score[ok] = fi.cpu().numpy(), ft.cpu().numpy(), s.cpu().numpy()
        return {"uid": batch["uid"], "shard": batch["shard"], "clip_score": score,
                "score_error": np.array(errors, dtype=object), "image_emb": img_emb, "text_emb": txt_emb}


class ShardScorer:
    """CPU actor (or in-process scorer): whole shards in, each shard's results out.

    Reads a shard sequentially, decodes ``chunk`` samples at a time in a background thread
    one chunk ahead of the model (:func:`prefetch`), and embeds each chunk with a
    :class:`ClipEmbedder`.
    """

    def __init__(self, model: str, pretrained: str | None, device: str, precision: str,
                 pipe: PixelPipeline, threads: int | None, draft: bool, chunk: int, clip: Any = None):
        self.embedder = ClipEmbedder(model, pretrained, device, precision, pipe, threads, clip=clip)
        self.pipe, self.draft, self.chunk = pipe, draft, chunk

    def iter_shard(self, ds: Any, sid: int) -> Iterator[dict[str, np.ndarray]]:
        """Embedder output batches of shard ``sid`` of ``ds``."""
        chunks = iter_shard_chunks(ds, int(sid), self.pipe, "pil", self.draft, self.chunk)
        for b in prefetch(chunks, depth=1):
            yield self.embedder.embed(b)

    def score_shard(self, ds: Any, sid: int) -> dict[str, tuple]:
        """``uid -> (score, error, image vector, text vector)`` for the shard's scored rows."""
        from curation.score.assemble import batch_results

        out: dict[str, tuple] = {}
        for b in self.iter_shard(ds, sid):
            out.update(batch_results(b))
        return out
