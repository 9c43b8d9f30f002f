"""Small builders shared by tests: tiny images and datasets written with the real writer."""
from __future__ import annotations

import hashlib
import io

from PIL import Image

from curation.io import Dataset, DatasetWriter


def jpeg_bytes(color=(200, 30, 30), size=(16, 16), quality=90) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def make_dataset(root: str, *, shards: int = 2, per_shard: int = 5, failures_per_shard: int = 1,
                 storage_options: dict | None = None, stage: str = "test") -> Dataset:
    """A dataset of ``shards`` shards, each with ``per_shard`` images and some failed rows."""
    w = DatasetWriter(root, stage=stage, config={"shards": shards, "per_shard": per_shard},
                      storage_options=storage_options)
    for s in range(shards):
        with w.shard(s) as sw:
            for i in range(per_shard):
                data = jpeg_bytes(((s * 37 + i * 11) % 256, (i * 53) % 256, 90))
                sw.add({"uid": f"s{s}-i{i}", "url": f"http://example.invalid/{s}/{i}.jpg",
                        "caption": f"sample {i} of shard {s}", "status": "success",
                        "sha256": hashlib.sha256(data).hexdigest(), "width": 16, "height": 16,
                        "original_width": 16, "original_height": 16}, image=data)
            for j in range(failures_per_shard):
                sw.add({"uid": f"s{s}-f{j}", "url": f"http://example.invalid/{s}/missing{j}.jpg",
                        "caption": "gone", "status": "http_404", "error": "HTTP Error 404"})
    return w.commit(list(range(shards)))
