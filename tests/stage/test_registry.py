"""Stages register by entry point (``curation.stages``): a third-party package adds one."""
from __future__ import annotations

import sys
import textwrap

import pytest

from curation.errors import ConfigError
from curation.io import Dataset
from curation.stage import stage_class, stage_names
from tests.helpers import make_dataset

PLUGIN = '''
from curation.config import StageConfig, execution
from curation.stage import ShardResult, ShardStage


class ShoutConfig(StageConfig):
    times: int = 1
    executor: str = execution("local")   # the plugin lives on this test's sys.path only


class ShoutStage(ShardStage):
    name = "shout"
    Config = ShoutConfig

    def process_shard(self, state, shard, plan):
        caps = shard.meta.column("caption").to_pylist()
        return ShardResult(columns={"shout": [(c or "").upper() + "!" * plan for c in caps]})

    def plan(self, ds, ctx):
        return self.config.times
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """An installed distribution ``shout-plugin`` (a ``.dist-info`` on sys.path) with one stage."""
    site = tmp_path / "site"
    (site / "shout_plugin").mkdir(parents=True)
    (site / "shout_plugin" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "shout_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shout-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[curation.stages]\nshout = shout_plugin:ShoutStage\n"
                                           "broken = shout_plugin:NoSuchStage\n")
    monkeypatch.syspath_prepend(str(site))
    yield
    sys.modules.pop("shout_plugin", None)


def test_builtin_stages_are_entry_points():
    assert {"download", "score", "dedup", "caption", "filter", "reshard"} <= set(stage_names())
    assert stage_class("reshard").produces_dataset and stage_class("reshard").output_subdir == "curated"
    assert stage_class("download").takes_input and stage_class("download").output_subdir == "dataset"
    assert not stage_class("filter").produces_dataset and not stage_class("filter").takes_input


def test_unknown_stage_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown stage 'nope'; valid stages: .*caption.*reshard"):
        stage_class("nope")


def test_a_third_party_stage_runs_in_a_pipeline(plugin, tmp_path, ray_local):
    from curation.runner.executor import run_pipeline
    from curation.runner.spec import load_pipeline

    assert "shout" in stage_names()
    with pytest.raises(ConfigError, match="stage 'broken': entry point 'shout_plugin:NoSuchStage' does not load"):
        stage_class("broken")
    make_dataset(str(tmp_path / "ds"), shards=2, per_shard=2)
    p = load_pipeline({"name": "plugin", "input": str(tmp_path / "ds"), "output": str(tmp_path / "run"),
                       "stages": [{"stage": "shout", "config": {"times": 2}},
                                  {"stage": "reshard", "config": {"samples_per_shard": 10}}]})
    rec = run_pipeline(p)
    assert [s["status"] for s in rec["stages"]] == ["done", "done"]
    shouted = Dataset(str(tmp_path / "ds"), version=rec["stages"][0]["version"])
    assert shouted.read_meta(0).column("shout").to_pylist()[:2] == ["SAMPLE 0 OF SHARD 0!!", "SAMPLE 1 OF SHARD 0!!"]
    curated = Dataset(str(tmp_path / "run" / "curated"))
    assert curated.num_samples == 4 and "shout" in curated.columns
    with pytest.raises(ConfigError, match=r"stages\.0\.config\.times: Input should be a valid integer"):
        load_pipeline({"name": "plugin", "input": str(tmp_path / "ds"), "output": str(tmp_path / "run2"),
                       "stages": [{"stage": "shout", "config": {"times": "x"}}]})
