"""Reading download inputs into normalised records ``{uid, url, caption, ...kept columns}``.

Formats: URL lists (parquet, csv, tsv, jsonl, txt) with LAION (``URL``/``TEXT``), DataComp
(``url``/``text``/``uid``) or explicit column names; headerless CC3M-style TSV
(caption<TAB>url); MMC4/OBELICS interleaved documents (jsonl) flattened to image-text pairs;
and WebDataset tars (see :mod:`curation.download.wds`).

Planning streams the input; the driver never holds its rows (issue 15):

* :func:`plan_input` reads Parquet by its footer (row-group sizes, schema) and text formats
  line by line, and returns one small :data:`spec <ShardSpec>` per output shard - a row range
  of a Parquet file, or a byte range of a text file - plus the content fingerprint and stats;
* :func:`read_shard` (in the task) reads just that range: the row groups covering it, or the
  bytes between two record boundaries (a ``.gz`` file is decompressed up to its range);
* every problem with the input is a :class:`~curation.errors.CurationError` naming the file
  and what is wrong, raised by :func:`plan_input` before anything is written - including
  duplicate or empty uids, checked on a stream of 8-byte hashes (8 bytes of driver memory per
  row, the only per-row cost; colliding hashes are confirmed on the values).
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from typing import Any, BinaryIO, Iterator, cast

import numpy as np
import pyarrow.parquet as pq

from curation.download.config import DownloadConfig
from curation.errors import CurationError
from curation.io.fs import get_fs

URL_COLS = ("url", "URL", "image_url", "img_url", "raw_url")
CAPTION_COLS = ("caption", "text", "TEXT", "alt_text", "alt", "title", "TITLE")
UID_COLS = ("uid", "UID")
_BATCH = 65_536
_HASH_CHUNK = 8 << 20

ShardSpec = dict  # {"shard": int, "source": {...}}: small and picklable


class InputError(CurationError):
    """The download input is unreadable, empty or lacks what is needed (names the file)."""


def detect_format(path: str) -> str:
    p = path.lower().split("?", 1)[0]
    for ext, f in ((".parquet", "parquet"), (".csv", "csv"), (".tsv", "tsv"), (".jsonl", "jsonl"),
                   (".json", "jsonl"), (".txt", "txt"), (".tar", "webdataset")):
        if p.endswith(ext) or p.endswith(ext + ".gz"):
            return f
    if "{" in p and ".tar" in p:
        return "webdataset"
    raise InputError(f"{path}: cannot tell the input format from the name; pass input_format "
                     "(parquet, csv, tsv, jsonl, txt, webdataset, mmc4)")


def _open(path: str, storage_options: dict | None) -> BinaryIO:
    """The input as a binary stream (``.gz`` decompressed on the fly)."""
    try:
        fs, p = get_fs(path, storage_options)
        if fs.isdir(p):
            raise InputError(f"{path}: is a directory, expected a URL list file")
        f = fs.open(p, "rb")
    except FileNotFoundError:
        raise InputError(f"{path}: input file not found") from None
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{path}: unreadable input ({type(e).__name__}: {e})") from None
    if path.lower().split("?", 1)[0].endswith(".gz"):
        return cast(BinaryIO, gzip.GzipFile(fileobj=cast(BinaryIO, f), mode="rb"))
    return cast(BinaryIO, f)


def _pick(cols: list[str], explicit: str | None, candidates: tuple[str, ...], what: str, path: str,
          required: bool) -> str | None:
    if explicit:
        if explicit not in cols:
            raise InputError(f"{path}: no column {explicit!r} for the {what} (columns: {', '.join(cols[:20])})")
        return explicit
    for c in candidates:
        if c in cols:
            return c
    if required:
        raise InputError(f"{path}: no URL column found (looked for {', '.join(candidates)}; columns: "
                         f"{', '.join(cols[:20]) or 'none'}); pass --url-col")
    return None


def _headerless(cols: list[str], first: dict | None) -> tuple[str | None, str | None]:
    """URL column = the one whose first value has ``://``; caption = the first other one."""
    if not first or not cols or not cols[0].startswith("col"):
        return None, None
    url = next((c for c in cols if "://" in str(first.get(c, ""))), None)
    cap = next((c for c in cols if c != url), None)
    return url, cap


def flatten_documents(docs: list[dict[str, Any]], path: str, first_doc: int = 0) -> list[dict[str, Any]]:
    """MMC4 (``text_list`` + ``image_info[{raw_url, matched_text_index}]``) or OBELICS
    (aligned ``texts``/``images`` lists with nulls) documents -> one record per image,
    keeping ``doc_id`` and ``position``; the caption is the matched or nearest text.
    ``first_doc`` is the index of ``docs[0]`` in the file (ids and messages use it)."""
    out = []
    for j, doc in enumerate(docs):
        i = first_doc + j
        doc_id = str(doc.get("doc_id") or doc.get("id") or doc.get("url") or i)
        if "image_info" in doc:
            texts = doc.get("text_list") or []
            for pos, info in enumerate(doc.get("image_info") or []):
                t = info.get("matched_text_index")
                cap = texts[t] if isinstance(t, int) and 0 <= t < len(texts) else _nearest(texts, pos)
                out.append({"url": info.get("raw_url") or info.get("url"), "caption": cap,
                            "doc_id": doc_id, "position": pos})
        elif "images" in doc and "texts" in doc:
            texts, images = doc.get("texts") or [], doc.get("images") or []
            for pos, url in enumerate(images):
                if url is not None:
                    out.append({"url": url, "caption": _nearest(texts, pos), "doc_id": doc_id, "position": pos})
        else:
            raise InputError(f"{path}: document {i + 1} has neither image_info/text_list (MMC4) "
                             "nor images/texts (OBELICS)")
    return out


def _nearest(texts: list, pos: int) -> str | None:
    """The non-empty text closest to ``pos`` (ties: the following one, which tends to describe it)."""
    best = None
    for j, t in enumerate(texts):
        if isinstance(t, str) and t.strip():
            d = (abs(j - pos), 0 if j >= pos else 1)
            if best is None or d < best[0]:
                best = (d, t)
    return best[1] if best else None


# -- streaming text -------------------------------------------------------------------------
class _Lines:
    """Decoded lines of a binary stream with the byte offset after each (for shard ranges)."""

    def __init__(self, f: BinaryIO, offset: int = 0, end: int | None = None, hasher=None):
        self.f, self.offset, self.end, self.hasher = f, offset, end, hasher
        self.invalid = 0
        self.number = 0

    def __iter__(self) -> Iterator[str]:
        first = self.offset == 0
        while self.end is None or self.offset < self.end:
            raw = self.f.readline()
            if not raw:
                return
            if self.hasher is not None:
                self.hasher.update(raw)
            self.offset += len(raw)
            self.number += 1
            try:
                line = raw.decode("utf-8-sig" if first else "utf-8")
            except UnicodeDecodeError:
                # Keep every record: invalid bytes become U+FFFD and the count is reported.
                line = raw.decode("utf-8", "replace")
                self.invalid += line.count("\ufffd")
            first = False
            yield line


def _seek(f: BinaryIO, offset: int) -> None:
    if offset == 0:
        return
    try:
        f.seek(offset)
    except (OSError, io.UnsupportedOperation):
        while offset:  # a decompressing stream: read up to the range
            skip = f.read(min(offset, 1 << 20))
            if not skip:
                return
            offset -= len(skip)


def _records_text(fmt_: str, lines: _Lines, header: list[str] | None, path: str) -> Iterator[tuple[dict, int]]:
    """``(record dict, byte offset after it)`` for each record of a text stream. For csv/tsv,
    ``header`` names the columns (the header line itself is skipped by the caller's range)."""
    if fmt_ == "txt":
        for line in lines:
            s = line.strip()
            if s and not line.startswith("#"):
                yield {"url": s}, lines.offset
    elif fmt_ == "jsonl":
        for line in lines:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}: line {lines.number} is not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}: line {lines.number} is not a JSON object")
            yield obj, lines.offset
    else:
        assert header is not None
        for fields in csv.reader(iter(lines), delimiter="\t" if fmt_ == "tsv" else ","):
            if fields:
                yield dict(zip(header, fields)), lines.offset


def _csv_header(f: BinaryIO, fmt_: str) -> tuple[list[str], int, bool]:
    """(columns, byte offset of the first record, headerless) of a csv/tsv stream."""
    lines = _Lines(f)
    for fields in csv.reader(iter(lines), delimiter="\t" if fmt_ == "tsv" else ","):
        if not fields:
            continue
        if any("://" in x for x in fields):  # headerless (CC3M: caption<TAB>url)
            return [f"col{i}" for i in range(len(fields))], 0, True
        return fields, lines.offset, False
    return [], lines.offset, False


class _UidCheck:
    """Empty and duplicate values of one column over a stream, in 8 bytes of memory per row."""

    def __init__(self, col: str, path: str):
        self.col, self.path = col, path
        self.hashes: list[np.ndarray] = []
        self._buf: list[int] = []
        self.first_empty: int | None = None

    def add(self, value: Any, row: int) -> None:
        if value is None or str(value) == "":
            if self.first_empty is None:
                self.first_empty = row
            return
        self._buf.append(hash(str(value)))
        if len(self._buf) >= _BATCH:
            self.hashes.append(np.array(self._buf, dtype=np.int64))
            self._buf = []

    def suspects(self) -> set[int]:
        """Raise on an empty value; return the hashes seen more than once (maybe collisions)."""
        if self.first_empty is not None:
            raise InputError(f"{self.path}: row {self.first_empty + 1} has an empty {self.col!r}")
        if self._buf:
            self.hashes.append(np.array(self._buf, dtype=np.int64))
            self._buf = []
        if not self.hashes:
            return set()
        h = np.sort(np.concatenate(self.hashes))
        self.hashes = []
        return set(h[1:][h[1:] == h[:-1]].tolist())


def _confirm_duplicates(col: str, path: str, suspects: set[int], values: Iterator[tuple[Any, int]]) -> None:
    """Second pass over the uids whose hashes collide: raise on a real duplicate."""
    first: dict[str, int] = {}
    for value, row in values:
        v = str(value)
        if hash(v) in suspects:
            if v in first:
                raise InputError(f"{path}: duplicate {col} {v!r} (rows {first[v] + 1} and {row + 1})")
            first[v] = row


# -- planning -------------------------------------------------------------------------------
def _columns(cfg: DownloadConfig, cols: list[str], first: dict | None, path: str) -> dict[str, Any]:
    h_url, h_cap = _headerless(cols, first)
    url_col = _pick(cols, cfg.url_col or h_url, URL_COLS, "URL", path, required=True)
    cap_col = _pick(cols, cfg.caption_col or h_cap, CAPTION_COLS, "caption", path, required=False)
    uid_col = _pick(cols, cfg.uid_col, UID_COLS, "uid", path, required=False)
    missing = [c for c in cfg.keep_columns if c not in cols]
    if missing:
        raise InputError(f"{path}: --keep-columns names missing column(s) {', '.join(missing)}")
    keep = list(cfg.keep_columns) + [c for c in ("doc_id", "position") if c in cols and c not in cfg.keep_columns]
    clash = [c for c in keep if c in _RESERVED]
    if clash:
        raise InputError(f"{path}: cannot keep column(s) {', '.join(clash)}: the download stage writes them")
    return {"url": url_col, "caption": cap_col, "uid": uid_col, "keep": keep}


def plan_input(cfg: DownloadConfig, storage_options: dict | None = None) -> tuple[list[ShardSpec], str, dict]:
    """Stream the input once and split it into shard specs of ``samples_per_shard`` records
    (documents are not split: an MMC4 shard ends at the first document boundary at or past it).

    Returns (specs, content fingerprint, stats). Raises InputError before anything is written.
    """
    path = cfg.input
    fmt_ = cfg.input_format if cfg.input_format != "auto" else detect_format(path)
    if fmt_ == "parquet":
        return _plan_parquet(cfg, path, storage_options)
    return _plan_text(cfg, path, fmt_, storage_options)


def _plan_parquet(cfg: DownloadConfig, path: str, so: dict | None) -> tuple[list[ShardSpec], str, dict]:
    h = hashlib.sha256()
    with _open(path, so) as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    with _open(path, so) as f:
        try:
            pf = pq.ParquetFile(f)
        except Exception as e:
            raise InputError(f"{path}: unreadable Parquet ({e})") from None
        total = pf.metadata.num_rows
        cols = pf.schema_arrow.names
        if total == 0:
            raise InputError(f"{path}: input is empty (no records)")
        first = None
        if cols and cols[0].startswith("col"):  # only a headerless-looking schema needs a first row
            first = next(pf.iter_batches(batch_size=1)).to_pylist()[0]
        columns = _columns(cfg, cols, first, path)
        if columns["uid"]:
            check = _UidCheck(columns["uid"], path)
            row = 0
            for batch in pf.iter_batches(batch_size=_BATCH, columns=[columns["uid"]]):
                for v in batch.column(0).to_pylist():
                    check.add(v, row)
                    row += 1
            suspects = check.suspects()
            if suspects:
                def values() -> Iterator[tuple[Any, int]]:
                    r = 0
                    for b in pf.iter_batches(batch_size=_BATCH, columns=[columns["uid"]]):
                        for v in b.column(0).to_pylist():
                            yield v, r
                            r += 1
                _confirm_duplicates(columns["uid"], path, suspects, values())
    n = cfg.samples_per_shard
    specs = [{"shard": i, "source": {"path": path, "format": "parquet", "start": start,
                                     "stop": min(start + n, total), "columns": columns,
                                     "storage_options": so or {}}}
             for i, start in enumerate(range(0, total, n))]
    return specs, h.hexdigest()[:16], {"records": total}


def _plan_text(cfg: DownloadConfig, path: str, fmt_: str, so: dict | None) -> tuple[list[ShardSpec], str, dict]:
    base = "jsonl" if fmt_ == "mmc4" else fmt_
    header: list[str] | None = None
    begin = 0
    if base in ("csv", "tsv"):
        with _open(path, so) as f:
            header, begin, _ = _csv_header(f, base)
    hasher = hashlib.sha256()
    stats: dict[str, Any] = {}
    cols: list[str] = list(header or (["url"] if base == "txt" else []))
    seen_cols: set[str] = set(cols)
    first: dict | None = None
    documents = fmt_ == "mmc4"
    # uids are checked for every column that may turn out to be the uid column
    checks = {c: _UidCheck(c, path) for c in ([cfg.uid_col] if cfg.uid_col else list(UID_COLS))}
    bounds: list[tuple[int, int, int, int]] = []  # (byte start, byte end, first record, first doc)
    records = docs = 0
    shard_start, shard_rec, shard_doc = begin, 0, 0
    with _open(path, so) as f:
        lines = _Lines(f, offset=begin, hasher=hasher)
        if begin:  # the header line: hashed, not a record
            hasher.update(f.read(begin))
            lines.number = 1
        for rec, end in _records_text(base, lines, header, path):
            if first is None:
                first = rec
                documents = documents or (base == "jsonl" and ("image_info" in rec or "images" in rec))
            if documents:
                n_rec = len(flatten_documents([rec], path, docs))
                docs += 1
            else:
                n_rec = 1
                if base == "jsonl":
                    for k in rec:
                        if k not in seen_cols:
                            seen_cols.add(k)
                            cols.append(k)
                for c, check in checks.items():
                    check.add(rec.get(c), records)
            records += n_rec
            if records - shard_rec >= cfg.samples_per_shard:
                bounds.append((shard_start, end, shard_rec, shard_doc))
                shard_start, shard_rec, shard_doc = end, records, docs
        if records > shard_rec:
            bounds.append((shard_start, lines.offset, shard_rec, shard_doc))
        if lines.invalid:
            stats["invalid_utf8_chars"] = lines.invalid
    if documents:
        cols, first = ["url", "caption", "doc_id", "position"], None
    if records == 0:
        raise InputError(f"{path}: input is empty (no records)")
    columns = _columns(cfg, cols, first, path)
    src = {"path": path, "format": base, "documents": documents, "header": header, "columns": columns,
           "storage_options": so or {}}
    if columns["uid"] and not documents:
        suspects = checks[columns["uid"]].suspects()
        if suspects:
            def values() -> Iterator[tuple[Any, int]]:
                for i, r in enumerate(_iter_source({**src, "byte_start": begin, "byte_end": None, "start": 0,
                                                    "first_doc": 0}, raw=True)):
                    yield r.get(columns["uid"]), i
            _confirm_duplicates(columns["uid"], path, suspects, values())
    specs = [{"shard": i, "source": {**src, "byte_start": b0, "byte_end": b1, "start": r0, "first_doc": d0}}
             for i, (b0, b1, r0, d0) in enumerate(bounds)]
    stats["records"] = records
    return specs, hasher.hexdigest()[:16], stats


# -- reading one shard (in the task) --------------------------------------------------------
def _iter_source(src: dict, raw: bool = False) -> Iterator[dict[str, Any]]:
    """The raw input rows (``raw``) or flattened records of one text source range."""
    with _open(src["path"], src.get("storage_options")) as f:
        _seek(f, src["byte_start"])
        lines = _Lines(f, offset=src["byte_start"], end=src["byte_end"])
        doc = src.get("first_doc", 0)
        for rec, _ in _records_text(src["format"], lines, src.get("header"), src["path"]):
            if src.get("documents") and not raw:
                yield from flatten_documents([rec], src["path"], doc)
                doc += 1
            else:
                yield rec


def _rows_parquet(src: dict) -> list[dict[str, Any]]:
    c = src["columns"]
    want = [x for x in dict.fromkeys([c["url"], c["caption"], c["uid"], *c["keep"]]) if x]
    with _open(src["path"], src.get("storage_options")) as f:
        pf = pq.ParquetFile(f)
        groups, row0, at = [], None, 0
        for g in range(pf.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if at + n > src["start"] and at < src["stop"]:
                groups.append(g)
                row0 = at if row0 is None else row0
            at += n
        table = pf.read_row_groups(groups, columns=want)
    assert row0 is not None
    return table.slice(src["start"] - row0, src["stop"] - src["start"]).to_pylist()


def read_shard(spec: ShardSpec) -> list[dict[str, Any]]:
    """The normalised records of one planned shard (runs in the task; reads only its range)."""
    src = spec["source"]
    rows = _rows_parquet(src) if src["format"] == "parquet" else list(_iter_source(src))
    c = src["columns"]
    return _normalise(rows, c["url"], c["caption"], c["uid"], c["keep"], src["start"])


def load_records(cfg: DownloadConfig, storage_options: dict | None = None) -> tuple[list[dict[str, Any]], str, dict]:
    """Every record of the input: (records, fingerprint, stats). For tests and small inputs;
    the stage uses :func:`plan_input` + :func:`read_shard` and never holds all rows."""
    specs, fp, stats = plan_input(cfg, storage_options)
    return [r for spec in specs for r in read_shard(spec)], fp, stats


_RESERVED = {"uid", "key", "shard", "tar_offset", "tar_size", "url", "caption", "status", "error", "width",
             "height", "original_width", "original_height", "sha256", "image_ext", "original_size", "final_url"}


def _normalise(rows: list[dict], url_col: str, cap_col: str | None, uid_col: str | None, keep: list[str],
               start: int) -> list[dict[str, Any]]:
    """Records ``{uid, url, caption, *keep}``; ``start`` is the index of ``rows[0]`` in the input.

    uids: the input's uid column when there is one (checked unique and non-empty by the plan),
    otherwise ``sha256(url, row index)`` - stable across reruns and unique within the dataset.
    """
    out = []
    for j, r in enumerate(rows):
        url = r.get(url_col)
        url = None if url is None else str(url).strip()
        cap = r.get(cap_col) if cap_col else None
        if uid_col:
            uid = str(r.get(uid_col))
        else:
            uid = hashlib.sha256(f"{url}\x00{start + j}".encode("utf-8", "replace")).hexdigest()[:24]
        rec = {"uid": uid, "url": url, "caption": None if cap is None else str(cap)}
        for k in keep:
            rec[k] = r.get(k)
        out.append(rec)
    return out
