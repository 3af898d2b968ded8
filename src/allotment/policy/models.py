"""Policy versions and the one row that says which is active.

    policy_versions   one row per distinct document: a draft, then published (frozen)
    policy_state      one row (id 1): the active pointer and the global policy version
    policy_activations  when each version became active (billing's history of the pointer)
    policy_approvals  sign-offs: an admin key approves a version; a publish that needs one
                      (ALLOTMENT_POLICY_REQUIRE_APPROVAL) uses it (policy/approvals.py)

A published row never changes and is never deleted: triggers in migration 0003 refuse it in
the database itself (docs/design.md, "Invariants", invariant 4), and refuse an active
pointer at a draft.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, Integer, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from allotment.db import Base

PolicyStatus = Literal["draft", "published"]
DRAFT: PolicyStatus = "draft"
PUBLISHED: PolicyStatus = "published"


class PolicyVersion(Base):
    __tablename__ = "policy_versions"
    __table_args__ = (CheckConstraint("status IN ('draft', 'published')", name="status"),)

    # Assigned 1, 2, 3… under the policy_state row lock, so numbers are gap-free and ordered
    # as the drafts were created.
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column(Text)
    # SHA-256 of the canonical form: one version per meaning, however it was written.
    digest: Mapped[str] = mapped_column(Text, unique=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSONB)  # the canonical form
    source: Mapped[str] = mapped_column(Text)  # the text as posted
    media_type: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(Text)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    published_by: Mapped[str | None] = mapped_column(Text, nullable=True)


class PolicyState(Base):
    """The active pointer; every publish and rollback locks this row, so they run in line."""

    __tablename__ = "policy_state"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    active_version: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("policy_versions.version"), nullable=True
    )
    # Bumped by every publish and rollback; part of every cached snapshot's key
    # (allotment.invalidation announces it after commit).
    global_version: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class PolicyActivation(Base):
    """When a version became the active one (publish or rollback); appended, never changed.
    Billing reads it to price unpinned contracts with the version in force at each instant."""

    __tablename__ = "policy_activations"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, ForeignKey("policy_versions.version"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    action: Mapped[str] = mapped_column(Text)


class PolicyApproval(Base):
    """An admin key's sign-off of a version; `used_*` set by the publish that relied on it."""

    __tablename__ = "policy_approvals"
    __table_args__ = (Index("ix_policy_approvals_version", "version"),)

    id: Mapped[str] = mapped_column(Text, primary_key=True)  # apr_…
    version: Mapped[int] = mapped_column(
        Integer, ForeignKey("policy_versions.version", ondelete="RESTRICT")
    )
    approved_by: Mapped[str] = mapped_column(Text)  # the approving key's actor, api_key:<id>
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    used_by: Mapped[str | None] = mapped_column(Text, nullable=True)
