"""StreamingDataLoader with real worker processes, resume, corrupt members, bad input, mixing."""
from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from curation.errors import ConfigError
from curation.stream import StreamingDataLoader, StreamingDataset
from tests.helpers import make_stream_dataset as make_dataset


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    return make_dataset(str(root / "ds"), [9, 0, 14, 6, 11], failed_every=5, corrupt={"u00007", "u00030"})


def uids(batches):
    return [u for b in batches for u in b["uid"]]


def test_two_workers_deliver_each_sample_once_and_resume_elsewhere(ds):
    sd = StreamingDataset(ds, batch_size=4, seed=7, columns=["slice", "clip_score"])
    loader = StreamingDataLoader(sd, num_workers=2)
    first = []
    for i, b in enumerate(loader):
        assert b["image"].dtype == torch.uint8 and b["image"].shape[1:] == (3, 8, 8)
        assert len(b["caption"]) == len(b["uid"]) == len(b["slice"])
        first.append(b)
        if i == 2:
            break
    state = json.loads(json.dumps(loader.state_dict()))  # plain JSON, as checkpoints store it
    assert state["epoch"] == 0

    # the same epoch, uninterrupted, from a fresh loader: the reference order
    ref_sd = StreamingDataset(ds, batch_size=4, seed=7)
    ref = uids(StreamingDataLoader(ref_sd, num_workers=0))
    assert uids(first) == ref[: len(uids(first))]
    assert ref_sd.epoch == 1  # a full pass advances the epoch

    # resume with another worker count: the next sample is the one that would have come
    sd2 = StreamingDataset(ds, batch_size=4, seed=7)
    loader2 = StreamingDataLoader(sd2, num_workers=1)
    loader2.load_state_dict(state)
    rest = uids(loader2)
    assert uids(first) + rest == ref
    assert Counter(ref).most_common(1)[0][1] == 1
    # 40 images, 2 corrupt members skipped and counted (never a silent stop)
    assert loader.counters.get("corrupt_not_an_image", 0) + loader2.counters.get("corrupt_not_an_image", 0) == 2
    assert {"u00007", "u00030"}.isdisjoint(ref)


def test_subset_transform_and_columns(ds):
    sd = StreamingDataset(ds, where="slice = 's2' AND clip_score >= 0.5", batch_size=2, drop_last=False,
                          columns=["clip_score"], transform=lambda img: torch.tensor(img.size))
    got = list(sd)
    meta = [r for r in ds.read_meta().to_pylist()
            if r["slice"] == "s2" and r["clip_score"] >= 0.5 and r["tar_offset"] is not None
            and r["uid"] not in {"u00007", "u00030"}]
    assert sorted(s["uid"] for s in got) == sorted(r["uid"] for r in meta)
    assert all(s["clip_score"] >= 0.5 and s["image"].tolist() == [8, 8] for s in got)


def test_bad_input_is_one_clear_error(ds):
    with pytest.raises(ConfigError, match="no_such_column"):
        StreamingDataset(ds, where="no_such_column > 1")
    with pytest.raises(ConfigError, match="stream columns"):
        StreamingDataset(ds, columns=["nope"])
    with pytest.raises(ConfigError, match="rank"):
        StreamingDataset(ds, rank=3, world_size=2).resolve_dist()
    sd = StreamingDataset(ds, seed=1)
    with pytest.raises(ConfigError, match="seed"):
        sd.load_state_dict({**sd.state_dict(), "seed": 2})
    with pytest.raises(ConfigError, match="batch_size"):
        StreamingDataLoader(sd, batch_size=3)


def test_weighted_mix_is_deterministic_and_proportional(ds, tmp_path):
    other = make_dataset(str(tmp_path / "b"), [10, 10], prefix="b")
    a_only = StreamingDataset(ds, where="slice = 's2'")  # no corrupt members
    mixed = StreamingDataset.mix([a_only, other], weights=[1, 1], batch_size=2, seed=3, epoch_size=30)
    got = [(s["source"], s["uid"]) for s in mixed]
    assert len(got) == 30 and Counter(src for src, _ in got) == {0: 15, 1: 15}
    assert all(u.startswith("b") == (src == 1) for src, u in got)
    again = StreamingDataset.mix([a_only, other], weights=[1, 1], batch_size=2, seed=3, epoch_size=30)
    assert [(s["source"], s["uid"]) for s in again] == got


def test_config_builds_a_loader_and_names_bad_keys(ds):
    from curation.stream import open_stream

    sd, loader = open_stream(ds.url, {"batch_size": 5, "where": "slice = 's2'", "seed": 2})
    got = uids(loader)
    assert len(got) == len(set(got)) == len(sd.epoch_items(0)) - len(sd.epoch_items(0)) % 5
    with pytest.raises(ConfigError, match="stream.batch_sise"):
        open_stream(ds.url, {"batch_sise": 5})
    with pytest.raises(ConfigError, match="stream.batch_size"):
        open_stream(ds.url, {"batch_size": 0})


def test_undecoded_mode_hands_out_the_stored_bytes(ds):
    sd = StreamingDataset(ds, batch_size=1, decode=False, where="slice = 's2'")
    rows = {r["uid"]: r for r in ds.read_meta().to_pylist()}
    for s in sd:
        assert s["image"].dtype == torch.uint8 and s["image"].dim() == 1
        assert bytes(s["image"].numpy()) == ds.read_image(rows[s["uid"]])


def test_index_reads_only_the_columns_it_needs(ds, monkeypatch):
    """A rank's index loads positions and the predicate's columns, not the whole metadata
    table (at 1B rows every extra column is gigabytes per rank); the carried columns are
    read per batch, at read time."""
    from curation.io import Dataset

    read: list = []
    real = Dataset._read_parquet

    def spy(self, path, columns):
        read.append(columns)
        return real(self, path, columns)

    monkeypatch.setattr(Dataset, "_read_parquet", spy)
    sd = StreamingDataset(ds, where="clip_score >= 0.3 AND \"SLICE\" <> 's2'", columns=["width"], batch_size=2,
                          shuffle=False)
    assert len(sd.sources[0]) > 0 and read
    assert all(set(c) == {"shard", "tar_offset", "tar_size", "clip_score", "slice"} for c in read)
    read.clear()
    first = next(iter(sd))
    assert first["width"] is not None and read and all(set(c) == {"uid", "caption", "width"} for c in read)
    read.clear()
    StreamingDataset(ds, where="COLUMNS('clip.*') >= 0.3")  # a column pattern: every column is read
    assert read and all(c is None for c in read)


def test_index_is_compact_and_independent_of_query_grouping(ds, monkeypatch):
    """The index holds 20 bytes per selected sample (shard, offset, size, metadata row) and no
    per-sample objects; evaluating the predicate over one-shard groups gives the same index,
    the same order and the same samples as one query over all shards; a predicate with a
    subquery still sees the whole table."""
    import numpy as np

    from curation.stream import index as index_mod

    where = "clip_score >= 0.2"
    whole = StreamingDataset(ds, where=where, batch_size=3, seed=5, columns=["clip_score"])
    monkeypatch.setattr(index_mod, "ROWS_PER_QUERY", 1)  # every shard its own query
    split = StreamingDataset(ds, where=where, batch_size=3, seed=5, columns=["clip_score"])
    a, b = whole.sources[0], split.sources[0]
    assert len(a) > 10 and a.nbytes == 20 * len(a)
    assert all(isinstance(v, np.ndarray) for v in (a.shard, a.offset, a.size, a.row))
    for name in ("shard", "offset", "size", "row"):
        assert getattr(a, name).tolist() == getattr(b, name).tolist()
    assert [(s["uid"], s["caption"], s["clip_score"]) for s in whole] == \
        [(s["uid"], s["caption"], s["clip_score"]) for s in split]
    meta = ds.read_meta(columns=["uid", "clip_score", "tar_offset"]).to_pylist()
    want = sorted(r["uid"] for r in meta if r["tar_offset"] is not None and r["clip_score"] is not None
                  and r["clip_score"] >= 0.2)
    assert sorted(b.table.column("uid").to_pylist()) == want
    sub = StreamingDataset(ds, where="clip_score > (SELECT avg(clip_score) FROM samples)", batch_size=1)
    scores = [r["clip_score"] for r in meta if r["clip_score"] is not None]
    mean = sum(scores) / len(scores)
    assert sorted(sub.sources[0].table.column("uid").to_pylist()) == sorted(
        r["uid"] for r in meta if r["tar_offset"] is not None and r["clip_score"] is not None
        and r["clip_score"] > mean)
