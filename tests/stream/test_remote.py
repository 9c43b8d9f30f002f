"""Streaming from S3 (a real SeaweedFS on loopback): exactly once, bounded cache, range reads."""
from __future__ import annotations

import os
import uuid
from collections import Counter

import pytest

from curation.io import Dataset
from curation.stream import ShardCache, StreamingDataLoader, StreamingDataset
from tests.helpers import make_stream_dataset as make_dataset


def test_cache_is_lru_and_bounded(tmp_path):
    cache = ShardCache(str(tmp_path / "c"), limit_bytes=250)

    def writer(n):
        return lambda path: open(path, "wb").write(b"x" * n)

    a = cache.fetch("s3://b/a.tar", 100, writer(100))
    cache.fetch("s3://b/b.tar", 100, writer(100))
    assert cache.get("s3://b/a.tar", 100) == a  # a is now the most recently used
    cache.fetch("s3://b/c.tar", 100, writer(100))  # evicts b, not a
    assert cache.get("s3://b/b.tar", 100) is None and cache.get("s3://b/a.tar", 100) == a
    assert cache.used_bytes() <= 250 and cache.stats["peak_bytes"] <= 250
    assert cache.fetch("s3://b/huge.tar", 300, writer(300)) is None  # cannot fit: caller reads ranges
    with pytest.raises(OSError, match="manifest says"):
        cache.fetch("s3://b/short.tar", 100, writer(50))
    assert not [f for f in os.listdir(cache.directory) if f.endswith(".part")]



def test_a_rewritten_tar_is_a_new_entry_not_a_stale_hit(tmp_path):
    """After ``--retry-failed`` a tar can change size (or ETag) under the same URL: the cache
    must download the new bytes instead of serving the old file (whose offsets lack new rows)."""
    cache = ShardCache(str(tmp_path / "c"), limit_bytes=1000)
    old = cache.fetch("s3://b/a.tar", 100, lambda p: open(p, "wb").write(b"o" * 100))
    new = cache.fetch("s3://b/a.tar", 150, lambda p: open(p, "wb").write(b"n" * 150))
    assert new != old and open(new, "rb").read() == b"n" * 150 and cache.stats["downloads"] == 2
    tagged = cache.fetch("s3://b/a.tar", 150, lambda p: open(p, "wb").write(b"e" * 150), etag='"v2"')
    assert open(tagged, "rb").read() == b"e" * 150
    assert cache.get("s3://b/a.tar", 150, '"v2"') == tagged and cache.get("s3://b/a.tar", 150) == new


def _die_while_downloading(directory):  # runs in a child process
    cache = ShardCache(directory, limit_bytes=1000)

    def download(path):
        open(path, "wb").write(b"x" * 10)
        os.kill(os.getpid(), 9)

    cache.fetch("s3://b/dead.tar", 900, download)


def test_reservation_of_a_killed_worker_is_reaped(tmp_path):
    import multiprocessing
    import threading

    directory = str(tmp_path / "c")
    child = multiprocessing.get_context("spawn").Process(target=_die_while_downloading, args=(directory,))
    child.start()
    child.join(60)
    assert child.exitcode == -9
    assert [f for f in os.listdir(directory) if f.endswith(".part")]  # its 900 bytes are reserved
    cache = ShardCache(directory, limit_bytes=1000)
    got = cache.fetch("s3://b/next.tar", 500, lambda p: open(p, "wb").write(b"y" * 500))
    assert got is not None and cache.stats["reaped"] == 1
    assert not [f for f in os.listdir(directory) if f.endswith(".part")]

    # a live download's reservation is never reaped: its bytes stay counted
    started, release = threading.Event(), threading.Event()

    def slow(path):
        started.set()
        release.wait(30)
        open(path, "wb").write(b"z" * 400)

    t = threading.Thread(target=cache.fetch, args=("s3://b/slow.tar", 400, slow))
    t.start()
    assert started.wait(30)
    assert cache.used_bytes() == 900 and cache.stats["reaped"] == 1
    release.set()
    t.join(30)
    assert cache.get("s3://b/slow.tar", 400) and cache.used_bytes() == 900


def test_cached_file_is_opened_before_any_eviction(tmp_path):
    """A reader opening a cached shard cannot lose it to a concurrent eviction: ``open_with``
    runs under the cache lock, and what it opened stays readable after the file is evicted.
    (Opening the returned path after ``fetch`` raced with eviction under read-ahead.)"""
    import mmap
    import threading
    import time

    cache = ShardCache(str(tmp_path / "c"), limit_bytes=150)

    def writer(n, byte):
        return lambda path: open(path, "wb").write(byte * n)

    cache.fetch("s3://b/a.tar", 100, writer(100, b"a"))
    other = threading.Thread(target=cache.fetch, args=("s3://b/b.tar", 100, writer(100, b"b")))

    def open_while_another_fetch_needs_the_room(path):
        other.start()            # needs a's bytes: must wait for the lock we hold
        time.sleep(0.3)
        assert os.path.exists(path)
        with open(path, "rb") as f:
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)

    mm = cache.fetch("s3://b/a.tar", 100, writer(100, b"a"), open_with=open_while_another_fetch_needs_the_room)
    other.join(10)
    assert cache.get("s3://b/a.tar", 100) is None and cache.get("s3://b/b.tar", 100)  # a was evicted after
    assert mm[:] == b"a" * 100   # and the reader still has its bytes

@pytest.mark.slow
def test_s3_stream_exactly_once_with_bounded_cache(s3_server, tmp_path):
    url = s3_server.url(f"stream/{uuid.uuid4().hex[:8]}")
    opts = s3_server.storage_options
    make_dataset(url, [10, 10, 10, 10, 10], failed_every=6, storage_options=opts)
    ds = Dataset(url, storage_options=opts)
    shard = max(s["tar_bytes"] for s in ds.shards)
    limit = int(2.5 * shard)
    cache_dir = str(tmp_path / "cache")

    sd = StreamingDataset(ds, batch_size=3, seed=5, cache_dir=cache_dir, cache_limit_bytes=limit,
                          shuffle_block_size=12)
    got = [s["uid"] for s in sd]
    expected = {r["uid"] for r in ds.read_meta().to_pylist() if r["tar_offset"] is not None}
    assert len(got) == len(set(got)) == len(expected) - len(expected) % 3 and set(got) <= expected
    cache = sd.fetcher().readers[0].cache
    assert cache is not None
    stats = cache.stats
    assert stats["downloads"] >= 5 and stats["evictions"] >= 1 and stats["peak_bytes"] <= limit
    assert sum(os.path.getsize(os.path.join(cache_dir, f)) for f in os.listdir(cache_dir)) <= limit

    # two real workers sharing the cache directory, and a mid-epoch resume
    sd2 = StreamingDataset(ds, batch_size=3, seed=5, cache_dir=cache_dir, cache_limit_bytes=limit)
    loader = StreamingDataLoader(sd2, num_workers=2)
    head = []
    for i, b in enumerate(loader):
        head += b["uid"]
        if i == 4:
            break
    sd3 = StreamingDataset(ds, batch_size=3, seed=5, cache_dir=cache_dir, cache_limit_bytes=limit)
    sd3.load_state_dict(loader.state_dict())
    tail = [s["uid"] for s in sd3]
    assert Counter(head + tail).most_common(1)[0][1] == 1 and len(head + tail) == len(got)
    assert sum(os.path.getsize(os.path.join(cache_dir, f)) for f in os.listdir(cache_dir)) <= limit


@pytest.mark.slow
def test_s3_small_subset_reads_ranges_not_shards(s3_server, tmp_path):
    url = s3_server.url(f"stream/{uuid.uuid4().hex[:8]}")
    make_dataset(url, [30, 30], storage_options=s3_server.storage_options)
    sd = StreamingDataset(url, storage_options=s3_server.storage_options, where="clip_score = 0.0",
                          batch_size=1, cache_dir=str(tmp_path / "c"))
    got = sorted(s["uid"] for s in sd)
    assert got == [f"u{i:05d}" for i in range(0, 60, 10)]
    reader = sd.fetcher().readers[0]
    assert reader.stats["whole_shards"] == 0 and reader.stats["range_requests"] >= 1
    assert reader.stats["range_bytes"] < sum(s["tar_bytes"] for s in sd.sources[0].dataset.shards) / 4
