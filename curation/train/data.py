"""Decoded, preprocessed training tensors held in memory (the "tensor cache").

Training the tiny CLIP on 2 cores is compute-bound only if images are decoded, resized
and normalised once up front; every step then indexes ready tensors. ``TensorCache`` is
that cache: images ``[N,3,H,W]`` float, tokens ``[N,ctx]`` long, plus uids, captions and
optional class labels / slice names for evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from PIL import Image

from curation.errors import ConfigError
from curation.io.images import open_image


def to_pil(image: Any) -> Image.Image:
    """Bytes / bytearray / PIL image -> RGB PIL image (only images are ever decoded)."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (bytes, bytearray, memoryview)):
        with open_image(bytes(image)) as im:
            return im.convert("RGB")
    raise ConfigError(f"image must be bytes or a PIL image (got {type(image).__name__})")


@dataclass
class TensorCache:
    """Row-aligned training tensors.

    Attributes:
        images: float ``[N,3,H,W]`` after the model's preprocess.
        tokens: long ``[N,context]`` from the model's tokenizer.
        captions: the raw captions (for evaluation prompts and reports).
        uids: one id per row (``str``); defaults to the row number.
        labels: class label per row or None (zero-shot evaluation).
    """

    images: torch.Tensor
    tokens: torch.Tensor
    captions: list[str]
    uids: list[str]
    labels: list[str | None] = field(default_factory=list)
    nbytes: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: Any) -> "TensorCache":
        """Rows at ``index`` (a list/tensor of ints) as a new cache."""
        idx = torch.as_tensor(index, dtype=torch.long)
        il = idx.tolist()
        return TensorCache(self.images[idx], self.tokens[idx], [self.captions[i] for i in il],
                           [self.uids[i] for i in il], [self.labels[i] for i in il] if self.labels else [],
                           [self.nbytes[i] for i in il] if self.nbytes else [])


def pair_rows(pairs: Any) -> Iterable[tuple[Any, str, Any, Any]]:
    """Yield (image, caption, uid, label) from a pyarrow Table, pandas frame or iterable."""
    if hasattr(pairs, "column_names"):  # pyarrow Table
        cols = pairs.column_names
        for name in ("image", "caption"):
            if name not in cols:
                raise ConfigError(f"training table needs an {name!r} column (has {cols})")
        get = lambda c: pairs.column(c).to_pylist() if c in cols else [None] * pairs.num_rows  # noqa: E731
        yield from zip(get("image"), get("caption"), get("uid"), get("class_label"))
        return
    if hasattr(pairs, "to_dict") and hasattr(pairs, "columns"):  # pandas
        import pyarrow as pa

        yield from pair_rows(pa.Table.from_pandas(pairs, preserve_index=False))
        return
    for item in pairs:
        if isinstance(item, dict):
            yield item["image"], item["caption"], item.get("uid"), item.get("class_label")
        else:
            image, caption = item[0], item[1]
            yield image, caption, None, (item[2] if len(item) > 2 else None)


def build_cache(pairs: Any, preprocess: Callable, tokenizer: Callable) -> TensorCache:
    """Decode and preprocess every pair once.

    Args:
        pairs: iterable of ``(image, caption[, label])`` or dicts with ``image``/``caption``
            (optional ``uid``, ``class_label``), or a pyarrow Table with those columns.
        preprocess: the model's image transform (PIL -> tensor).
        tokenizer: the model's tokenizer (list[str] -> LongTensor).
    Raises:
        ConfigError: no pairs, or an item that is not an image.
    """
    imgs, caps, uids, labels, nbytes = [], [], [], [], []
    for i, (image, caption, uid, label) in enumerate(pair_rows(pairs)):
        nbytes.append(len(image) if isinstance(image, (bytes, bytearray, memoryview)) else 0)
        imgs.append(preprocess(to_pil(image)))
        caps.append(str(caption))
        uids.append(str(uid) if uid is not None else str(i))
        labels.append(label)
    if not imgs:
        raise ConfigError("no image-caption pairs to train on")
    tokens = torch.cat([tokenizer(caps[i:i + 1024]) for i in range(0, len(caps), 1024)])
    has_labels = any(lb is not None for lb in labels)
    return TensorCache(torch.stack(imgs), tokens, caps, uids, labels if has_labels else [], nbytes)


def write_pairs_dataset(pairs: Any, root: str, *, samples_per_shard: int = 256, columns: Iterable[str] = (),
                        stage: str = "import", storage_options: dict | None = None) -> Any:
    """Write image-caption pairs as a curated dataset (DESIGN.md section 3), e.g. to stream
    the synthetic ``seed.parquet``/``eval.parquet`` like pipeline output.

    Args:
        pairs: a pyarrow Table or list of dicts with ``image`` (encoded bytes), ``caption``
            and optionally ``uid`` and the extra ``columns`` (copied into the metadata,
            e.g. ``slice``, ``class_label``).
        root: output dataset URL; written with :class:`curation.io.DatasetWriter`.
    Returns:
        the committed :class:`curation.io.Dataset`.
    """
    import hashlib

    from curation.io import DatasetWriter

    rows = pairs.to_pylist() if hasattr(pairs, "to_pylist") else list(pairs)
    columns = list(columns)
    w = DatasetWriter(root, stage=stage, config={"samples": len(rows), "samples_per_shard": samples_per_shard,
                                                 "columns": columns}, storage_options=storage_options)
    shard_ids = []
    for sid, lo in enumerate(range(0, len(rows), samples_per_shard)):
        shard_ids.append(sid)
        if w.is_committed(sid):
            continue
        with w.shard(sid) as sw:
            for i, r in enumerate(rows[lo:lo + samples_per_shard], start=lo):
                data = bytes(r["image"])
                with open_image(data) as im:
                    width, height, ext = im.width, im.height, (im.format or "png").lower()
                ext = {"jpeg": "jpg"}.get(ext, ext)
                sw.add({"uid": str(r.get("uid") or f"{i:08d}"), "url": f"file://pairs/{i}", "caption": r["caption"],
                        "status": "success", "error": None, "width": width, "height": height,
                        "original_width": width, "original_height": height,
                        "sha256": hashlib.sha256(data).hexdigest(), **{c: r.get(c) for c in columns}},
                       image=data, image_ext=ext)
    return w.commit(shard_ids)
