"""Continual CLIP training: the seed filter model, slices, replay, Mod-X, forgetting matrix.

Imports are lazy so that ``curate`` (which imports ``curation.train.commands``) starts
without loading torch and open_clip.
"""
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from curation.train.seed import train_seed_clip

__all__ = ["train_seed_clip"]


def __getattr__(name: str) -> Any:
    if name == "train_seed_clip":
        from curation.train.seed import train_seed_clip

        return train_seed_clip
    raise AttributeError(f"module 'curation.train' has no attribute {name!r}")
