"""No credentials at rest: redact secrets before anything is written or logged.

:func:`redact` returns a copy of a JSON-like value in which

* every mapping value whose *key* looks like a secret (``key``, ``secret``, ``token``,
  ``password``, ``credential``, ``session``, ``auth``, ``signature``, ``cookie``, ... in
  any case or spelling: ``aws_secret_access_key``, ``sessionToken``, ``apiKey``) becomes
  ``"***"``;
* every URL string loses the password of its ``user:password@`` part and the values of
  query parameters whose names look like secrets (presigned ``X-Amz-Signature``,
  ``X-Amz-Credential``, ``token``, ``sig``, ...).

It is applied to ``run.json`` (the run record, including the pipeline spec and its
``storage_options``), to the stage configs that manifests record, and to what the report
shows; :class:`RedactingFilter` does the same for log records. Nothing else is changed:
fingerprints and config hashes are computed from the real values before redaction.
"""
from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"

_SUBSTRINGS = ("secret", "password", "passwd", "credential", "apikey", "accesskey", "privatekey",
               "signature", "cookie", "authorization", "bearer")
_TOKENS = {"key", "token", "auth", "session", "pwd", "pass", "sig", "jwt", "otp"}
# settings of this package whose names only look like secrets
_NOT_SECRET = {"user_agent_token", "key_mask", "sig_params", "max_new_tokens", "min_new_tokens"}
_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def is_secret_key(name: Any) -> bool:
    """True when a mapping key or parameter name looks like it holds a credential."""
    if not isinstance(name, str) or name in _NOT_SECRET:
        return False
    flat = re.sub(r"[^a-z0-9]", "", name.lower())
    if any(s in flat for s in _SUBSTRINGS) or flat.endswith("token"):
        return True
    return any(t.lower() in _TOKENS for t in _SPLIT.split(name) if t)


def redact_url(url: str) -> str:
    """``url`` without a userinfo password or secret-looking query parameter values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(is_secret_key(k) for k, _ in pairs):
            query = urlencode([(k, MASK if is_secret_key(k) else v) for k, v in pairs], safe="*")
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Every URL inside free text (an error message, a log line) passed through :func:`redact_url`."""
    return _URL.sub(lambda m: redact_url(m.group(0)), text) if "://" in text else text


def redact(obj: Any) -> Any:
    """A copy of ``obj`` (dicts, lists, tuples, strings, scalars) with secrets masked."""
    if isinstance(obj, dict):
        return {k: (MASK if is_secret_key(k) and v not in (None, "", {}, []) else redact(v)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v) for v in obj)
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


class RedactingFilter(logging.Filter):
    """A logging filter that masks URLs' credentials in messages and secret-keyed dict args."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_text(record.msg)
        if isinstance(record.args, dict):
            record.args = redact(record.args)
        elif isinstance(record.args, tuple):
            record.args = tuple(redact(a) for a in record.args)
        return True


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Attach :class:`RedactingFilter` to ``logger``'s handlers (default: the root and ``curation``)."""
    loggers = [logger] if logger is not None else [logging.getLogger(), logging.getLogger("curation")]
    for lg in loggers:
        if not any(isinstance(f, RedactingFilter) for f in lg.filters):
            lg.addFilter(RedactingFilter())
        for h in lg.handlers:
            if not any(isinstance(f, RedactingFilter) for f in h.filters):
                h.addFilter(RedactingFilter())


__all__ = ["MASK", "RedactingFilter", "install_log_filter", "is_secret_key", "redact", "redact_text", "redact_url"]
