"""``curate filter DS``: keep/reasons from SQL and named rule sets; flags generated from
:class:`~curation.filters.stage.FilterConfig` (``--rule`` and ``--top-fraction`` keep their names)."""
from __future__ import annotations

from typing import Any

from curation.cli_config import stage_command


def _summary(out: Any, st: dict[str, Any]) -> str:
    top = ", ".join(f"{k} {v}" for k, v in sorted((st.get("dropped") or {}).items(), key=lambda kv: -kv[1])[:8])
    return f"{out.url}: version {out.version}, keep {st.get('samples_out')} of {st.get('samples_in')} ({top})"


filter_cmd = stage_command(
    "filter", summary=_summary,
    names={"rules": ["--rule", "--rules"], "clip_top_fraction": ["--top-fraction", "--clip-top-fraction"]},
    doc="Add keep + reasons (every failed rule named) as a new metadata version; tars are untouched.")
