"""Signing keys: one row per Ed25519 key, from `next` through `active` to `retired`.

    kid            the key's id, in every artifact's header and in the published key set
    state          next | active | retired (at most one `next` and one `active`: unique
                   partial indexes, so two processes can never both make one)
    public_jwk     the public half as an RFC 8037 JWK (kty OKP, crv Ed25519, x, kid, alg, use)
    private_sealed the private half, AES-256-GCM under a key derived from the signing
                   secret, with the kid as associated data: 12-byte nonce || ciphertext
    signed_until   the latest `grace_until` of any artifact the key signed: a retired key
                   is published until then, and not a moment longer

Rows are never deleted: a retired key past its `signed_until` is simply no longer published.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, Index, LargeBinary, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from allotment.db import Base

TZ = DateTime(timezone=True)
STATES = ("next", "active", "retired")


class SigningKey(Base):
    __tablename__ = "signing_keys"
    __table_args__ = (
        CheckConstraint("state IN ('next', 'active', 'retired')", name="state"),
        Index(
            "uq_signing_keys_one_active",
            "state",
            unique=True,
            postgresql_where=text("state = 'active'"),
        ),
        Index(
            "uq_signing_keys_one_next",
            "state",
            unique=True,
            postgresql_where=text("state = 'next'"),
        ),
    )

    kid: Mapped[str] = mapped_column(Text, primary_key=True)
    state: Mapped[str] = mapped_column(Text)
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSONB)
    private_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(TZ)
    activated_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    retired_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    signed_until: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
