"""Outbound HTTP: only to hosts on the administrator's allow-list, never to an internal address.

    check(url) ── scheme http(s)? ── host listed (outbound_hosts)? ── every address the host
    resolves to public (or the entry says allow_private)? ──▶ request, redirects refused

What a failure stores is one of :data:`ERRORS` — words without an address, a port, a body or the
exception's text — so a definition author reading a run's errors (``/admin/flows``, the HIS
API) cannot tell an open port from a closed one or read an internal service's answer.

The name is resolved and checked just before the request; httpx resolves it again to connect
(a DNS answer changing in between is the remaining window — list hosts whose DNS you control).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine.clock import now_utc
from careloop.engine.errors import CareloopError
from careloop.flows.models import OutboundHost

NOT_LISTED = "host not on the allow-list"
PRIVATE = "address not allowed"
BAD_URL = "not an http(s) address"
CONNECTION = "connection failed"
REDIRECT = "redirect refused"
ERRORS = (NOT_LISTED, PRIVATE, BAD_URL, CONNECTION, REDIRECT)  # and "HTTP <status>"

Resolver = Callable[[str, int], list[str]]


class EgressRefused(CareloopError):
    """An outbound call that may not be made or failed; ``str()`` is safe to store and show."""


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    allow_private: bool


def normal_host(host: str) -> str:
    """The host as stored on the allow-list: lower case, no trailing dot, IPv6 without []."""
    return host.strip().strip("[]").rstrip(".").lower()


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (an IP literal is itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise EgressRefused(CONNECTION) from exc
    return sorted({str(info[4][0]) for info in infos})


def is_public(address: str) -> bool:
    """False for loopback, private, link-local, shared (CGNAT), multicast, reserved and
    unspecified addresses, IPv4-mapped IPv6 included."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(ip.is_global) and not ip.is_multicast


def listed(session: Session, host: str) -> OutboundHost | None:
    return session.scalars(select(OutboundHost).where(
        OutboundHost.host == normal_host(host))).first()


def check(session: Session, url: str, resolver: Resolver = resolve) -> Target:
    """The target of ``url`` when a call to it is allowed, else :class:`EgressRefused`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EgressRefused(BAD_URL)
    host = normal_host(parts.hostname)
    entry = listed(session, host)
    if entry is None:
        raise EgressRefused(NOT_LISTED)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise EgressRefused(BAD_URL) from exc
    addresses = resolver(host, port)
    if not addresses:
        raise EgressRefused(CONNECTION)
    if not entry.allow_private and not all(is_public(a) for a in addresses):
        raise EgressRefused(PRIVATE)
    return Target(host, port, entry.allow_private)


def send(method: str, url: str, *, body: Any, headers: dict[str, str],
         timeout: float | httpx.Timeout, transport: httpx.BaseTransport | None = None) -> int:
    """The HTTP part of a call already :func:`check`-ed (no database session is needed, so none
    is held open while it runs); returns the 2xx status. Raises :class:`EgressRefused` with one
    of :data:`ERRORS` or ``HTTP <status>``: a redirect is refused whatever its target."""
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False, transport=transport,
                          trust_env=False) as client:
            response = client.request(method, url, json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise EgressRefused(CONNECTION) from exc
    if 300 <= response.status_code < 400:
        raise EgressRefused(REDIRECT)
    if response.status_code >= 400 or response.status_code < 200:
        raise EgressRefused(f"HTTP {response.status_code}")
    return response.status_code


def request(session: Session, method: str, url: str, *, body: Any, headers: dict[str, str],
            timeout: float | httpx.Timeout, resolver: Resolver = resolve,
            transport: httpx.BaseTransport | None = None) -> int:
    """:func:`check` then :func:`send`."""
    check(session, url, resolver)
    return send(method, url, body=body, headers=headers, timeout=timeout, transport=transport)


# --- the allow-list ---------------------------------------------------------------------------


def allow(session: Session, host: str, *, allow_private: bool = False, note: str | None = None,
          actor: str | None = None) -> OutboundHost:
    """Add (or update) a host on the allow-list."""
    name = normal_host(host)
    if not name or "/" in name or (":" in name and not _is_ip(name)) or " " in name:
        raise EgressRefused(f"not a host name: {host!r}")
    row = listed(session, name)
    if row is None:
        row = OutboundHost(host=name, added_at=now_utc())
        session.add(row)
    row.allow_private, row.note, row.added_by = allow_private, note, actor
    session.flush()
    return row


def disallow(session: Session, host: str) -> bool:
    row = listed(session, host)
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True


def allowed_hosts(session: Session) -> list[OutboundHost]:
    return list(session.scalars(select(OutboundHost).order_by(OutboundHost.host)))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
