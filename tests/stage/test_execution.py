"""Execution settings: marked on the config models, left out of the semantic dump and fingerprint."""
from __future__ import annotations

import pytest

from curation.config import StageConfig, execution
from curation.errors import ConfigError
from curation.stage import stage_class

# what each built-in stage must treat as "how to run" (more may be marked; none of these may be semantic)
EXPECTED = {
    "download": {"processes_count", "thread_count", "per_host_concurrency", "per_host_rate"},
    "score": {"batch_size", "actors", "threads_per_actor", "read_concurrency", "chunk", "executor",
              "local_max_samples"},
    "caption": {"batch_size", "num_cpus", "num_gpus"},
    "dedup": {"block"},
    "filter": {"parallel"},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_stages_mark_their_execution_settings(name):
    cfg_cls = stage_class(name).Config
    assert EXPECTED[name] <= cfg_cls.execution_fields()
    base = cfg_cls.parse({"input": "urls.parquet"} if name == "download" else {})
    dump = base.semantic_dump()
    assert not (EXPECTED[name] & set(dump))
    assert set(dump) | cfg_cls.execution_fields() == set(base.model_dump())   # every other field is semantic


def test_execution_fields_never_change_the_fingerprint():
    class C(StageConfig):
        threshold: float = 0.5
        workers: int = execution(4, ge=1, description="parallel workers")
        hosts: list[str] = execution(default_factory=list)

    assert C.execution_fields() == {"workers", "hosts"}
    assert C(workers=16, hosts=["a"]).fingerprint() == C().fingerprint()
    assert C(threshold=0.6).fingerprint() != C().fingerprint()
    assert C().semantic_dump() == {"threshold": 0.5}
    assert C.model_fields["workers"].description == "parallel workers"          # Field kwargs kept
    with pytest.raises(ConfigError, match="workers: Input should be greater than or equal to 1"):
        C.parse({"workers": 0})
