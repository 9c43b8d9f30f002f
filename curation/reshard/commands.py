"""``curate reshard DS --out NEW``: the reshard stage on its own; flags generated from its config."""
from __future__ import annotations

from typing import Any

from curation.cli_config import stage_command


def _summary(out: Any, st: dict[str, Any]) -> str:
    return f"wrote {out.num_samples} samples in {len(out.shard_ids)} shards to {out.url}"


reshard = stage_command("reshard", summary=_summary, doc="Write the kept samples into a new compact dataset.")
