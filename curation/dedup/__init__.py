"""Deduplication: exact (sha256), perceptual (pHash + multi-index hashing), semantic
(SemDeDup) and evaluation-set decontamination. See ``stage.py`` and ``core.py``."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what the lazy __getattr__ below returns, for type checkers only
    from curation.dedup.config import DedupConfig
    from curation.dedup.core import find_duplicates
    from curation.dedup.reference import find_duplicates_reference
    from curation.dedup.report import dedup_groups, evaluate
    from curation.dedup.stage import DedupStage


def __getattr__(name):  # lazy: keep `import curation.dedup` light (no faiss/ray on import)
    if name in ("dedup_groups", "evaluate"):
        from curation.dedup import report

        return getattr(report, name)
    if name == "find_duplicates":
        from curation.dedup.core import find_duplicates

        return find_duplicates
    if name == "find_duplicates_reference":
        from curation.dedup.reference import find_duplicates_reference

        return find_duplicates_reference
    if name in ("DedupStage",):
        from curation.dedup.stage import DedupStage

        return DedupStage
    if name == "DedupConfig":
        from curation.dedup.config import DedupConfig

        return DedupConfig
    raise AttributeError(name)


__all__ = ["DedupStage", "DedupConfig", "find_duplicates", "find_duplicates_reference", "dedup_groups", "evaluate"]
