"""Credit grants: prepaid credit wallets (docs/billing.md, "Credit wallets").

Revision ID: 0020
Revises: 0015
Create Date: 2026-12-03

One row per grant or top-up, never updated: what the wallet drew is computed from the
priced months, not stored.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0017"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "credit_grants",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("customer_id", sa.BigInteger, nullable=False),
        sa.Column("amount", sa.Numeric, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("granted_at", TZ, nullable=False),
        sa.Column("expires_at", TZ, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_credit_grants"),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name="fk_credit_grants_customer_id_customers",
            ondelete="RESTRICT",
        ),
        sa.CheckConstraint("amount > 0", name="ck_credit_grants_amount"),
        sa.CheckConstraint("kind IN ('purchased', 'granted')", name="ck_credit_grants_kind"),
        sa.CheckConstraint(
            "expires_at IS NULL OR expires_at > granted_at", name="ck_credit_grants_validity"
        ),
    )
    op.create_index(
        "ix_credit_grants_customer_id_granted_at", "credit_grants", ["customer_id", "granted_at"]
    )


def downgrade() -> None:
    op.drop_table("credit_grants")
