"""The dataset format of DESIGN.md section 3: paths, names, schemas.

```
<root>/manifest.json              written last, atomically
<root>/shards/000000.tar          <key>.jpg|png|webp, <key>.txt, <key>.json
<root>/meta/v<N>/000000.parquet   one row per sample of that shard, metadata version N
<root>/emb/v<N>/000000.parquet    uid + image_emb + text_emb (float32[d])
```
"""
from __future__ import annotations

import datetime as _dt
import functools
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa

from curation.errors import DatasetError, SchemaError

MANIFEST = "manifest.json"
IMAGE_EXTS = ("jpg", "png", "webp")
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_MEMBER_RE = re.compile(r"^[A-Za-z0-9_-]+\.(jpg|png|webp|txt|json)$")


def schemas_dir() -> Path:
    """The contracts as files: ``curation/schemas/`` (``schemas/`` at the repository root
    links to it), shipped as package data so an installed package finds them too."""
    cand = Path(__file__).resolve().parents[1] / "schemas"
    if not cand.is_dir():
        raise DatasetError(f"schemas folder {cand} is missing (broken installation)")
    return cand


@functools.lru_cache(maxsize=None)
def load_schema(name: str) -> dict[str, Any]:
    """Load ``schemas/<name>.schema.json``."""
    return json.loads((schemas_dir() / f"{name}.schema.json").read_text())


def now_iso() -> str:
    """The current UTC time as ISO 8601 with seconds (manifests, histories, run records)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def shard_tar(shard_id: int, version: int | None = None) -> str:
    """``shards/NNNNNN.tar``; ``version`` names a tar that version N extended (``NNNNNN.vN.tar``,
    written by ``--retry-failed``; the manifest says which tar a shard uses)."""
    return f"shards/{shard_id:06d}.tar" if version is None else f"shards/{shard_id:06d}.v{version}.tar"


_SHARD_TAR_RE = re.compile(r"shards/([0-9]{6})(?:\.v([0-9]+))?\.tar")


def parse_shard_tar(name: str) -> tuple[int, int | None] | None:
    """``(shard id, version or None)`` of a shard tar name, or None if it is not one."""
    m = _SHARD_TAR_RE.fullmatch(name)
    return (int(m.group(1)), int(m.group(2)) if m.group(2) else None) if m else None


def meta_file(version: int, shard_id: int) -> str:
    return f"meta/v{version}/{shard_id:06d}.parquet"


def emb_file(version: int, shard_id: int) -> str:
    return f"emb/v{version}/{shard_id:06d}.parquet"


def validate_key(key: str) -> str:
    """A sample key is a tar member stem: letters, digits, ``_`` and ``-`` only.

    This rules out ``/``, ``..``, leading dots and extra dots (webdataset groups members
    by the text before the first dot).
    """
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise DatasetError(f"invalid sample key {key!r}: use letters, digits, '_' and '-' only")
    return key


def validate_member_name(name: str, where: str = "") -> tuple[str, str]:
    """Split a tar member name into (key, ext); reject path tricks and unknown types."""
    if "/" in name or name.startswith(".") or ".." in name or not _MEMBER_RE.fullmatch(name):
        loc = f" in {where}" if where else ""
        raise DatasetError(f"unsafe or unsupported tar member name {name!r}{loc}")
    key, ext = name.split(".", 1)
    return key, ext


_ARROW = {
    "string": pa.string(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "bool": pa.bool_(),
    "list<string>": pa.list_(pa.string()),
    "list<list<float32>>": pa.list_(pa.list_(pa.float32())),
}


def column_types() -> dict[str, pa.DataType]:
    """Arrow types of every column the sample schema names."""
    props = load_schema("sample")["properties"]
    return {k: _ARROW[v["x-arrow"]] for k, v in props.items()}


def required_columns() -> list[str]:
    return list(load_schema("sample")["required"])


def conform_table(table: pa.Table, where: str) -> pa.Table:
    """Check required columns and cast known columns to their schema types.

    Raises SchemaError naming ``where`` (a file) and the missing or mistyped column.
    """
    missing = [c for c in required_columns() if c not in table.column_names]
    if missing:
        raise SchemaError(f"{where}: missing required column(s) {', '.join(missing)}")
    types = column_types()
    cols = []
    for name in table.column_names:
        col = table.column(name)
        want = types.get(name)
        if want is not None and col.type != want:
            try:
                col = col.cast(want)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise SchemaError(f"{where}: column {name!r} has type {col.type}, expected {want}: {e}") from None
        cols.append(col)
    out = pa.Table.from_arrays(cols, names=table.column_names)
    if out.column("uid").null_count:
        raise SchemaError(f"{where}: column 'uid' has nulls")
    return out


def validate_rows(rows: list[dict[str, Any]], where: str) -> None:
    """Validate metadata rows against ``sample.schema.json`` (used by tests and ``validate``)."""
    import jsonschema
    import jsonschema.exceptions

    validator = jsonschema.Draft202012Validator(load_schema("sample"))
    for i, row in enumerate(rows):
        err = jsonschema.exceptions.best_match(validator.iter_errors(row))
        if err is not None:
            path = ".".join(str(p) for p in err.absolute_path) or "(row)"
            raise SchemaError(f"{where}: row {i} column {path}: {err.message}")


def validate_manifest_dict(data: dict[str, Any], where: str) -> None:
    import jsonschema
    import jsonschema.exceptions

    validator = jsonschema.Draft202012Validator(load_schema("manifest"))
    err = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if err is not None:
        path = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise DatasetError(f"{where}: malformed manifest at {path}: {err.message}")
