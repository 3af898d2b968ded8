"""Signing keys of the signed entitlement artifacts (docs/artifacts.md).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03

One row per Ed25519 key. The unique partial indexes hold "at most one active key and at
most one next key" in the database itself: two workers making the first keys at once, or a
rotation racing a retirement, cannot leave two of either.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("public_jwk", postgresql.JSONB, nullable=False),
        sa.Column("private_sealed", sa.LargeBinary, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("activated_at", TZ, nullable=True),
        sa.Column("retired_at", TZ, nullable=True),
        sa.Column("signed_until", TZ, nullable=True),
        sa.PrimaryKeyConstraint("kid", name="pk_signing_keys"),
        sa.CheckConstraint(
            "state IN ('next', 'active', 'retired')", name="ck_signing_keys_state"
        ),
    )
    op.create_index(
        "uq_signing_keys_one_active",
        "signing_keys",
        ["state"],
        unique=True,
        postgresql_where=sa.text("state = 'active'"),
    )
    op.create_index(
        "uq_signing_keys_one_next",
        "signing_keys",
        ["state"],
        unique=True,
        postgresql_where=sa.text("state = 'next'"),
    )


def downgrade() -> None:
    op.drop_table("signing_keys")
