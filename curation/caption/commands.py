"""``curate caption DS``: synthetic captions (CoCa or retrieval) + the mixing policy; flags generated
from :class:`~curation.caption.config.CaptionConfig`."""
from __future__ import annotations

from typing import Any

from curation.cli_config import stage_command


def _summary(out: Any, st: dict[str, Any]) -> str:
    sources = ", ".join(f"{k} {v}" for k, v in sorted((st.get("caption_source") or {}).items()))
    return (f"{out.url}: version {out.version}, captioned {st.get('samples_in')} samples "
            f"({st.get('seconds', 0):.1f}s); caption_source: {sources}")


caption = stage_command("caption", summary=_summary,
                        doc="Add synthetic_caption, synthetic_clip_score and caption_source (new metadata version).")
