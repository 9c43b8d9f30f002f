"""A small synthetic corpus "downloaded" without HTTP: the served bytes of every image record go
through the download worker's own checks and resizer into a dataset (the real writer), with the
truth's uids; a labels file says which rows carry the watermark."""
from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq

from curation.download.config import DownloadConfig
from curation.download.worker import make_resizer, process_image
from curation.io import Dataset, DatasetWriter


def ingest_corpus(corpus: str, root: str, *, image_size: int = 64, per_shard: int = 250,
                  blocklists: list[str] | None = None) -> Dataset:
    truth = pq.read_table(os.path.join(corpus, "truth.parquet")).to_pylist()
    rows = [t for t in truth if t["path"] and t["expected_status"] == "success"]
    cfg = DownloadConfig(input="corpus", image_size=image_size, resize_mode="center_crop", encode_quality=90,
                         blocklists=blocklists or [])
    resizer = make_resizer(cfg)
    w = DatasetWriter(root, stage="test-ingest", config={"corpus": corpus, "lists": blocklists or []})
    ids = []
    for s in range(0, len(rows), per_shard):
        sid = s // per_shard
        with w.shard(sid) as sw:
            for t in rows[s:s + per_shard]:
                raw = open(os.path.join(corpus, t["path"]), "rb").read()
                cols, img = process_image(raw, cfg, resizer)
                sw.add({"uid": t["uid"], "url": t["url"], "caption": t["alt_text"], **cols}, image=img)
        ids.append(sid)
    return w.commit(ids)


def watermark_labels(corpus: str, path: str) -> str:
    truth = pq.read_table(os.path.join(corpus, "truth.parquet"), columns=["uid", "noise"]).to_pylist()
    pq.write_table(pa.table({"uid": [t["uid"] for t in truth],
                             "label": ["watermark" in (t["noise"] or []) for t in truth]}), path)
    return path
