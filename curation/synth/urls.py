"""Point a corpus's URL list at another server address (tests serve on a random port)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.io.fs import atomic_write_bytes, get_fs
from curation.synth.corpus import SynthError


def _rebase(urls: pa.ChunkedArray, old: str, new: str) -> pa.Array:
    old, new = old.rstrip("/"), new.rstrip("/")
    starts = pc.starts_with(urls, old)  # pyright: ignore[reportAttributeAccessIssue]  # kernel generated at runtime
    if not pc.all(starts).as_py():  # pyright: ignore[reportAttributeAccessIssue]  # kernel generated at runtime
        raise SynthError(f"URL list does not start with the corpus base URL {old!r}")
    n = len(old)
    tails = pc.utf8_slice_codeunits(urls, n)  # pyright: ignore[reportAttributeAccessIssue]  # kernel generated at runtime
    joined = pc.binary_join_element_wise  # pyright: ignore[reportAttributeAccessIssue]  # generated at runtime
    return joined(new, tails, "")


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def write_url_list(corpus_dir: str | os.PathLike, base_url: str, out_path: str | None = None) -> str:
    """Rewrite the corpus's URLs for a server at ``base_url``; return the URL list's path.

    With ``out_path`` None, ``urls.parquet``, ``truth.parquet`` and ``corpus.json`` of the
    corpus are rewritten in place (each atomically). With ``out_path`` (any fsspec URL), only
    a new URL list (uid, url, text) is written there and the corpus is left untouched, so
    concurrent servers on different ports can share one corpus.
    """
    if not str(base_url).startswith(("http://", "https://")):
        raise SynthError(f"base_url must start with http:// or https://, got {base_url!r}")
    root = Path(corpus_dir)
    meta_file = root / "corpus.json"
    if not meta_file.is_file():
        raise SynthError(f"not a synthetic corpus: {meta_file} is missing")
    meta = json.loads(meta_file.read_text())
    old = meta["base_url"]
    urls = pq.read_table(root / "urls.parquet")
    urls = urls.set_column(urls.schema.get_field_index("url"), "url", _rebase(urls["url"], old, base_url))
    if out_path is not None:
        fs, path = get_fs(str(out_path))
        atomic_write_bytes(fs, path, _parquet_bytes(urls))
        return str(out_path)
    local = get_fs(str(root))[0]
    truth = pq.read_table(root / "truth.parquet")
    truth = truth.set_column(truth.schema.get_field_index("url"), "url", _rebase(truth["url"], old, base_url))
    atomic_write_bytes(local, str(root / "truth.parquet"), _parquet_bytes(truth))
    atomic_write_bytes(local, str(root / "urls.parquet"), _parquet_bytes(urls))
    meta["base_url"] = base_url
    atomic_write_bytes(local, str(meta_file), json.dumps(meta, indent=2, sort_keys=True).encode())
    return str(root / "urls.parquet")
