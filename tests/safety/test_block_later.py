"""``curate block``: a list that arrives after the download; reshard then drops those bytes."""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest

from curation.blocklist.lists import BlocklistError, write_list
from curation.blocklist.pdq import pdq_image
from curation.download.config import DownloadConfig
from curation.download.worker import make_resizer, process_image
from curation.io import Dataset, DatasetWriter
from curation.io.writer import VersionWriter
from tests.safety.embeds import fixed
from tests.safety.images import encode, files_containing, near_copies, photo, windows

NAMES = ("astronaut", "coffee", "chelsea", "rocket", "camera", "brick")


def _downloaded(root: str) -> tuple[Dataset, dict[str, bytes]]:
    """Photos (and a near copy of the astronaut) through the download worker, with embeddings."""
    served = {n: encode(photo(n)) for n in NAMES}
    served["astronaut_copy"] = near_copies(photo("astronaut"))["resized"]
    cfg = DownloadConfig(input="x", image_size=128)
    resizer = make_resizer(cfg)
    w = DatasetWriter(root, stage="test", config={})
    for sid, names in enumerate((list(served)[:4], list(served)[4:])):
        with w.shard(sid) as sw:
            for n in names:
                cols, img = process_image(served[n], cfg, resizer)
                sw.add({"uid": n, "url": f"http://example.invalid/{n}.jpg", "caption": n, **cols}, image=img)
    ds = w.commit([0, 1])
    vw = VersionWriter(ds, "score", {})
    rng = np.random.default_rng(0)
    for sid in ds.shard_ids:
        meta = ds.read_meta(sid)
        vecs = [rng.normal(size=8).astype(np.float32) for _ in range(meta.num_rows)]
        vw.write_embeddings(sid, pa.table({"uid": meta.column("uid"), "image_emb": fixed(vecs, 8),
                                           "text_emb": fixed(vecs, 8)}), model="test-model")
        vw.write_meta(sid, meta.append_column("keep", pa.array([True] * meta.num_rows)))
    return vw.commit(), served


def test_block_then_reshard_drops_the_bytes(ray_local, tmp_path):
    from curation.blocklist.stage import block
    from curation.reshard.stage import ReshardStage
    from curation.stage import StageContext

    ds, served = _downloaded(str(tmp_path / "ds"))
    stored = {r["uid"]: ds.read_image(r) for r in ds.read_meta().to_pylist()}
    lst = write_list(str(tmp_path / "later.csv"), [(pdq_image(photo("astronaut"))[0], "pdq"),
                                                    (hashlib.sha256(served["coffee"]).hexdigest(), "sha256"),
                                                    ("0" * 32, "md5")])
    out = block(ds.url, [lst])
    rows = {r["uid"]: r for r in out.read_meta().to_pylist()}
    blocked = {"astronaut", "astronaut_copy", "coffee"}
    for uid, r in rows.items():
        if uid in blocked:
            assert r["status"] == "blocked_hash" and r["blocklist"] == "later" and r["keep"] is False
            assert r["tar_offset"] is None and r["pdq"] is None and r["sha256"] is None
        else:
            assert r["status"] == "success" and r["keep"] is True and r["tar_offset"] is not None
    emb = {r["uid"]: r["image_emb"] for r in out.read_embeddings().to_pylist()}
    assert all((emb[u] is None) == (u in blocked) for u in emb)
    stats = out.manifest["history"][-1]["stats"]
    assert stats["dropped"]["blocked_hash"] == 3 and stats["blocked_by_list"] == {"later": 3}
    assert stats["md5_entries_unchecked"] == 1
    from curation.io.query import query

    assert query(out, "SELECT count(*) AS n FROM samples WHERE status = 'blocked_hash'").column("n")[0].as_py() == 3
    # reshard materialises the new version without those bytes
    cur = ReshardStage({"output": str(tmp_path / "curated")})(out, StageContext())
    assert sorted(r["uid"] for r in cur.read_meta().to_pylist()) == sorted(set(NAMES) - blocked)
    needles = [w for u in blocked for w in windows(stored[u])]
    assert files_containing(str(tmp_path / "curated"), needles) == []
    assert files_containing(str(tmp_path / "ds" / "shards"), needles)  # the old tars still hold them


def test_block_errors_before_writing(tmp_path):
    from curation.blocklist.stage import block

    ds, _ = _downloaded(str(tmp_path / "ds"))
    bad = tmp_path / "bad.csv"
    bad.write_text("hash,kind\nzz,sha256\n")
    with pytest.raises(BlocklistError, match=r"bad.csv:2: not a hex digest"):
        block(ds.url, [str(bad)])
    assert Dataset(ds.url).version == ds.version
