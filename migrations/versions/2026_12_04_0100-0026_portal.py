"""Customer portal: one-time links and the browser sessions they open (docs/portal.md).

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-04

Only SHA-256 hashes of the links' and sessions' tokens are stored.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "portal_links",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("customer_id", sa.BigInteger, nullable=False),
        sa.Column("token_hash", sa.LargeBinary, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("expires_at", TZ, nullable=False),
        sa.Column("used_at", TZ, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_portal_links"),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name="fk_portal_links_customer_id_customers",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("token_hash", name="uq_portal_links_token_hash"),
    )
    op.create_index("ix_portal_links_customer_id", "portal_links", ["customer_id"])
    op.create_table(
        "portal_sessions",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("customer_id", sa.BigInteger, nullable=False),
        sa.Column("customer_key", sa.Text, nullable=False),
        sa.Column("link_id", sa.Text, nullable=False),
        sa.Column("token_hash", sa.LargeBinary, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("expires_at", TZ, nullable=False),
        sa.Column("ended_at", TZ, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_portal_sessions"),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name="fk_portal_sessions_customer_id_customers",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["link_id"],
            ["portal_links.id"],
            name="fk_portal_sessions_link_id_portal_links",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("token_hash", name="uq_portal_sessions_token_hash"),
    )
    op.create_index("ix_portal_sessions_customer_id", "portal_sessions", ["customer_id"])


def downgrade() -> None:
    op.drop_table("portal_sessions")
    op.drop_table("portal_links")
