"""Portal access: one-time links, the browser sessions they open, and CSRF tokens.

    open_link(session, customer_key=, actor=, ttl_s=, now=)  → (token, PortalLink); audited
    redeem(session, token=, ttl_s=, now=)                    → (token, PortalSession); the
                                                             link is spent; audited
    session_of(session, token=, now=)                        → the live PortalSession or None
    end(session, portal_session=, now=)                      → logout
    csrf_token(token)                                        → the session's form token

A token is 256 random bits, shown once (in the link's URL, or the cookie) and stored as
its SHA-256. A link is spent by one conditional UPDATE, so two browsers racing to open it
get one session between them. The CSRF token is an HMAC of the session's own token: bound
to the session, never stored, unknown to another site (docs/portal.md, "Security model").
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.audit import service as audit
from allotment.customers import service as customers
from allotment.kit.clock import isoformat
from allotment.kit.ids import new_id
from allotment.portal import wording
from allotment.portal.models import PortalLink, PortalSession

_SPEND = text(
    "UPDATE portal_links SET used_at = :now WHERE token_hash = :h AND used_at IS NULL "
    "AND expires_at > :now RETURNING id, customer_id"
)


class LinkRefused(Exception):
    """A link that opens nothing: unknown, already used, or expired."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


def new_token() -> str:
    return secrets.token_urlsafe(32)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def csrf_token(token: str) -> str:
    return hmac.new(token.encode(), b"allotment-portal-csrf", hashlib.sha256).hexdigest()


def csrf_matches(token: str, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(csrf_token(token), sent)


NOTICE_TTL_S = 300  # how long the "released" notice after a release may be shown


def _notice_mac(token: str, subject: str, stamp: int) -> str:
    message = f"released\x00{subject}\x00{stamp}".encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def release_notice(token: str, subject: str, now: datetime) -> str:
    """The signed value the release form's redirect carries, so the Seats page shows its
    "released" notice only for a release this session made in the last few minutes."""
    stamp = int(now.timestamp())
    return f"{stamp}.{_notice_mac(token, subject, stamp)}"


def notice_is_genuine(token: str, subject: str, sent: str | None, now: datetime) -> bool:
    stamp_text, _, mac = (sent or "").partition(".")
    if not stamp_text.isdigit() or len(stamp_text) > 12:
        return False
    stamp = int(stamp_text)
    fresh = 0 <= now.timestamp() - stamp <= NOTICE_TTL_S
    return fresh and hmac.compare_digest(_notice_mac(token, subject, stamp), mac)


async def open_link(
    session: AsyncSession, *, customer_key: str, actor: str, ttl_s: int, now: datetime
) -> tuple[str, PortalLink]:
    customer = await customers.get(session, customer_key)
    token = new_token()
    link = PortalLink(
        id=new_id("pl"),
        customer_id=customer.id,
        token_hash=digest(token),
        actor=actor,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_s),
    )
    session.add(link)
    await session.flush()
    audit.record(
        session,
        actor=actor,
        action="portal.link_created",
        target_type="customer",
        target_key=customer.key,
        after={"id": link.id, "expires_at": isoformat(link.expires_at)},
    )
    return token, link


async def redeem(
    session: AsyncSession, *, token: str, ttl_s: int, now: datetime
) -> tuple[str, PortalSession]:
    hashed = digest(token)
    spent = (await session.execute(_SPEND, {"h": hashed, "now": now})).one_or_none()
    if spent is None:
        link = (
            await session.execute(select(PortalLink).where(PortalLink.token_hash == hashed))
        ).scalar_one_or_none()
        if link is None:
            raise LinkRefused(401, "Unknown link", "This portal link is not valid.")
        if link.used_at is not None:
            raise LinkRefused(
                410,
                "Link already used",
                "This portal link was already used: each link opens one session.",
            )
        raise LinkRefused(
            401, "Link expired", f"This portal link expired on {wording.moment(link.expires_at)}."
        )
    customer_key = await customers.key_of(session, spent.customer_id)
    secret = new_token()
    opened = PortalSession(
        id=new_id("ps"),
        customer_id=spent.customer_id,
        customer_key=customer_key,
        link_id=spent.id,
        token_hash=digest(secret),
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_s),
    )
    session.add(opened)
    await session.flush()
    audit.record(
        session,
        actor=f"portal:{spent.id}",
        action="portal.session_opened",
        target_type="customer",
        target_key=customer_key,
        after={"id": opened.id, "link": spent.id, "expires_at": isoformat(opened.expires_at)},
    )
    return secret, opened


async def session_of(
    session: AsyncSession, *, token: str | None, now: datetime
) -> PortalSession | None:
    if not token:
        return None
    query = select(PortalSession).where(
        PortalSession.token_hash == digest(token),
        PortalSession.ended_at.is_(None),
        PortalSession.expires_at > now,
    )
    return (await session.execute(query)).scalar_one_or_none()


async def end(session: AsyncSession, *, portal_session: PortalSession, now: datetime) -> None:
    await session.execute(
        update(PortalSession).where(PortalSession.id == portal_session.id).values(ended_at=now)
    )
