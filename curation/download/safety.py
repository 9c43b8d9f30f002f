"""Address policy for fetching from the open web (DESIGN.md 5.5).

* every DNS answer must be a global address unless the private network is allowed
  explicitly; the connection then goes to the checked address (no second lookup that a
  rebinding DNS server could answer differently);
* IPv6 addresses that carry an IPv4 address (6to4 ``2002::/16``, Teredo ``2001::/32``,
  NAT64 ``64:ff9b::/96``, IPv4-mapped ``::ffff:0:0/96``) are judged by the IPv4 address
  they lead to, so ``2002:7f00:1::`` is loopback, not "global";
* the DNS lookup has a time limit (it runs on a helper thread, because ``getaddrinfo``
  cannot be interrupted).

URL syntax (schemes, normalisation) lives in :mod:`curation.download.urls`; opt-out
directives in :mod:`curation.download.robots`.
"""
from __future__ import annotations

import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from curation import status as st

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_DNS_POOL = ThreadPoolExecutor(max_workers=64, thread_name_prefix="curation-dns")


class Refused(Exception):
    """A URL or hop the policy refuses; ``status`` is the curation status to record."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def embedded_ipv4(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address routes to (6to4, Teredo server+client, NAT64,
    IPv4-mapped); empty for plain addresses."""
    if not isinstance(addr, ipaddress.IPv6Address):
        return []
    if addr.ipv4_mapped is not None:
        return [addr.ipv4_mapped]
    if addr.sixtofour is not None:
        return [addr.sixtofour]
    if addr.teredo is not None:
        return list(addr.teredo)
    if addr in _NAT64:
        return [ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)]
    return []


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
        """True when ``ip`` may be connected to (an address carrying IPv4 is allowed only
        when every IPv4 address it carries is)."""
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
        if self.allow_all or any(addr in n for n in self.networks):
            return True
        inner = embedded_ipv4(addr)
        if inner:
            return all(self.allowed(str(a)) for a in inner)
        if addr.is_multicast or addr.is_unspecified or addr.is_reserved:
            return False
        return addr.is_global

    def resolve(self, host: str, port: int, timeout: float | None = None) -> str:
        """Resolve ``host`` within ``timeout`` seconds and return one address to connect to;
        every answer must be allowed.

        Raises:
            Refused: ``blocked_address``; ``connection_error`` on DNS failure; ``timeout``
                when the lookup takes longer than ``timeout``.
        """
        try:  # an IP literal needs no lookup
            ips = [str(ipaddress.ip_address(host.strip("[]")))]
        except ValueError:
            ips = self._lookup(host, port, timeout)
        bad = [ip for ip in ips if not self.allowed(ip)]
        if bad or not ips:
            raise Refused(st.BLOCKED_ADDRESS, f"{host} resolves to non-public address {bad[0] if bad else '?'} "
                                              "(set allow_private_networks to allow it)")
        return ips[0]

    @staticmethod
    def _lookup(host: str, port: int, timeout: float | None) -> list[str]:
        fut = _DNS_POOL.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        try:
            infos = fut.result(timeout=timeout)
        except FutureTimeout:
            fut.cancel()
            raise Refused(st.TIMEOUT, f"DNS lookup for {host} took longer than {timeout:.1f}s") from None
        except (socket.gaierror, UnicodeError, OSError) as e:
            raise Refused(st.CONNECTION_ERROR, f"DNS lookup failed for {host}: {e}") from None
        ips: list[str] = []
        for info in infos:
            ip = str(info[4][0])
            if ip not in ips:
                ips.append(ip)
        return ips
