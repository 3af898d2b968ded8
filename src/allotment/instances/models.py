"""Instances: one row per registration, which is also its lease interval.

A row lives from `registered_at` until it is deregistered (`ended_at` = that moment) or its
lease lapses (`ended_at` = `lease_expires_at`, written by whoever notices first: the reaper,
a re-registration of the fingerprint, or a heartbeat that came too late). Heartbeats move
`lease_expires_at`; they do not start a new row. Rows are never deleted: billing prices
lease-hours from them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from allotment.db import Base

TZ = DateTime(timezone=True)


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[str] = mapped_column(Text, primary_key=True)  # ins_<ulid>
    customer_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("customers.id", ondelete="CASCADE")
    )
    fingerprint: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    weight: Mapped[int] = mapped_column(Integer)  # the kind's weight when registered
    environment: Mapped[str] = mapped_column(Text)
    tenant: Mapped[str | None] = mapped_column(Text, nullable=True)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, default=dict)
    ttl_s: Mapped[int] = mapped_column(Integer)  # the plan's lease_ttl when registered
    registered_at: Mapped[datetime] = mapped_column(TZ)
    lease_expires_at: Mapped[datetime] = mapped_column(TZ)
    ended_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    # deregistered | expired | seat_released (its subject's seat was released)
    end_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The seat holder a device is registered under (docs/seats.md); None: unbound.
    subject: Mapped[str | None] = mapped_column(Text, nullable=True)
