"""Safety policy for fetching from the open web (DESIGN.md 5.5).

* only ``http``/``https`` URLs with a host are fetched (``file:``, ``ftp:``, ``data:``... are
  rejected before any I/O);
* every DNS answer must be a global address unless the private network is allowed
  explicitly; the connection then goes to the checked address (no second lookup that a
  rebinding DNS server could answer differently);
* ``X-Robots-Tag`` opt-outs are honoured (img2dataset's directives plus ``noml``).
"""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

ALLOWED_SCHEMES = ("http", "https")


class Refused(Exception):
    """A URL or hop the policy refuses; ``status`` is the curation status to record."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def parse_url(url: str | None) -> tuple[str, str, int, str]:
    """Split an http(s) URL into ``(scheme, host, port, path_and_query)``.

    Raises Refused(``bad_url``) for anything else (no I/O happens for such URLs).
    """
    if not isinstance(url, str) or not url.strip():
        raise Refused("bad_url", "empty URL")
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise Refused("bad_url", f"malformed URL: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise Refused("bad_url", f"scheme {scheme or '(none)'!r} not allowed (http/https only)")
    if not parts.hostname:
        raise Refused("bad_url", "URL has no host")
    if any(c in url for c in "\r\n\t "):
        raise Refused("bad_url", "URL contains whitespace or control characters")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80), path


class AddressPolicy:
    """Decides which resolved addresses may be connected to.

    Args:
        allow_private: True allows every address; a list of CIDR networks allows those
            in addition to global addresses; False allows global addresses only.
    """

    def __init__(self, allow_private: bool | list[str] = False):
        self.allow_all = allow_private is True
        self.networks = [ipaddress.ip_network(n, strict=False) for n in (allow_private or [])] \
            if isinstance(allow_private, list) else []

    def allowed(self, ip: str) -> bool:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
        if self.allow_all:
            return True
        if any(addr in n for n in self.networks):
            return True
        if addr.is_multicast or addr.is_unspecified or addr.is_reserved:
            return False
        return addr.is_global

    def resolve(self, host: str, port: int) -> str:
        """Resolve ``host`` and return one address to connect to; every answer must be allowed.

        Raises Refused(``blocked_address``) or Refused(``connection_error``) on DNS failure.
        """
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as e:
            raise Refused("connection_error", f"DNS lookup failed for {host}: {e}") from None
        ips = []
        for info in infos:
            ip = info[4][0]
            if ip not in ips:
                ips.append(ip)
        bad = [ip for ip in ips if not self.allowed(ip)]
        if bad or not ips:
            raise Refused("blocked_address", f"{host} resolves to non-public address {bad[0] if bad else '?'} "
                                             "(set allow_private_networks to allow it)")
        return ips[0]


def opted_out(header_values: list[str], ua_token: str, directives: list[str]) -> str | None:
    """The ``X-Robots-Tag`` directive that opts this crawler out, or None.

    A value may be scoped to a user agent (``otherbot: noai``): it applies when the
    token is ours or absent, as img2dataset does.
    """
    for value in header_values:
        scoped = value.split(":", 1)
        token = scoped[0].strip().lower() if len(scoped) == 2 else None
        if token is not None and token not in (ua_token.lower(), "*"):
            continue
        for d in scoped[-1].split(","):
            if d.strip().lower() in directives:
                return d.strip().lower()
    return None
