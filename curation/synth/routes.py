"""The route table: for each URL path of the corpus, what the server answers and which fault
it injects. Written to ``routes.json`` by the generator, read by :class:`SynthServer`.

Route fields: ``file`` (relative path of the body, or null), ``content_type``, ``fault``
(null or a fetch-fault kind) and the fault's parameters (``status``, ``x_robots_tag``,
``hops``, ``fail_times``, ``stall``, ``pad_to``, ``content_length``).
"""
from __future__ import annotations

import numpy as np

from curation.synth import noise as nz
from curation.synth.imaging import CONTENT_TYPES, EXTENSIONS
from curation.synth.plan import Record, rngs


def url_path(rec: Record) -> str:
    """The URL path of a record (robots-disallowed ones live under ``ROBOTS_PREFIX``)."""
    ext = "png" if rec.fetch == "too_many_pixels" else EXTENSIONS[rec.fmt]
    if rec.fetch == "not_image":
        ext = "jpg"  # a link that promises an image and delivers a web page
    prefix = nz.ROBOTS_PREFIX if rec.fetch == "robots" else "/img/"
    return f"{prefix}{rec.uid}.{ext}"


def _fault_params(kind: str, r: np.random.Generator) -> dict:
    if kind in ("http_404", "http_500"):
        return {"status": int(kind.split("_")[1])}
    if kind == "noai":
        return {"x_robots_tag": nz.NOAI_VARIANTS[r.integers(len(nz.NOAI_VARIANTS))]}
    if kind == "redirect":
        return {"hops": int(r.integers(1, 4)), "status": int(r.choice([301, 302, 307, 308]))}
    if kind == "blocked_redirect":
        return {"status": 302}
    if kind == "transient":
        return {"fail_times": int(r.integers(1, 3)), "status": 503}
    if kind == "timeout":
        return {"stall": "headers" if r.random() < 0.5 else "body"}
    if kind == "oversized":
        return {"pad_to": nz.OVERSIZE_BYTES + int(r.integers(0, 500_000)),
                "content_length": bool(r.random() < 0.5)}
    return {}


def build_routes(plan: list[Record], facts: dict[int, dict], seed: int) -> dict[str, dict]:
    """``{url_path: route}`` for every record of the plan."""
    r = rngs(seed)["server"]
    routes: dict[str, dict] = {}
    for rec in plan:
        f = facts[rec.index]["file"]
        ctype = CONTENT_TYPES[f.rsplit(".", 1)[1]] if f else "text/html; charset=utf-8"
        route = {"uid": rec.uid, "file": f, "content_type": ctype, "fault": rec.fetch}
        if rec.fetch:
            route.update(_fault_params(rec.fetch, r))
        if rec.fetch == "not_image" and r.random() < 0.5:
            route["content_type"] = "image/jpeg"  # lies about its type, as many servers do
        routes[url_path(rec)] = route
    return routes
