"""Pipeline specs are validated before anything runs; errors name key path and value."""
from __future__ import annotations

import pytest
import yaml

from curation.errors import ConfigError
from curation.reshard.stage import ReshardConfig
from curation.runner.spec import apply_overrides, load_pipeline
from tests.helpers import make_dataset


@pytest.fixture
def ds_root(tmp_path):
    root = str(tmp_path / "ds")
    make_dataset(root)
    return root


def doc(ds_root, tmp_path, **stage_cfg):
    return {"name": "t", "input": ds_root, "output": str(tmp_path / "run"),
            "stages": [{"stage": "reshard", "config": {"samples_per_shard": 3, **stage_cfg}}]}


def test_valid_pipeline(ds_root, tmp_path):
    p = load_pipeline(doc(ds_root, tmp_path))
    cfg = p.stages[0].config
    assert isinstance(cfg, ReshardConfig) and cfg.samples_per_shard == 3
    assert len(p.fingerprints()) == 1


def test_wrong_type_names_key_and_value(ds_root, tmp_path):
    with pytest.raises(ConfigError, match=r"stages\.0\.config\.samples_per_shard.*'many'"):
        load_pipeline(doc(ds_root, tmp_path, samples_per_shard="many"))


def test_unknown_key(ds_root, tmp_path):
    with pytest.raises(ConfigError, match=r"stages\.0\.config\.shards_per_sample: unknown key"):
        load_pipeline(doc(ds_root, tmp_path, shards_per_sample=2))
    d = doc(ds_root, tmp_path)
    d["outptu"] = "x"
    with pytest.raises(ConfigError, match="outptu"):
        load_pipeline(d)


def test_unknown_stage(ds_root, tmp_path):
    d = doc(ds_root, tmp_path)
    d["stages"][0]["stage"] = "sparkle"
    with pytest.raises(ConfigError, match=r"stages\.0\.stage.*'sparkle'"):
        load_pipeline(d)


def test_missing_input(ds_root, tmp_path):
    d = doc(ds_root, tmp_path)
    del d["input"]
    with pytest.raises(ConfigError, match="'input' is a required property"):
        load_pipeline(d)
    d["input"] = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="not a dataset"):
        load_pipeline(d)


def test_overrides(ds_root, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc(ds_root, tmp_path)))
    p = load_pipeline(str(path), ["stages.0.config.samples_per_shard=7", "name=renamed"])
    cfg = p.stages[0].config
    assert isinstance(cfg, ReshardConfig) and cfg.samples_per_shard == 7 and p.name == "renamed"
    with pytest.raises(ConfigError, match="not an index"):
        apply_overrides({"stages": []}, ["stages.3.config.x=1"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        apply_overrides({}, ["novalue"])


def test_bad_yaml(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_pipeline(str(tmp_path / "bad.yaml"))
    with pytest.raises(ConfigError, match="not found"):
        load_pipeline(str(tmp_path / "missing.yaml"))
