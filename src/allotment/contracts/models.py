"""Contracts and their revisions.

    contracts            one row per contract: the latest terms (`terms`, also split into the
                         columns the overlap check and `current_terms` query), its revision
    contract_revisions   every revision's full terms and when they took effect; billing
                         prices a period interval by interval from these rows

A contract is never deleted: its revisions are what invoices were computed from.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from allotment.db import Base

TZ = DateTime(timezone=True)


class Contract(Base):
    __tablename__ = "contracts"
    __table_args__ = (
        CheckConstraint("kind IN ('standard', 'trial', 'educational', 'pilot')", name="kind"),
        # Equal bounds: a contract cancelled before it started, whose term holds no instant.
        CheckConstraint("ends_at IS NULL OR ends_at >= starts_at", name="term"),
        Index("ix_contracts_customer_id_starts_at", "customer_id", "starts_at"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)  # ctr_<ulid>
    customer_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("customers.id", ondelete="RESTRICT")
    )
    plan: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    starts_at: Mapped[datetime] = mapped_column(TZ)
    # The end of the term in force: the agreed end, or where a termination cut it.
    ends_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    terminated_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    policy_version: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("policy_versions.version"), nullable=True
    )
    terms: Mapped[dict[str, Any]] = mapped_column(JSONB)  # the latest revision's terms
    revision: Mapped[int] = mapped_column(Integer)
    effective_at: Mapped[datetime] = mapped_column(TZ)  # the latest revision's
    created_at: Mapped[datetime] = mapped_column(TZ)
    updated_at: Mapped[datetime] = mapped_column(TZ)


class ContractRevision(Base):
    __tablename__ = "contract_revisions"

    contract_id: Mapped[str] = mapped_column(
        Text, ForeignKey("contracts.id", ondelete="RESTRICT"), primary_key=True
    )
    revision: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # Every table carries the customer (docs/design.md, "Architecture": the shard key, should
    # it come to that).
    customer_id: Mapped[int] = mapped_column(BigInteger)
    effective_at: Mapped[datetime] = mapped_column(TZ)
    terms: Mapped[dict[str, Any]] = mapped_column(JSONB)  # the full terms from effective_at
    actor: Mapped[str] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(TZ)
