"""Hash lists supplied by users: parsing, validation and the in-memory form matched against.

A list file is either

* one hash a line (blank lines and ``#`` comments ignored), optionally prefixed ``kind:``
  (``sha256:``, ``md5:``, ``pdq:``); without a prefix 32 hex digits are MD5 and 64 hex digits
  are taken as both SHA-256 and PDQ (the two forms have the same length; an accidental PDQ
  match of a SHA-256 value within 31 of 256 bits has probability below 1e-30), or
* CSV with a header naming a ``hash`` column and optionally a ``kind`` column.

A list's name is ``NAME`` when given as ``NAME=PATH``, else the file name without extension;
it is what a blocked row's ``blocklist`` column and the stats report. Files are read with
fsspec, so ``s3://`` and ``gs://`` lists work. Any bad line is a one-line :class:`BlocklistError`
naming the file, the line and the value.
"""
from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, TypeVar

import numpy as np

from curation.blocklist.pdq import PDQ_HEX, from_hex
from curation.errors import ConfigError

KINDS = ("sha256", "md5", "pdq")
_HEX = re.compile(r"^[0-9a-f]+$")
_LENGTH = {"sha256": 64, "md5": 32, "pdq": PDQ_HEX}
T = TypeVar("T")


class BlocklistError(ConfigError):
    """A blocklist file is missing or has a malformed line (names the file and line)."""


@dataclass
class HashList:
    """One named list: exact digests and a PDQ table (N x 32 bytes)."""

    name: str
    source: str
    sha256: set[str] = field(default_factory=set)
    md5: set[str] = field(default_factory=set)
    pdq: np.ndarray = field(default_factory=lambda: np.zeros((0, 32), dtype=np.uint8))

    @property
    def size(self) -> int:
        return len(self.sha256) + len(self.md5) + len(self.pdq)


def split_spec(spec: str) -> tuple[str, str]:
    """``NAME=PATH`` or ``PATH`` -> (name, path)."""
    name, sep, path = spec.partition("=")
    if sep and name and "/" not in name and ":" not in name:
        return name, path
    base = os.path.basename(spec.rstrip("/"))
    return (base.split(".", 1)[0] or base), spec


def _on_file(path: str, op: Callable[[Any, str], T]) -> T:
    """``op(fs, fs_path)`` on the blocklist file at ``path`` (any fsspec URL); a missing file or
    a directory is a :class:`BlocklistError` naming ``path``."""
    from curation.io.fs import get_fs

    fs, p = get_fs(path, None)
    try:
        return op(fs, p)
    except FileNotFoundError:
        raise BlocklistError(f"{path}: blocklist file not found") from None
    except IsADirectoryError:
        raise BlocklistError(f"{path}: blocklist is a directory, expected a file") from None


def _read_text(path: str) -> str:
    raw = _on_file(path, lambda fs, p: fs.cat_file(p))
    try:
        return raw.decode("utf-8-sig") if isinstance(raw, bytes) else str(raw)
    except UnicodeDecodeError:
        raise BlocklistError(f"{path}: blocklist is not UTF-8 text") from None


def _entries(text: str, path: str) -> list[tuple[int, str | None, str]]:
    """(line number, kind or None, value) for every hash in the file."""
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), "")
    header = [c.strip().lower() for c in first.split(",")]
    if "hash" in header:
        reader = csv.DictReader(io.StringIO(text))
        reader.fieldnames = [(f or "").strip().lower() for f in reader.fieldnames or []]
        out = []
        for row in reader:
            value = (row.get("hash") or "").strip()
            if not value:
                continue
            kind = (row.get("kind") or "").strip().lower() or None
            out.append((reader.line_num, kind, value))
        return out
    out = []
    for i, line in enumerate(lines, 1):
        s = line.split("#", 1)[0].strip()
        if not s:
            continue
        kind, sep, value = s.partition(":")
        out.append((i, kind.strip().lower(), value.strip()) if sep else (i, None, s))
    return out


def parse_list(name: str, path: str, text: str) -> HashList:
    """Parse one list's text (see the module docstring for the accepted forms)."""
    hl = HashList(name=name, source=path)
    pdq: list[np.ndarray] = []
    for line, kind, value in _entries(text, path):
        v = value.lower()
        where = f"{path}:{line}"
        if kind is not None and kind not in KINDS:
            raise BlocklistError(f"{where}: unknown hash kind {kind!r} (expected one of {', '.join(KINDS)})")
        if not _HEX.match(v):
            raise BlocklistError(f"{where}: not a hex digest: {value[:80]!r}")
        kinds = [kind] if kind else (["md5"] if len(v) == 32 else ["sha256", "pdq"] if len(v) == 64 else [])
        if not kinds or any(len(v) != _LENGTH[k] for k in kinds):
            want = f"{_LENGTH[kind]} hex digits for {kind}" if kind else "32 (md5) or 64 (sha256/pdq) hex digits"
            raise BlocklistError(f"{where}: {len(v)} hex digits, expected {want}: {value[:80]!r}")
        for k in kinds:
            if k == "pdq":
                pdq.append(from_hex(v))
            else:
                getattr(hl, k).add(v)
    if pdq:
        hl.pdq = np.unique(np.stack(pdq), axis=0)
    return hl


@lru_cache(maxsize=16)
def _load_cached(name: str, path: str, stamp: str) -> HashList:
    return parse_list(name, path, _read_text(path))


def _stamp(path: str) -> str:
    """Size + mtime (or ETag): a changed file is re-read, an unchanged one is parsed once per process."""
    info = _on_file(path, lambda fs, p: fs.info(p))
    return f"{info.get('size')}:{info.get('mtime') or info.get('ETag') or info.get('LastModified') or ''}"


def load_lists(specs: list[str] | tuple[str, ...]) -> list[HashList]:
    """Load every ``NAME=PATH`` / ``PATH`` spec (parsed once per process while unchanged).

    Raises:
        BlocklistError: a file is missing or malformed, or two lists share a name.
    """
    out: list[HashList] = []
    for spec in specs:
        name, path = split_spec(spec)
        if any(h.name == name for h in out):
            raise BlocklistError(f"{spec}: two blocklists are named {name!r}; name them NAME=PATH")
        out.append(_load_cached(name, path, _stamp(path)))
    return out


def write_list(path: str, entries: list[tuple[str, str]]) -> str:
    """Write a CSV list with ``hash,kind`` rows (the demo's and tests' list builder)."""
    with open(path, "w") as f:
        f.write("hash,kind\n")
        for h, k in entries:
            f.write(f"{h},{k}\n")
    return path
