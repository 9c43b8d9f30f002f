"""Opt-outs: robots.txt per RFC 9309 and ``X-Robots-Tag`` directives.

robots.txt (parsed by ``protego``: longest match wins, ``allow`` wins a tie, ``*`` and ``$``):

* fetched once per origin (``scheme://host:port``) for the whole run and shared by every task
  through the politeness service (:mod:`curation.cluster.limiter`), kept 24 hours at most;
* up to 5 redirects are followed, each hop re-checked by the address policy like any fetch;
* the first :data:`ROBOTS_PARSE_BYTES` (512 KiB) are parsed, a longer file is cut at its last
  complete line, not ignored;
* 2xx: the rules; 4xx (except 429) or more than 5 redirects: "unavailable", everything allowed;
  5xx, 429, network errors, timeouts or a refused redirect hop: "unreachable", everything
  disallowed (status ``robots_unreachable``, retryable) for a short TTL (``robots_error_ttl``)
  after which it is fetched again; the row's error says so. When our own address or URL policy
  refuses the origin itself, the image request is refused by the same policy and says so.

Both kinds of opt-out apply to our own token and to ``img2dataset`` (sites address the crawler
they know, and we run in its place): a URL is allowed only when the group for our token allows
it and, if the file has a group naming ``img2dataset`` explicitly, that group allows it too.
"""
from __future__ import annotations

import email.utils
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from protego import Protego

from curation import status as st

ROBOTS_PARSE_BYTES = 512 * 1024
ROBOTS_MAX_REDIRECTS = 5
ROBOTS_TTL = 24 * 3600.0  # RFC 9309 2.4: SHOULD NOT use a cached copy for more than 24 hours
IMG2DATASET_TOKEN = "img2dataset"

ALLOW_ALL, DISALLOW_ALL, RULES = "allow_all", "disallow_all", "rules"


@dataclass(frozen=True)
class RobotsEntry:
    """What one origin's robots.txt says, small and picklable (it is shared across tasks).

    Attributes:
        kind: ``rules`` (``text`` holds the file), ``allow_all`` or ``disallow_all``.
        text: the robots.txt text (at most :data:`ROBOTS_PARSE_BYTES` of it) for ``rules``.
        reason: why it is ``allow_all``/``disallow_all`` (shown in rows' errors).
        expires: wall-clock time (``time.time()``) after which it is fetched again.
    """

    kind: str
    text: str | None = None
    reason: str = ""
    expires: float = 0.0


def entry_from_body(body: bytes, ttl: float = ROBOTS_TTL) -> RobotsEntry:
    """A ``rules`` entry from a robots.txt body; bytes past :data:`ROBOTS_PARSE_BYTES` are
    dropped at the last complete line."""
    if len(body) > ROBOTS_PARSE_BYTES:
        body = body[:ROBOTS_PARSE_BYTES]
        cut = max(body.rfind(b"\n"), body.rfind(b"\r"))
        body = body[:cut + 1] if cut >= 0 else b""
    text = body.decode("utf-8", "replace").lstrip("\ufeff")
    return RobotsEntry(RULES, text, expires=time.time() + ttl)


class RobotsRules:
    """A parsed :class:`RobotsEntry` answering "may these tokens fetch this URL?"."""

    def __init__(self, entry: RobotsEntry):
        self.entry = entry
        self._parser = Protego.parse(entry.text or "") if entry.kind == RULES else None

    def _explicit_group(self, token: str) -> bool:
        rs = self._parser._get_matching_rule_set(token) if self._parser is not None else None
        return rs is not None and rs.user_agent != "*"

    def denial(self, url: str, token: str) -> tuple[str, str] | None:
        """``(status, why)`` when ``url`` may not be fetched by ``token`` (or ``img2dataset``),
        else None. Status ``robots_unreachable`` (retryable) when the file could not be read,
        ``robots_disallowed`` when its rules forbid the URL."""
        if self.entry.kind == ALLOW_ALL:
            return None
        if self.entry.kind == DISALLOW_ALL:
            return st.ROBOTS_UNREACHABLE, self.entry.reason or "robots.txt unreachable: everything disallowed"
        assert self._parser is not None
        if not self._parser.can_fetch(url, token):
            return st.ROBOTS_DISALLOWED, f"robots.txt disallows {url} for {token}"
        if token.lower() != IMG2DATASET_TOKEN and self._explicit_group(IMG2DATASET_TOKEN) \
                and not self._parser.can_fetch(url, IMG2DATASET_TOKEN):
            return st.ROBOTS_DISALLOWED, f"robots.txt disallows {url} for {IMG2DATASET_TOKEN}"
        return None


# -- X-Robots-Tag ---------------------------------------------------------------------------
# directives that carry a value after a colon (so "name: value" is not a user-agent scope)
VALUED_DIRECTIVES = frozenset({"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"})
_WORD = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_UA_TOKEN = re.compile(r"[A-Za-z0-9_.*-]+")


@dataclass(frozen=True)
class Directive:
    """One ``X-Robots-Tag`` directive: ``scope`` is the user-agent token it is addressed to
    (lower case) or None for everyone; ``value`` is set for valued directives."""

    scope: str | None
    name: str
    value: str | None = None


def parse_x_robots_tag(values: list[str]) -> list[Directive]:
    """Parse ``X-Robots-Tag`` header values as search engines do.

    ``otherbot: noindex, nofollow`` is scoped to ``otherbot``; ``noai, unavailable_after:
    2030-01-01`` is two unscoped directives (``unavailable_after`` takes a value, so its colon
    is not a scope); commas inside a date (``unavailable_after: Sunday, 01-Jan-30 ...``) stay
    in the value; a later ``bot: ...`` part in the same value starts a new scope.
    """
    out: list[Directive] = []
    for value in values:
        scope: str | None = None
        for raw in value.split(","):
            part = raw.strip()
            if not part:
                continue
            head, sep, rest = part.partition(":")
            name = head.strip().lower()
            if sep and name in VALUED_DIRECTIVES:
                out.append(Directive(scope, name, rest.strip()))
            elif sep and _UA_TOKEN.fullmatch(head.strip()) and not _continues_date(out, scope, part):
                scope = name
                inner = rest.strip().lower()
                if inner in VALUED_DIRECTIVES or not inner:
                    continue
                iname, isep, ival = inner.partition(":")
                if isep and iname.strip() in VALUED_DIRECTIVES:
                    out.append(Directive(scope, iname.strip(), rest.strip().partition(":")[2].strip()))
                elif _WORD.fullmatch(inner):
                    out.append(Directive(scope, inner))
            elif not sep and _WORD.fullmatch(name) and not _continues_date(out, scope, part):
                out.append(Directive(scope, name))
            elif out and out[-1].value is not None and out[-1].scope == scope:
                last = out.pop()  # a comma inside a date value
                out.append(Directive(last.scope, last.name, f"{last.value}, {part}"))
    return out


def _continues_date(out: list[Directive], scope: str | None, part: str) -> bool:
    """True when ``part`` continues an ``unavailable_after`` date broken at a comma
    (``Sunday, 01-Jan-30 00:00:00 GMT``): the previous value is a bare weekday."""
    if not out or out[-1].name != "unavailable_after" or out[-1].scope != scope or out[-1].value is None:
        return False
    return bool(re.fullmatch(r"[A-Za-z]{3,9}", out[-1].value)) and bool(re.match(r"\d", part))


def parse_http_date(value: str) -> datetime | None:
    """An ``unavailable_after`` date: RFC 822/850/1123, ISO 8601, or None when unparsable."""
    value = value.strip()
    try:
        d = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        d = None
    if d is None:
        for fmt in ("%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%d %b %Y %H:%M:%S %Z", "%A, %d-%b-%y %H:%M:%S %Z",
                    "%d %B %Y %H:%M:%S %Z", "%d %b %Y"):
            try:
                d = datetime.strptime(value, fmt)
                break
            except ValueError:
                continue
        else:
            try:
                d = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return None
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def opted_out(header_values: list[str], ua_token: str, directives: list[str],
              now: datetime | None = None) -> str | None:
    """The ``X-Robots-Tag`` directive that opts this crawler out, or None.

    A directive applies when it is unscoped or scoped to ``*``, ``ua_token`` or
    ``img2dataset``. It opts out when its name is in ``directives`` (lower case), when it is
    ``none`` and ``noindex`` is in ``directives``, or when it is ``unavailable_after`` with a
    date in the past.
    """
    now = now or datetime.now(timezone.utc)
    ours = {"*", ua_token.lower(), IMG2DATASET_TOKEN}
    for d in parse_x_robots_tag(header_values):
        if d.scope is not None and d.scope not in ours:
            continue
        if d.name in directives:
            return d.name
        if d.name == "none" and "noindex" in directives:
            return "none"
        if d.name == "unavailable_after" and d.value:
            when = parse_http_date(d.value)
            if when is not None and when <= now:
                return f"unavailable_after: {d.value}"
    return None
