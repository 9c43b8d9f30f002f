"""Replay buffers have the sizes and composition TiC-CLIP's policies define."""
from __future__ import annotations

import pytest

from curation.errors import ConfigError
from curation.train.config import RunConfig
from curation.train.replay import select_replay

PREV = [[f"a{i}" for i in range(100)], [f"b{i}" for i in range(100)], [f"c{i}" for i in range(100)]]


def test_none_and_all():
    assert [len(x) for x in select_replay("none", PREV, current_size=50)] == [0, 0, 0]
    assert [len(x) for x in select_replay("all", PREV, current_size=50)] == [100, 100, 100]


def test_exp_halves_towards_the_past_and_equal_splits():
    assert [len(x) for x in select_replay("exp", PREV, current_size=80)] == [20, 20, 40]
    assert [len(x) for x in select_replay("exp", PREV, current_size=50, budget_samples=160)] == [40, 40, 80]
    assert [len(x) for x in select_replay("equal", PREV, current_size=90)] == [30, 30, 30]
    picked = select_replay("equal", PREV, current_size=90, seed=1)
    assert all(len(set(x.tolist())) == len(x) for x in picked)           # no duplicates
    assert [x.tolist() for x in picked] == [x.tolist() for x in select_replay("equal", PREV, current_size=90, seed=1)]


def test_reservoir_sample_budget_is_nested_and_uniform_ish():
    two = select_replay("reservoir", PREV[:2], current_size=10, budget_samples=60, seed=3)
    three = select_replay("reservoir", PREV, current_size=10, budget_samples=60, seed=3)
    assert sum(len(x) for x in two) == 60 and sum(len(x) for x in three) == 60
    # an evicted row never comes back: the later buffer's old rows are a subset of the earlier one's
    assert set(three[0].tolist()) <= set(two[0].tolist()) and set(three[1].tolist()) <= set(two[1].tolist())
    assert all(10 <= len(x) <= 35 for x in three)                         # every slice represented


def test_reservoir_byte_budget():
    nbytes = [[100] * 100, [300] * 100, [50] * 100]
    picked = select_replay("reservoir", PREV, current_size=1, budget_bytes=5000, prev_nbytes=nbytes, seed=0)
    used = sum(nbytes[j][i] for j, x in enumerate(picked) for i in x)
    assert 4500 < used <= 5000


def test_reservoir_needs_a_budget_and_errors_name_the_key():
    spec = {"out": "/tmp/x", "slices": [{"name": "a", "dataset": "d.parquet"}], "replay": {"policy": "reservoir"}}
    with pytest.raises(ConfigError, match="replay"):
        RunConfig.parse(spec, where="run")
    with pytest.raises(ConfigError, match=r"run.replay.policy.*'lifo'"):
        RunConfig.parse({**spec, "replay": {"policy": "lifo"}}, where="run")
    with pytest.raises(ConfigError, match=r"run.slices.0.stepz: unknown key"):
        RunConfig.parse({**spec, "replay": {}, "slices": [{"name": "a", "dataset": "d", "stepz": 3}]}, where="run")
