"""The decision log.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "decisions",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("customer", sa.Text, nullable=False),
        sa.Column("feature", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=True),
        sa.Column("instance", sa.Text, nullable=True),
        sa.Column("tenant", sa.Text, nullable=True),
        sa.Column("allowed", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=True),
        sa.Column("policy_version", sa.Integer, nullable=True),
        sa.Column("contract_revision", sa.Integer, nullable=True),
        sa.Column("stale", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("id", name="pk_decisions"),
    )
    op.create_index("ix_decisions_customer", "decisions", ["customer", "allowed", "id"])


def downgrade() -> None:
    op.drop_table("decisions")
