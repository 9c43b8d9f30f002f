"""Property tests of the stream guarantees (DESIGN.md 5.4) over real tiny datasets.

DataLoader workers are simulated by running each (rank, worker) share directly with
``iter_batches(worker, num_workers)`` (the code path a real worker runs) and merging the
workers' batches by step, as torch's DataLoader does.
"""
from __future__ import annotations

import tempfile
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation.stream import StreamingDataset, identity
from tests.helpers import make_stream_dataset as make_dataset

WHERES = [None, "slice = 's1'", "clip_score >= 0.3 AND slice <> 's2'"]


def open_stream(ds, rank, world, **kw):
    return StreamingDataset(ds, rank=rank, world_size=world, transform=identity, read_ahead=1, **kw)


def run_ranks(streams, num_workers, stop=None):
    """Deliver each rank's batches (workers merged by step); stop after ``stop`` steps."""
    out = []
    for sd in streams:
        by_step = {}
        for w in range(max(1, num_workers)):
            for step, samples in sd.iter_batches(w, max(1, num_workers)):
                assert step not in by_step
                by_step[step] = [s["uid"] for s in samples]
        steps = sorted(by_step)
        assert steps == list(range(len(steps)))
        out.append([by_step[s] for s in steps[:stop]])
    return out


def selected_uids(ds, where):
    sql = "tar_offset IS NOT NULL" + (f" AND ({where})" if where else "")
    import duckdb

    con = duckdb.connect()
    con.register("samples", ds.read_meta())
    return {r[0] for r in con.sql(f"SELECT uid FROM samples WHERE {sql}").fetchall()}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(0, 9), min_size=1, max_size=4).filter(lambda s: sum(s) > 0),
       failed_every=st.sampled_from([0, 4]),
       where=st.sampled_from(WHERES), world=st.integers(1, 5), workers=st.integers(0, 3),
       world2=st.integers(1, 5), workers2=st.integers(0, 3), bs=st.integers(1, 4), bs2=st.integers(1, 4),
       drop_last=st.booleans(), stop_frac=st.floats(0, 1), seed=st.integers(0, 2**16), epoch=st.integers(0, 3),
       block=st.sampled_from([3, 8192]))
def test_exactly_once_equal_batches_and_elastic_resume(sizes, failed_every, where, world, workers, world2,
                                                       workers2, bs, bs2, drop_last, stop_frac, seed, epoch, block):
    with tempfile.TemporaryDirectory() as tmp:
        ds = make_dataset(f"{tmp}/ds", sizes, failed_every=failed_every)
        selected = selected_uids(ds, where)
        kw = dict(where=where, seed=seed, batch_size=bs, drop_last=drop_last, shuffle_block_size=block)
        ranks = [open_stream(ds, r, world, **kw) for r in ranks_of(world)]
        for sd in ranks:
            sd.set_epoch(epoch)

        # a whole epoch: exactly once, equal batch counts, counted remainder
        full = run_ranks(ranks, workers)
        assert len({len(b) for b in full}) == 1
        got = Counter(u for rank in full for batch in rank for u in batch)
        assert max(got.values(), default=1) == 1 and set(got) <= selected
        modulus = world * bs if drop_last else world
        assert len(selected) - len(got) == len(selected) % modulus

        # same seed => same order (a fresh stream); order independent of the worker count
        again = open_stream(ds, 0, world, **kw)
        again.set_epoch(epoch)
        assert run_ranks([again], (workers + 1) % 4)[0] == full[0]

        # stop after k steps on every rank, resume from rank 0's state on another world size
        k = int(stop_frac * len(full[0]))
        state = ranks[0].state_dict(steps=k)
        before = Counter(u for rank in full for batch in rank[:k] for u in batch)
        resumed = [open_stream(ds, r, world2, **dict(kw, batch_size=bs2)) for r in ranks_of(world2)]
        for sd in resumed:
            sd.load_state_dict(state)
        after = run_ranks(resumed, workers2)
        assert len({len(b) for b in after}) == 1
        rest = Counter(u for rank in after for batch in rank for u in batch)
        assert max(rest.values(), default=1) == 1 and set(rest) <= selected
        modulus2 = world2 * bs2 if drop_last else world2
        if k == len(full[0]):  # stopped at the end: the state starts the next epoch
            assert state["epoch"] == epoch + 1 and len(selected) - len(rest) == len(selected) % modulus2
        else:
            # every sample not yet consumed is delivered, but for the new configuration's remainder
            assert state["epoch"] == epoch and not (set(before) & set(rest))
            assert len(selected) - len(before) - len(rest) == (len(selected) - len(before)) % modulus2


def ranks_of(world):
    return range(world)
