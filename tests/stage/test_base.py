"""Stage contract v2: the ShardStage base class owns pending shards, dispatch, per-shard
commits by the workers themselves, commit records, stats, progress and the final commit."""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pytest

from curation.config import StageConfig, execution
from curation.errors import DatasetError
from curation.io import Dataset
from curation.io.fs import join
from curation.stage import Shard, ShardResult, ShardStage, StageContext, StageStats, record_path
from tests.helpers import make_dataset


class LenConfig(StageConfig):
    suffix: str = ""
    fail_on_shard: int | None = execution(None)   # how to run (here: crash), not what to compute
    executor: str = execution("ray")


class LenStage(ShardStage):
    """``caption_len`` per row; failed downloads count as dropped ``no_image``."""

    name = "caption_len"
    Config = LenConfig
    config: LenConfig

    def plan(self, ds, ctx):
        return {"suffix": self.config.suffix}

    def process_shard(self, state, shard: Shard, plan) -> ShardResult:
        if shard.id == self.config.fail_on_shard:
            raise RuntimeError(f"boom on shard {shard.id}")
        caps = shard.meta.column("caption").to_pylist()
        status = shard.meta.column("status").to_pylist()
        failed = sum(s != "success" for s in status)
        return ShardResult(columns={"caption_len": [len((c or "") + plan["suffix"]) for c in caps],
                                    "worker_pid": [os.getpid()] * len(caps)},
                           stats={"samples_out": len(caps) - failed, "dropped": {"no_image": failed},
                                  "chars": {"total": sum(len(c or "") for c in caps)}})


def _st(ctx: StageContext) -> StageStats:
    assert ctx.stats is not None  # Stage.__call__ always fills it
    return ctx.stats


def _progress_log():
    calls: list[tuple[int, int, int]] = []
    return calls, (lambda done, total, samples: calls.append((done, total, samples)))


def test_workers_commit_their_shards_and_send_back_small_records(tmp_path, ray_local):
    ds = make_dataset(str(tmp_path / "ds"), shards=3, per_shard=4)
    calls, progress = _progress_log()
    ctx = StageContext(progress=progress)
    out = LenStage({"suffix": "!"})(ds, ctx)
    assert out.version == 2 and out.history[-1]["stage"] == "caption_len"
    rows = out.read_meta().to_pylist()
    assert [r["uid"] for r in rows] == ds.read_meta().column("uid").to_pylist()
    assert all(r["caption_len"] == len(r["caption"]) + 1 for r in rows)
    assert os.getpid() not in {r["worker_pid"] for r in rows}          # computed and written by Ray tasks
    # one small commit record per shard, persisted beside the shard's metadata
    for sid in ds.shard_ids:
        rec = json.loads(open(join(out.root, record_path(out.version, sid))).read())
        assert rec["shard"] == sid and rec["rows"] == 5 and rec["stats"]["dropped"] == {"no_image": 1}
    st = _st(ctx).to_dict()
    assert (st["samples_in"], st["samples_out"], st["shards"]) == (15, 12, 3)
    assert st["dropped"] == {"no_image": 3} and st["chars"]["total"] == sum(len(r["caption"]) for r in rows)
    assert st["executor"] == "ray" and out.history[-1]["stats"]["samples_out"] == 12
    assert sorted(c[0] for c in calls) == [1, 2, 3] and {c[1] for c in calls} == {3}
    assert sum(c[2] for c in calls) == 15


def test_resume_skips_committed_shards_and_keeps_their_stats(tmp_path):
    ds = make_dataset(str(tmp_path / "ds"), shards=3, per_shard=2)
    with pytest.raises(RuntimeError, match="boom on shard 2"):
        LenStage({"fail_on_shard": 2, "executor": "local"})(ds, StageContext())
    vdir = tmp_path / "ds" / "meta" / "v2"
    committed = {p.name: p.stat().st_mtime_ns for p in vdir.glob("*.parquet")}
    assert sorted(committed) == ["000000.parquet", "000001.parquet"]
    assert Dataset(ds.url).version == 1                      # nothing visible until the final commit
    # changing only an execution setting resumes the same version; committed shards are not redone
    calls, progress = _progress_log()
    ctx = StageContext(progress=progress)
    out = LenStage({"executor": "local"})(ds, ctx)
    assert out.version == 2
    assert {n: (vdir / n).stat().st_mtime_ns for n in committed} == committed
    assert calls[0] == (2, 3, 6) and calls[-1] == (3, 3, 3)   # resumed shards reported at once, then the rest
    st = _st(ctx).to_dict()
    assert (st["samples_in"], st["samples_out"], st["resumed_shards"]) == (9, 6, 2)  # stats of all 3 shards
    assert st["dropped"] == {"no_image": 3} and st["executor"] == "local"
    # a semantic change is a different version, never a rewrite of the committed one
    other = LenStage({"suffix": "?", "executor": "local"})(out, StageContext())
    assert other.version == 3 and other.read_meta(0).column("caption_len")[0].as_py() == len("sample 0 of shard 0?")


class SetupStage(ShardStage):
    """Overrides setup: an actor pool, state built once per actor."""

    name = "with_setup"
    Config = LenConfig

    def plan(self, ds, ctx):
        return {"base": 10}

    def setup(self, plan):
        return {"pid": os.getpid(), "value": plan["base"] * 2}

    def process_shard(self, state, shard, plan):
        n = shard.meta.num_rows
        assert state["pid"] == os.getpid()               # the state was built in this very process
        return ShardResult(columns={"setup_value": [state["value"]] * n, "setup_pid": [state["pid"]] * n})


def test_setup_runs_once_per_actor(tmp_path, ray_local):
    ds = make_dataset(str(tmp_path / "ds"), shards=4, per_shard=2, failures_per_shard=0)
    ctx = StageContext()
    out = SetupStage()(ds, ctx)
    t = out.read_meta()
    assert set(t.column("setup_value").to_pylist()) == {20}
    pids = set(t.column("setup_pid").to_pylist())
    assert os.getpid() not in pids and len(pids) <= 2      # a pool of (at most) 2 actors on 2 CPUs
    assert _st(ctx).extra["executor"] == "ray_actors"


class EmbStage(ShardStage):
    name = "emb"
    Config = LenConfig

    def process_shard(self, state, shard, plan):
        n = shard.meta.num_rows
        vec = pa.FixedSizeListArray.from_arrays(pa.array(np.full(n * 4, shard.id, dtype=np.float32)), 4)
        emb = pa.table({"uid": shard.meta.column("uid"), "image_emb": vec, "text_emb": vec})
        return ShardResult(columns={"has_emb": [True] * n}, embeddings=emb, embedding_model="toy/4")


class ReadEmbStage(ShardStage):
    name = "read_emb"
    Config = LenConfig

    def process_shard(self, state, shard, plan):
        emb = shard.embeddings()
        assert emb is not None
        return ShardResult(columns={"emb0": [v[0] for v in emb.column("image_emb").to_pylist()]})


def test_embeddings_are_written_by_workers_and_read_lazily(tmp_path):
    ds = make_dataset(str(tmp_path / "ds"), shards=2, per_shard=2)
    out = EmbStage({"executor": "local"})(ds, StageContext())
    assert out.embeddings == {"version": 2, "dim": 4, "model": "toy/4"}
    assert out.read_embeddings(1).column("image_emb").to_pylist()[0] == [1.0] * 4
    again = ReadEmbStage({"executor": "local"})(out, StageContext())
    assert again.read_meta().column("emb0").to_pylist() == [0.0] * 3 + [1.0] * 3
    assert (again.embeddings or {}).get("version") == 2                  # embeddings of an ancestor version stay valid


class BadStage(ShardStage):
    name = "bad"
    Config = LenConfig

    def process_shard(self, state, shard, plan):
        return ShardResult(columns={"x": [1]})


def test_wrong_number_of_values_names_the_column(tmp_path):
    ds = make_dataset(str(tmp_path / "ds"), shards=1, per_shard=3)
    with pytest.raises(DatasetError, match="column 'x' has 1 values for 4 rows"):
        BadStage({"executor": "local"})(ds, StageContext())


def test_auto_executor_runs_small_work_in_process(tmp_path):
    ds = make_dataset(str(tmp_path / "ds"), shards=2, per_shard=2)

    class Small(LenStage):
        local_max_samples = 100

    stage = Small({"executor": "auto"})
    assert stage.choose_executor(ds, [0]) == "local"          # one shard: no Ray at all
    assert stage.choose_executor(ds, [0, 1]) == "local"       # 6 samples <= local_max_samples
    Small.local_max_samples = 5
    stage.ctx = StageContext(executor="ray")
    assert stage.choose_executor(ds, [0, 1]) == "ray"          # the context's setting wins over auto
    assert Small({"executor": "local"}).choose_executor(ds, [0, 1]) == "local"


def test_stage_map_runs_in_process_or_on_ray(ray_local):
    stage = LenStage({"executor": "ray"})
    seen: list[int] = []
    out = stage.map(_square_pid, [1, 2, 3], on_done=lambda i, r: seen.append(i))
    assert [o[0] for o in out] == [1, 4, 9] and os.getpid() not in {o[1] for o in out}   # Ray tasks
    assert sorted(seen) == [0, 1, 2]
    assert stage.map(_square_pid, [1, 2], local=True) == [(1, os.getpid()), (4, os.getpid())]
    assert LenStage({"executor": "local"}).map(_square_pid, [3]) == [(9, os.getpid())]
    # one item runs in this process, unless its work is over the whole dataset
    assert stage.map(_square_pid, [2]) == [(4, os.getpid())]
    (sq, pid), = stage.map(_square_pid, [2], whole_dataset=True)
    assert sq == 4 and pid != os.getpid()
    assert LenStage({"executor": "local"}).map(_square_pid, [3], whole_dataset=True) == [(9, os.getpid())]


def _square_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def test_stats_sum_nested_counters_and_keep_labels():
    st = StageStats("s")
    st.add({"dropped": {"a": 1}, "kinds": {"x": 1}, "model": "m1"}, rows=3)
    st.add({"samples_out": 1, "dropped": {"a": 2, "b": 1}, "kinds": {"x": 2, "y": 1}, "model": "m1"}, rows=2)
    d = st.to_dict()
    assert (d["samples_in"], d["samples_out"], d["shards"]) == (5, 4, 2)
    assert d["dropped"] == {"a": 3, "b": 1} and d["kinds"] == {"x": 3, "y": 1} and d["model"] == "m1"


def test_resume_on_an_object_store(s3_server):
    """Commit records and per-shard commits work on S3 too (batched record reads on resume)."""
    url = s3_server.url("stage-resume/ds")
    opts = s3_server.storage_options
    ds = make_dataset(url, shards=3, per_shard=2, storage_options=opts)
    with pytest.raises(RuntimeError, match="boom on shard 1"):
        LenStage({"fail_on_shard": 1, "executor": "local"})(ds, StageContext())
    ctx = StageContext()
    out = LenStage({"executor": "local"})(Dataset(url, opts), ctx)
    st = _st(ctx).to_dict()
    assert (st["samples_in"], st["samples_out"], st["resumed_shards"]) == (9, 6, 1)
    captions = ds.read_meta().column("caption").to_pylist()
    assert out.read_meta().column("caption_len").to_pylist() == [len(c) for c in captions]
