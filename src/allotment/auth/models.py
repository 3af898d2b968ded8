from __future__ import annotations

from datetime import datetime

from sqlalchemy import ARRAY, DateTime, Text
from sqlalchemy.orm import Mapped, mapped_column

from allotment.db import Base


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    # The first characters of the secret, kept so a person can tell keys apart.
    prefix: Mapped[str] = mapped_column(Text)
    # SHA-256 of the whole secret; the secret itself is never stored.
    secret_hash: Mapped[str] = mapped_column(Text, unique=True)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text))
    created_by: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
