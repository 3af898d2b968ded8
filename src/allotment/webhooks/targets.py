"""Where a webhook may be sent: an http(s) URL whose host resolves only to public addresses.

`check_url` is pure (the shape of the URL); `resolve` looks the host up and refuses it when
any of its addresses is private, loopback, link-local, multicast, reserved or unspecified,
unless private targets are allowed (ALLOTMENT_WEBHOOKS_ALLOW_PRIVATE); an IPv6 address that
carries an IPv4 one (IPv4-mapped, NAT64 64:ff9b::/96, 6to4 2002::/16, Teredo 2001::/32) is
judged by that IPv4 address as well. It runs when an
endpoint is created or its URL changed, and again before every delivery, which then connects
to the address it checked (so a name that re-resolves elsewhere meanwhile is not followed).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

MAX_URL_LENGTH = 2048


class TargetRefused(Exception):
    """The URL is not one a webhook may be sent to; the message says why."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int


NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052, the well-known prefix


def check_url(url: str) -> Target:
    """The URL's target, judged as the sender (httpx) will parse it; TargetRefused if not."""
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"at most {MAX_URL_LENGTH} characters")
    if url != url.strip():
        raise TargetRefused("must not start or end with spaces or line breaks")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in url):
        raise TargetRefused("must not contain control characters (line breaks, tabs, …)")
    try:
        parts = urlsplit(url)
        port = parts.port
        sent = httpx.URL(url)
    except (ValueError, httpx.InvalidURL) as exc:
        raise TargetRefused(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("must be an http:// or https:// URL")
    if not parts.hostname:
        raise TargetRefused("must name a host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("must not carry credentials (user:password@)")
    if parts.fragment:
        raise TargetRefused("must not have a #fragment")
    if sent.host.lower() != parts.hostname.lower() or (sent.port or port) != port:
        raise TargetRefused("its host or port is ambiguous (parsed differently by HTTP clients)")
    return Target(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80))


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (IPv4-mapped, IPv4-compatible, NAT64,
    6to4, Teredo), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64 or int(address) >> 32 == 0:  # NAT64, or the old ::a.b.c.d form
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address (the server is public by design)
    return None


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None and not is_public(inner):
            return False
        if address.ipv4_mapped is not None:
            return True  # judged by its IPv4 address alone
    return address.is_global and not address.is_multicast


async def resolve(target: Target, *, allow_private: bool) -> list[str]:
    """The target's addresses (each checked); TargetRefused when none or any is refused."""
    try:
        literal = ipaddress.ip_address(target.host)
        addresses = [literal]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                target.host, target.port, type=socket.SOCK_STREAM
            )
        except (socket.gaierror, UnicodeError) as exc:
            raise TargetRefused(f"host {target.host!r} does not resolve ({exc})") from None
        addresses = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if address not in addresses:
                addresses.append(address)
    if not addresses:
        raise TargetRefused(f"host {target.host!r} has no address")
    if not allow_private:
        for address in addresses:
            if not is_public(address):
                raise TargetRefused(
                    f"host {target.host!r} resolves to {address}, a private or loopback "
                    "address (allowed only with ALLOTMENT_WEBHOOKS_ALLOW_PRIVATE=true)"
                )
    return [str(a) for a in addresses]
