"""curation.cluster: retrying maps with a last-resort timeout that names the stuck item."""
from __future__ import annotations

import time

import pytest

from curation.cluster import ClusterTimeout, map_actors, map_tasks


def _maybe_hang(x: int) -> int:
    if x == 2:
        time.sleep(600)   # a hung worker: the timeout, not this sleep, ends the test
    return x * 10


def test_map_tasks_results_in_order_with_shared_kwargs(ray_local):
    seen = []
    assert map_tasks(_add, [3, 1, 2], on_done=lambda i, r: seen.append(i), k=100) == [103, 101, 102]
    assert sorted(seen) == [0, 1, 2]


def _add(x: int, k: int) -> int:
    return x + k


def test_a_hung_task_fails_the_map_naming_its_item(ray_local):
    # 1 and 3 finish (progress), then nothing does: the error names the hung item, not a queued one
    with pytest.raises(ClusterTimeout, match=r"task for item shard 2 made no progress within the last-resort "
                                             r"timeout of 5 s"):
        map_tasks(_maybe_hang, [1, 2, 3], timeout=5, describe=lambda x: f"shard {x}")


class _Doubler:
    def __init__(self) -> None:
        self.calls = 0

    def run(self, x: int, offset: int = 0) -> tuple[int, int]:
        self.calls += 1
        if x == 99:
            time.sleep(600)
        return x * 2 + offset, self.calls


def test_map_actors_reuses_actor_state_and_times_out(ray_local):
    out = map_actors(_Doubler, "run", [1, 2, 3, 4], pool_size=1, offset=1)
    assert [o[0] for o in out] == [3, 5, 7, 9]
    assert [o[1] for o in out] == [1, 2, 3, 4]        # one actor, built once, served every item
    with pytest.raises(ClusterTimeout, match="actor call for item 99 made no progress"):
        map_actors(_Doubler, "run", [1, 99, 2], pool_size=1, timeout=5)
