"""Against the synthetic corpus server: statuses equal the ground truth's expected ones."""
from __future__ import annotations

from collections import Counter

import pyarrow.parquet as pq
import pytest

from curation.download.stage import download


@pytest.mark.slow
def test_synth_corpus_statuses_match_truth(ray_local, tmp_path):
    from curation.synth import SynthServer, generate, write_url_list

    corpus = tmp_path / "corpus"
    generate(corpus, samples=160, seed=3)
    # stalls (10 s) outlast the deadline (4 s) by far; the socket timeout leaves a loaded 2-core
    # box room to answer the 500s and images in time (1 s once turned a 500 into a timeout there)
    with SynthServer(corpus, stall_seconds=10) as srv:
        urls = write_url_list(corpus, srv.base_url, str(tmp_path / "urls.parquet"))
        ds = download(urls, str(tmp_path / "ds"), image_size=32, thread_count=8, retries=2, timeout=2.5,
                      request_deadline=4.0, max_bytes=2_000_000, samples_per_shard=1000,
                      allow_private_networks=["127.0.0.1/32"])
        assert srv.robots_fetches == 1                      # once per host per task (one shard here)
    truth = {r["uid"]: r for r in pq.read_table(corpus / "truth.parquet").to_pylist()}
    rows = ds.read_meta().to_pylist()
    assert sorted(r["uid"] for r in rows) == sorted(truth)   # input uids kept, one row each
    wrong = [(r["uid"], truth[r["uid"]]["expected_status"], r["status"], r["error"]) for r in rows
             if r["status"] != truth[r["uid"]]["expected_status"]]
    assert not wrong, wrong[:5]
    got = Counter(r["status"] for r in rows)
    assert got["success"] == sum(1 for t in truth.values() if t["expected_status"] == "success")
    assert sum(s["num_images"] for s in ds.shards) == got["success"]
