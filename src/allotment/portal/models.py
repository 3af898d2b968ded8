"""Portal links and the browser sessions they open; only SHA-256 hashes of their tokens
are stored.

    portal_links      a one-time link: made by admin or finance, opened at most once before
                      `expires_at` (`used_at` set when it is)
    portal_sessions   the browser session a link opened: one customer, until `expires_at`
                      or logout (`ended_at`)
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, LargeBinary, Text
from sqlalchemy.orm import Mapped, mapped_column

from allotment.db import Base

TZ = DateTime(timezone=True)


class PortalLink(Base):
    __tablename__ = "portal_links"

    id: Mapped[str] = mapped_column(Text, primary_key=True)  # pl_<ulid>
    customer_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    actor: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TZ)
    expires_at: Mapped[datetime] = mapped_column(TZ)
    used_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)


class PortalSession(Base):
    __tablename__ = "portal_sessions"

    id: Mapped[str] = mapped_column(Text, primary_key=True)  # ps_<ulid>
    customer_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    # Kept here so a page needs one read to know whose it is; keys never change.
    customer_key: Mapped[str] = mapped_column(Text)
    link_id: Mapped[str] = mapped_column(Text, ForeignKey("portal_links.id", ondelete="CASCADE"))
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    created_at: Mapped[datetime] = mapped_column(TZ)
    expires_at: Mapped[datetime] = mapped_column(TZ)
    ended_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
