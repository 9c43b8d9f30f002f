"""Reading download inputs into normalised records ``{uid, url, caption, ...kept columns}``.

Formats: URL lists (parquet, csv, tsv, jsonl, txt) with LAION (``URL``/``TEXT``), DataComp
(``url``/``text``/``uid``) or explicit column names; headerless CC3M-style TSV
(caption<TAB>url); MMC4/OBELICS interleaved documents (jsonl) flattened to image-text pairs;
and WebDataset tars (see :mod:`curation.download.wds`). Every problem with the input is a
:class:`~curation.errors.CurationError` naming the file and what is wrong, raised before
anything is written.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.download.config import DownloadConfig
from curation.errors import CurationError
from curation.io.fs import get_fs

URL_COLS = ("url", "URL", "image_url", "img_url", "raw_url")
CAPTION_COLS = ("caption", "text", "TEXT", "alt_text", "alt", "title", "TITLE")
UID_COLS = ("uid", "UID")


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


def read_bytes(path: str, storage_options: dict | None = None) -> bytes:
    try:
        fs, p = get_fs(path, storage_options)
        data = fs.cat_file(p)
    except FileNotFoundError:
        raise InputError(f"{path}: input file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a URL list file") from None
    except Exception as e:
        raise InputError(f"{path}: unreadable input ({type(e).__name__}: {e})") from None
    if path.lower().endswith(".gz"):
        import gzip

        data = gzip.decompress(data)
    return data


def fingerprint(data: bytes) -> str:
    """Content hash of the input (so a changed input under an existing output is detected)."""
    return hashlib.sha256(data).hexdigest()[:16]


def _decode(data: bytes, path: str, stats: dict) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Keep every record: invalid bytes become U+FFFD and the count is reported.
        text = data.decode("utf-8", "replace")
        stats["invalid_utf8_chars"] = text.count("\ufffd")
        return text


def _table_from_text(fmt_: str, text: str, path: str) -> tuple[list[str], list[dict[str, Any]]]:
    if fmt_ == "txt":
        rows = [{"url": line.strip()} for line in text.splitlines() if line.strip() and not line.startswith("#")]
        return ["url"], rows
    if fmt_ == "jsonl":
        rows = []
        for i, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}: line {i + 1} is not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}: line {i + 1} is not a JSON object")
            rows.append(obj)
        cols: list[str] = []
        for r in rows:
            cols.extend(k for k in r if k not in cols)
        return cols, rows
    delim = "\t" if fmt_ == "tsv" else ","
    lines = list(csv.reader(io.StringIO(text), delimiter=delim))
    lines = [ln for ln in lines if ln]
    if not lines:
        return [], []
    first = lines[0]
    if any("://" in f for f in first):  # headerless (CC3M: caption<TAB>url)
        cols = [f"col{i}" for i in range(len(first))]
        body = lines
    else:
        cols, body = first, lines[1:]
    return cols, [dict(zip(cols, ln)) for ln in body]


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


def _headerless(cols: list[str], rows: list[dict]) -> tuple[str | None, str | None]:
    """URL column = the one whose first value has ``://``; caption = the first other one."""
    if not rows or not cols or not cols[0].startswith("col"):
        return None, None
    url = next((c for c in cols if "://" in str(rows[0].get(c, ""))), None)
    cap = next((c for c in cols if c != url), None)
    return url, cap


def flatten_documents(docs: list[dict[str, Any]], path: str) -> list[dict[str, Any]]:
    """MMC4 (``text_list`` + ``image_info[{raw_url, matched_text_index}]``) or OBELICS
    (aligned ``texts``/``images`` lists with nulls) documents -> one record per image,
    keeping ``doc_id`` and ``position``; the caption is the matched or nearest text."""
    out = []
    for i, doc in enumerate(docs):
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


def load_records(cfg: DownloadConfig, storage_options: dict | None = None) -> tuple[list[dict[str, Any]], str, dict]:
    """Read a URL list or document file into records with ``uid``, ``url``, ``caption``
    (plus ``keep_columns`` / ``doc_id``, ``position``). Returns (records, fingerprint, stats).

    uids: the input's uid column when there is one (duplicates are refused), otherwise
    ``sha256(url, row index)`` - stable across reruns and unique within the dataset.
    """
    path = cfg.input
    fmt_ = cfg.input_format if cfg.input_format != "auto" else detect_format(path)
    data = read_bytes(path, storage_options)
    fp = fingerprint(data)
    stats: dict[str, Any] = {}
    if fmt_ == "parquet":
        try:
            table = pq.read_table(pa.BufferReader(data))
        except Exception as e:
            raise InputError(f"{path}: unreadable Parquet ({e})") from None
        cols, rows = table.column_names, table.to_pylist()
    else:
        cols, rows = _table_from_text("jsonl" if fmt_ == "mmc4" else fmt_, _decode(data, path, stats), path)
    if fmt_ == "mmc4" or (fmt_ == "jsonl" and rows and ("image_info" in rows[0] or "images" in rows[0])):
        rows, cols = flatten_documents(rows, path), ["url", "caption", "doc_id", "position"]
    if not rows:
        raise InputError(f"{path}: input is empty (no records)")
    h_url, h_cap = _headerless(cols, rows)
    url_col = _pick(cols, cfg.url_col or h_url, URL_COLS, "URL", path, required=True)
    cap_col = _pick(cols, cfg.caption_col or h_cap, CAPTION_COLS, "caption", path, required=False)
    uid_col = _pick(cols, cfg.uid_col, UID_COLS, "uid", path, required=False)
    missing = [c for c in cfg.keep_columns if c not in cols]
    if missing:
        raise InputError(f"{path}: --keep-columns names missing column(s) {', '.join(missing)}")
    extra = [c for c in ("doc_id", "position") if c in cols and c not in cfg.keep_columns]
    return _normalise(rows, url_col, cap_col, uid_col, list(cfg.keep_columns) + extra, path), fp, stats


_RESERVED = {"uid", "key", "shard", "tar_offset", "tar_size", "url", "caption", "status", "error", "width",
             "height", "original_width", "original_height", "sha256", "image_ext", "original_size", "final_url"}


def _normalise(rows, url_col, cap_col, uid_col, keep, path) -> list[dict[str, Any]]:
    clash = [c for c in keep if c in _RESERVED]
    if clash:
        raise InputError(f"{path}: cannot keep column(s) {', '.join(clash)}: the download stage writes them")
    out, seen = [], {}
    for i, r in enumerate(rows):
        url = r.get(url_col)
        url = None if url is None else str(url).strip()
        cap = r.get(cap_col) if cap_col else None
        if uid_col:
            uid = r.get(uid_col)
            if uid is None or str(uid) == "":
                raise InputError(f"{path}: row {i + 1} has an empty {uid_col!r}")
            uid = str(uid)
            if uid in seen:
                raise InputError(f"{path}: duplicate {uid_col} {uid!r} (rows {seen[uid] + 1} and {i + 1})")
            seen[uid] = i
        else:
            uid = hashlib.sha256(f"{url}\x00{i}".encode("utf-8", "replace")).hexdigest()[:24]
        rec = {"uid": uid, "url": url, "caption": None if cap is None else str(cap)}
        for c in keep:
            rec[c] = r.get(c)
        out.append(rec)
    return out
