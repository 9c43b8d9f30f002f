"""Continual CLIP training: the seed filter model, slices, replay, Mod-X, forgetting matrix."""
from curation.train.seed import train_seed_clip

__all__ = ["train_seed_clip"]
