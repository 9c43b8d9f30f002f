"""URL normalisation as browsers do it (the WHATWG URL Standard, via ``ada-url``).

Input URLs and ``Location`` headers are written by people and by broken servers: non-ASCII
paths (``/café.jpg``), Unicode host names, spaces, raw UTF-8 bytes in a redirect. A browser
turns each into one ASCII URL - IDNA (UTS #46) host, percent-encoded path and query, tabs and
newlines removed, default port dropped, fragment kept out of the request - and so do we,
before any I/O. What the standard cannot parse, or what is not ``http``/``https`` with a
host, is :class:`BadURL` (status ``bad_url``, not retryable: the same string fails the same
way every time).
"""
from __future__ import annotations

import ada_url

from curation import status as st
from curation.download.safety import Refused

ALLOWED_SCHEMES = ("http", "https")


class BadURL(Refused):
    """A URL that cannot be normalised, or is not http(s) with a host."""

    def __init__(self, message: str):
        super().__init__(st.BAD_URL, message)


def _check(url: ada_url.URL, shown: str) -> str:
    scheme = url.protocol.rstrip(":")
    if scheme not in ALLOWED_SCHEMES:
        raise BadURL(f"scheme {scheme or '(none)'!r} not allowed (http/https only): {shown[:200]}")
    if not url.hostname:
        raise BadURL(f"URL has no host: {shown[:200]}")
    url.hash = ""  # the fragment is never sent
    return url.href


def normalize(url: str | None) -> str:
    """The WHATWG-normalised, ASCII form of an absolute http(s) URL.

    Guarantees: the result has scheme ``http`` or ``https``, a non-empty ASCII host (IDNA
    A-labels, or an IP address in canonical form), a percent-encoded path and query, no
    fragment, and only printable ASCII characters.

    Raises:
        BadURL: empty, unparsable (e.g. an invalid IDNA label or port), not http(s), or no host.
    """
    if not isinstance(url, str) or not url.strip():
        raise BadURL("empty URL")
    try:
        parsed = ada_url.URL(url)
    except ValueError:
        raise BadURL(f"not a valid URL: {url[:200]!r}") from None
    return _check(parsed, url)


def decode_header(value: str) -> str:
    """A header value as its sender meant it: ``http.client`` decodes header bytes as
    Latin-1, but servers send raw UTF-8 in ``Location``; undo that when the bytes are valid
    UTF-8 (browsers do the same), otherwise keep the Latin-1 reading."""
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:
        return value
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return value


def resolve(base: str, location: str) -> str:
    """Resolve a redirect ``Location`` against the URL that answered, then normalise.

    Raises:
        BadURL: the resolved URL is not a valid http(s) URL.
    """
    location = decode_header(location).strip()
    if not location:
        raise BadURL("redirect with an empty Location")
    try:
        joined = ada_url.join_url(base, location)
        parsed = ada_url.URL(joined)
    except ValueError:
        raise BadURL(f"redirect to an invalid URL: {location[:200]!r}") from None
    return _check(parsed, location)


def origin(url: str) -> str:
    """``scheme://host:port`` of a normalised URL (port always explicit)."""
    parsed = ada_url.URL(url)
    scheme = parsed.protocol.rstrip(":")
    port = parsed.port or ("443" if scheme == "https" else "80")
    return f"{scheme}://{parsed.hostname}:{port}"


def split(url: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, request target)`` of a URL, normalising it first.

    The host has no brackets (``::1`` for ``[::1]``); the target is path plus query.

    Raises:
        BadURL: as :func:`normalize`.
    """
    parsed = ada_url.URL(normalize(url))
    scheme = parsed.protocol.rstrip(":")
    port = int(parsed.port) if parsed.port else (443 if scheme == "https" else 80)
    return scheme, parsed.hostname.strip("[]"), port, (parsed.pathname or "/") + parsed.search
