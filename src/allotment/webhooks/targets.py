"""Where a webhook may be sent: an http(s) URL whose host resolves only to public addresses.

`check_url` is pure (the shape of the URL); `resolve` looks the host up and refuses it when
any of its addresses is private, loopback, link-local, multicast, reserved or unspecified,
unless private targets are allowed (ALLOTMENT_WEBHOOKS_ALLOW_PRIVATE). It runs when an
endpoint is created or its URL changed, and again before every delivery, which then connects
to the address it checked (so a name that re-resolves elsewhere meanwhile is not followed).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048


class TargetRefused(Exception):
    """The URL is not one a webhook may be sent to; the message says why."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int


def check_url(url: str) -> Target:
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("must be an http:// or https:// URL")
    if not parts.hostname:
        raise TargetRefused("must name a host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("must not carry credentials (user:password@)")
    if parts.fragment:
        raise TargetRefused("must not have a #fragment")
    return Target(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80))


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
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
