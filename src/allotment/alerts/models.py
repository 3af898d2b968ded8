"""Alerts fired: one row per alert that went out, so each fires once.

    alerts_fired   the customer, the event type, what it is about (`subject`: a meter, a
                   pool, a contract), the threshold crossed (`threshold`: "80", "7d", ""),
                   and the period it belongs to (`period`: "2026-12", a window's start, a
                   contract's end) — unique together — with when it fired and its payload

A firing inserts its row ON CONFLICT DO NOTHING in the transaction of the action that caused
it, and announces the event only when the row is new: concurrent actions crossing the same
threshold fire once, and a rolled-back action fires nothing (docs/webhooks.md, "Event types").
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, Identity, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from allotment.db import Base

TZ = DateTime(timezone=True)


class FiredAlert(Base):
    __tablename__ = "alerts_fired"
    __table_args__ = (
        UniqueConstraint(
            "customer_id", "type", "subject", "threshold", "period", name="uq_alerts_fired_key"
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    customer_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("customers.id", ondelete="CASCADE")
    )
    type: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    threshold: Mapped[str] = mapped_column(Text)
    period: Mapped[str] = mapped_column(Text)
    fired_at: Mapped[datetime] = mapped_column(TZ)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
