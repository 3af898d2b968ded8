"""Release notes: one row per move of the active policy pointer (publish or rollback),
appended in the move's transaction and never changed (docs/release-notes.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from allotment.db import Base


class ReleaseNote(Base):
    __tablename__ = "release_notes"
    __table_args__ = (
        CheckConstraint("action IN ('publish', 'rollback')", name="action"),
        Index("ix_release_notes_version_id", "version", "id"),
    )

    # In the order the moves committed (they run one at a time under the policy_state lock):
    # the changelog is this column, descending.
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    version: Mapped[int] = mapped_column(
        Integer, ForeignKey("policy_versions.version", ondelete="RESTRICT")
    )
    action: Mapped[str] = mapped_column(Text)
    previous_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    actor: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # `json`, not `jsonb`: the notes read back in the order they were written.
    body: Mapped[dict[str, Any]] = mapped_column(JSON)  # the notes, as notes_for answers them
