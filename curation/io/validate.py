"""``curate validate``: check that a dataset is exactly what its manifest says.

Checks, each reported with the file it concerns: the manifest parses and matches its
schema; every listed tar and metadata file exists and has the listed size/row count;
every tar member has a metadata row and every row with an image has its member; each
row's ``tar_offset``/``tar_size`` addresses exactly that member's bytes; uids are unique;
rows match ``schemas/sample.schema.json``; each ``<key>.json`` member agrees with its row;
and where the stored image is the downloaded file itself, its sha256 matches.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from curation.errors import DatasetError
from curation.io import format as fmt
from curation.io.dataset import Dataset

_CORE = ("uid", "url", "caption", "status", "sha256")


def validate(ds: Dataset | str, *, storage_options: dict | None = None, check_images: bool = True) -> dict[str, Any]:
    """Validate a dataset; return a summary dict, raise DatasetError on the first problem."""
    if isinstance(ds, str):
        ds = Dataset(ds, storage_options)
    seen: set[str] = set()
    totals = {"shards": 0, "samples": 0, "images": 0, "sha256_checked": 0}
    for info in ds.shards:
        sid = info["id"]
        tar_url = ds.full_url(info["tar"])
        if not ds.fs.exists(ds.tar_path(sid)):
            raise DatasetError(f"{tar_url}: listed by the manifest but missing")
        size = ds.fs.size(ds.tar_path(sid))
        if size != info["tar_bytes"]:
            raise DatasetError(f"{tar_url}: size {size} differs from the manifest's {info['tar_bytes']}")
        meta = ds.read_meta(sid)
        where = ds.full_url(fmt.meta_file(ds.version, sid))
        if meta.num_rows != info["num_samples"]:
            raise DatasetError(f"{where}: {meta.num_rows} rows, manifest says {info['num_samples']}")
        fmt.conform_table(meta, where)
        rows = meta.to_pylist()
        required = fmt.required_columns()
        fmt.validate_rows([{k: v for k, v in r.items() if v is not None or k in required} for r in rows], where)
        for r in rows:
            if r["uid"] in seen:
                raise DatasetError(f"{where}: duplicate uid {r['uid']!r}")
            seen.add(r["uid"])
        _check_members(ds, sid, rows, tar_url, totals, check_images)
        totals["shards"] += 1
        totals["samples"] += len(rows)
    if totals["samples"] != ds.num_samples:
        raise DatasetError(f"{ds.manifest_url}: num_samples {ds.num_samples} but shards hold {totals['samples']}")
    return totals


def _check_members(ds: Dataset, sid: int, rows: list[dict], tar_url: str, totals: dict, check_images: bool) -> None:
    by_key = {r["key"]: r for r in rows}
    with_image = {r["key"] for r in rows if r.get("tar_offset") is not None}
    found: set[str] = set()
    for group in ds.iter_tar(sid):
        key = group["key"]
        row = by_key.get(key)
        if row is None:
            raise DatasetError(f"{tar_url}: member {key!r} has no metadata row")
        ext = row.get("image_ext") or next((e for e in fmt.IMAGE_EXTS if e in group), None)
        if ext not in group:
            raise DatasetError(f"{tar_url}: sample {key!r} has no image member")
        found.add(key)
        data = group[ext]
        if check_images:
            ranged = ds.read_range(sid, int(row["tar_offset"]), int(row["tar_size"]))
            if ranged != data:
                raise DatasetError(f"{tar_url}: tar_offset/tar_size of {key!r} do not address its image bytes")
        if "json" in group:
            member = json.loads(group["json"])
            for c in _CORE:
                if c in member and member[c] != row.get(c):
                    raise DatasetError(f"{tar_url}: {key}.json disagrees with its row on {c!r}")
        if row.get("sha256") and row.get("width") == row.get("original_width") and \
                row.get("height") == row.get("original_height") and hashlib.sha256(data).hexdigest() == row["sha256"]:
            totals["sha256_checked"] += 1
        totals["images"] += 1
    missing = with_image - found
    if missing:
        raise DatasetError(f"{tar_url}: rows {sorted(missing)[:5]} point at images missing from the tar")
