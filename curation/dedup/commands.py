"""``curate dedup DS``: the dedup stage, its flags generated from :class:`~curation.dedup.config.DedupConfig`."""
from __future__ import annotations

import json
from typing import Any

from curation.cli_config import stage_command


def _summary(out: Any, st: dict[str, Any]) -> str:
    removed = (st.get("dedup") or {}).get("removed", st.get("dropped", {}))
    return (f"{out.url}: version {out.version}, removed {json.dumps(removed)} "
            f"of {st.get('samples_in')} samples ({st.get('seconds', 0):.1f}s)")


dedup = stage_command("dedup", summary=_summary,
                      doc="Flag exact, perceptual and semantic duplicates (adds phash, dup_of, dedup_reason).")
