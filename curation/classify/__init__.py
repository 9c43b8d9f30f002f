"""Classifier heads on stored embeddings: ``classify`` (scores) and ``train-head`` (linear probes / MLPs)."""
from curation.classify.heads import Head, HeadError, load_head, save_head

__all__ = ["Head", "HeadError", "load_head", "save_head"]
