"""DDP smoke test: 2 gloo processes consume one epoch; every sample once across ranks."""
from __future__ import annotations

import json
import os
import socket
from typing import Any

import pytest
from torch.multiprocessing.spawn import start_processes

from tests.helpers import make_stream_dataset as make_dataset


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, url: str, out: str) -> None:
    import torch
    import torch.distributed as dist

    from curation.stream import StreamingDataLoader, StreamingDataset

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        sd = StreamingDataset(url, batch_size=4, seed=11)  # rank/world_size from torch.distributed
        batches = [b["uid"] for b in StreamingDataLoader(sd, num_workers=0)]
        counts: list[Any] = [None] * world
        dist.all_gather_object(counts, len(batches))
        everything: list[Any] = [None] * world
        dist.all_gather_object(everything, [u for b in batches for u in b])
        dist.barrier()
        if rank == 0:
            with open(out, "w") as f:
                json.dump({"counts": counts, "uids": everything}, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_ranks_one_epoch_exactly_once(tmp_path):
    ds = make_dataset(str(tmp_path / "ds"), [13, 8, 17], failed_every=7)
    out = str(tmp_path / "result.json")
    # fork: the children inherit the imported torch (spawn re-imports it: slow on 2 cores)
    start_processes(_worker, args=(2, _free_port(), ds.url, out), nprocs=2, join=True, start_method="fork")
    result = json.load(open(out))
    images = [r["uid"] for r in ds.read_meta().to_pylist() if r["tar_offset"] is not None]
    assert result["counts"][0] == result["counts"][1] == len(images) // 8
    flat = [u for rank in result["uids"] for u in rank]
    assert len(flat) == len(set(flat)) == len(images) - len(images) % 8
    assert set(result["uids"][0]).isdisjoint(result["uids"][1])
