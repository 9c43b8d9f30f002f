"""The caption mixing policy of Nguyen et al. 2023 ("Improving Multimodal Datasets with
Image Captioning") and the LaCLIP-style "always both" mode.

``mix``: keep the raw caption when the raw pair passes the CLIP rule (``clip_score >=
threshold``); otherwise use the synthetic caption when the synthetic pair passes the same
rule; otherwise ``none``. ``both``: every sample with a synthetic caption keeps both
(``both``), so the trainer can sample one per step. A missing score never passes.
"""
from __future__ import annotations

from typing import Literal, Sequence

RAW, SYNTHETIC, BOTH, NONE = "raw", "synthetic", "both", "none"
Mode = Literal["mix", "both"]


def passes(score: float | None, threshold: float) -> bool:
    """The CLIP rule: a score at or above the threshold passes (as DataComp's filter keeps it)."""
    return score is not None and score == score and score >= threshold  # NaN never passes


def caption_source(raw_score: float | None, synthetic_score: float | None, has_synthetic: bool,
                   threshold: float, mode: Mode = "mix") -> str:
    """Which caption a sample trains with: ``raw``, ``synthetic``, ``both`` or ``none``."""
    if mode == "both":
        if has_synthetic:
            return BOTH
        return RAW if raw_score is not None else NONE
    if passes(raw_score, threshold):
        return RAW
    if has_synthetic and passes(synthetic_score, threshold):
        return SYNTHETIC
    return NONE


def caption_sources(raw: Sequence[float | None], synthetic: Sequence[float | None],
                    captions: Sequence[str | None], threshold: float, mode: Mode = "mix") -> list[str]:
    """:func:`caption_source` for every row (``captions`` are the synthetic ones, None if absent)."""
    return [caption_source(r, s, c is not None, threshold, mode) for r, s, c in zip(raw, synthetic, captions)]
