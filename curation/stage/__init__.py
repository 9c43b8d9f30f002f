"""The stage contract (v2) and the stage registry; see :mod:`curation.stage.base`.

Layering: ``curation.io`` <- ``curation.cluster`` <- ``curation.stage`` <- stages <- runner <- CLI.
"""
from curation.stage.base import Shard, ShardResult, ShardStage, Stage, StageContext, StageStats, record_path
from curation.stage.registry import stage_class, stage_names

__all__ = ["Shard", "ShardResult", "ShardStage", "Stage", "StageContext", "StageStats", "record_path",
           "stage_class", "stage_names"]
