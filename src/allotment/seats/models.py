"""Seats, burst episodes and sessions; each row is also its lifecycle interval.

    seats          [assigned_at, released_at)   a subject's member or guest seat
    seat_bursts    [started_at, ended_at)       an episode with members over the limit
    seat_sessions  [opened_at, ended_at)        a concurrent seat's lease; a lapsed lease
                                                ends at `expires_at`, whenever it is reaped

Rows are never deleted (billing prices them); live rows are the ones not yet ended.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Integer, Text
from sqlalchemy.orm import Mapped, mapped_column

from allotment.db import Base

TZ = DateTime(timezone=True)


class Seat(Base):
    __tablename__ = "seats"

    id: Mapped[str] = mapped_column(Text, primary_key=True)  # seat_<ulid>
    customer_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("customers.id", ondelete="CASCADE")
    )
    subject: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(Text)  # member | guest
    tenant: Mapped[str | None] = mapped_column(Text, nullable=True)
    over_limit: Mapped[bool] = mapped_column(Boolean, default=False)  # assigned in a burst
    assigned_at: Mapped[datetime] = mapped_column(TZ)
    released_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)


class SeatCount(Base):
    """The live seats of a customer, by type: kept by the `seats_counted` trigger (migration
    0010) on every insert, release and delete of a seat, read under the pool lock."""

    __tablename__ = "seat_counts"

    customer_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    members: Mapped[int] = mapped_column(Integer, default=0)
    guests: Mapped[int] = mapped_column(Integer, default=0)


class SeatBurst(Base):
    __tablename__ = "seat_bursts"

    id: Mapped[str] = mapped_column(Text, primary_key=True)  # burst_<ulid>
    customer_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("customers.id", ondelete="CASCADE")
    )
    limit: Mapped[int] = mapped_column(Integer)  # the seat limit when the episode started
    extra: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(TZ)
    window_ends_at: Mapped[datetime] = mapped_column(TZ)
    ended_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)


class SeatSession(Base):
    __tablename__ = "seat_sessions"

    id: Mapped[str] = mapped_column(Text, primary_key=True)  # ses_<ulid>
    customer_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("customers.id", ondelete="CASCADE")
    )
    subject: Mapped[str] = mapped_column(Text)
    tenant: Mapped[str | None] = mapped_column(Text, nullable=True)
    ttl_s: Mapped[int] = mapped_column(Integer)
    opened_at: Mapped[datetime] = mapped_column(TZ)
    expires_at: Mapped[datetime] = mapped_column(TZ)
    ended_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    end_reason: Mapped[str | None] = mapped_column(Text, nullable=True)  # closed | expired
