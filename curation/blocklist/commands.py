"""``curate block DS --list F``: apply a later hash list (flags generated from :class:`BlockConfig`)."""
from __future__ import annotations

from typing import Any

from curation.cli_config import stage_command


def _summary(out: Any, st: dict[str, Any]) -> str:
    n = st.get("dropped", {}).get("blocked_hash", 0)
    by = ", ".join(f"{k}={v}" for k, v in (st.get("blocked_by_list") or {}).items()) or "none"
    return (f"{out.url}: version {out.version}, blocked {n} of {st.get('samples_in')} samples ({by}); "
            "run `curate reshard` to materialise a dataset without their bytes")


block = stage_command("block", summary=_summary, names={"lists": ("--list",)},
                      doc="Drop samples whose stored sha256/PDQ matches a hash list (new metadata version).")
