"""curation: distributed image-text dataset curation on Ray.

Download (img2dataset), CLIP scoring (open_clip), exact/perceptual/semantic dedup,
synthetic captions, filtering, resharding into WebDataset tars with Parquet metadata,
and a streaming loader for continual-learning runs. See ``architecture.md``.
"""
import os as _os

# img2dataset imports albumentations, which phones home for updates at import time;
# this project never sends traffic anywhere it was not asked to.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
_os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
_os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

__version__ = "0.1.0"
