"""Cluster helpers below the stage contract: starting/attaching Ray and retrying parallel maps.

Layering: ``curation.io`` <- ``curation.cluster`` <- ``curation.stage`` <- stages <- runner.
Stages never import this package; they call :meth:`curation.stage.Stage.map`.
"""
from curation.cluster.ray import ClusterTimeout, chunks, cluster_resources, ensure_ray, map_actors, map_tasks

__all__ = ["ClusterTimeout", "chunks", "cluster_resources", "ensure_ray", "map_actors", "map_tasks"]
