"""Credit grants: one row per grant or top-up; never updated, never deleted.

    credit_grants   id cr_<ulid>, the customer, an amount of the policy currency, its kind
                    (purchased: a top-up; granted: free credits), valid over
                    [granted_at, expires_at) (expires_at NULL: until used), reason, actor

Drawdown is not stored: it is computed from the priced months (billing/wallet_ledger.py),
so an invoice preview stays a function of stored data and its `as_of` instant.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, Numeric, Text
from sqlalchemy.orm import Mapped, mapped_column

from allotment.db import Base

TZ = DateTime(timezone=True)


class CreditGrant(Base):
    __tablename__ = "credit_grants"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount"),
        CheckConstraint("kind IN ('purchased', 'granted')", name="kind"),
        CheckConstraint("expires_at IS NULL OR expires_at > granted_at", name="validity"),
        Index("ix_credit_grants_customer_id_granted_at", "customer_id", "granted_at"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)  # cr_<ulid>
    customer_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("customers.id", ondelete="RESTRICT")
    )
    amount: Mapped[Decimal] = mapped_column(Numeric)
    currency: Mapped[str] = mapped_column(Text)  # the policy's when granted
    kind: Mapped[str] = mapped_column(Text)
    granted_at: Mapped[datetime] = mapped_column(TZ)
    expires_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    actor: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TZ)
