"""The dedup stage's typed config (one StageConfig; CLI flags map 1:1 onto these keys)."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator

from curation.config import StageConfig, execution

Method = Literal["exact", "phash", "semantic"]


class DedupConfig(StageConfig):
    """Which duplicate detectors run and how.

    Attributes:
        methods: detectors in the order they run (always applied exact -> phash -> semantic).
            None: ``exact`` and ``phash``, plus ``semantic`` when the dataset has embeddings.
        phash_radius: Hamming radius (bits of 64) under which two pHashes are near duplicates.
        eps: SemDeDup threshold: removed when cosine to an earlier item > 1 - eps.
        n_clusters: k-means clusters; None = ceil(N / cluster_size).
        cluster_size: target mean cluster size when ``n_clusters`` is None.
        niter: k-means iterations. sample_size: points k-means is trained on (seeded sample).
        kmeans: ``flat`` (one faiss k-means), ``two_level`` (sqrt(k) coarse cells, then k-means
            inside each), ``auto`` (flat up to 256 clusters).
        keep: SemDeDup order inside a cluster: ``hard`` keeps the farthest from the centroid
            (paper default), ``easy`` the closest, ``random`` a seeded shuffle.
        seed: seed of the k-means sample and of ``keep: random``.
        block: tile size of the blocked pairwise cosine within clusters.
        eval_set: evaluation set to decontaminate against: ``.npy`` (n x d), ``.parquet``
            with an ``image_emb``/``embedding``/``emb`` column, or a folder of images embedded
            with the dataset's model (``eval_model``/``eval_pretrained`` override it).
        eval_model / eval_pretrained: the model (and weights) that embeds an eval image folder.
        eval_eps: threshold for decontamination (default: ``eps``).
        rows_per_task: execution setting: rows per scan task (a group of consecutive shards)
            and per exact / pHash / components partition; bounds every task's memory.
    """

    methods: Optional[list[Method]] = None
    phash_radius: int = Field(default=4, ge=0, le=31)
    eps: float = Field(default=0.05, gt=0.0, lt=1.0)
    n_clusters: Optional[int] = Field(default=None, ge=1)
    cluster_size: int = Field(default=1000, ge=1)
    niter: int = Field(default=20, ge=1, le=1000)
    sample_size: int = Field(default=100_000, ge=1)
    kmeans: Literal["auto", "flat", "two_level"] = "auto"
    keep: Literal["hard", "easy", "random"] = "hard"
    seed: int = 0
    block: int = execution(2048, ge=8)
    eval_set: Optional[str] = None
    eval_eps: Optional[float] = Field(default=None, gt=0.0, lt=1.0)
    eval_model: Optional[str] = None
    eval_pretrained: Optional[str] = None
    rows_per_task: int = execution(250_000, ge=1)

    @field_validator("methods")
    @classmethod
    def _distinct(cls, v):
        if v is not None:
            if not v:
                raise ValueError("methods must name at least one of exact, phash, semantic")
            if len(set(v)) != len(v):
                raise ValueError("methods lists a method twice")
        return v
