"""``curate faces DS``: face boxes for every stored image (flags generated from :class:`FacesConfig`)."""
from __future__ import annotations

from typing import Any

from curation.cli_config import stage_command


def _summary(out: Any, st: dict[str, Any]) -> str:
    return (f"{out.url}: version {out.version}, {st.get('faces', 0)} faces in {st.get('images_with_faces', 0)} "
            f"of {st.get('samples_in')} samples; `curate reshard --blur-faces` blurs them")


faces = stage_command("faces", summary=_summary, doc="Detect faces: face_bboxes (normalised) and num_faces.")
