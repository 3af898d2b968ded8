"""Contracts, their revisions, and tenants.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

No exclusion constraint keeps a customer's terms apart: it would need `btree_gist`, which
the embedded PostgreSQL (pgserver) does not ship. The service serialises a customer's
contract writes with a row lock on the customer instead (contracts/service.py).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "contracts",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("customer_id", sa.BigInteger, nullable=False),
        sa.Column("plan", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("starts_at", TZ, nullable=False),
        sa.Column("ends_at", TZ, nullable=True),
        sa.Column("terminated_at", TZ, nullable=True),
        sa.Column("policy_version", sa.Integer, nullable=True),
        sa.Column("terms", postgresql.JSONB, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("effective_at", TZ, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_contracts"),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name="fk_contracts_customer_id_customers",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["policy_version"],
            ["policy_versions.version"],
            name="fk_contracts_policy_version_policy_versions",
        ),
        sa.CheckConstraint(
            "kind IN ('standard', 'trial', 'educational', 'pilot')", name="ck_contracts_kind"
        ),
        sa.CheckConstraint("ends_at IS NULL OR ends_at >= starts_at", name="ck_contracts_term"),
    )
    op.create_index("ix_contracts_customer_id_starts_at", "contracts", ["customer_id", "starts_at"])
    op.create_table(
        "contract_revisions",
        sa.Column("contract_id", sa.Text, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("customer_id", sa.BigInteger, nullable=False),
        sa.Column("effective_at", TZ, nullable=False),
        sa.Column("terms", postgresql.JSONB, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("contract_id", "revision", name="pk_contract_revisions"),
        sa.ForeignKeyConstraint(
            ["contract_id"],
            ["contracts.id"],
            name="fk_contract_revisions_contract_id_contracts",
            ondelete="RESTRICT",
        ),
    )
    op.create_table(
        "tenants",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("customer_id", sa.BigInteger, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("quotas", postgresql.JSONB, nullable=False, server_default="{}"),
        sa.Column("revision", sa.Integer, nullable=False, server_default="1"),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tenants"),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name="fk_tenants_customer_id_customers",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("customer_id", "key", name="uq_tenants_customer_id_key"),
    )


def downgrade() -> None:
    op.drop_table("tenants")
    op.drop_table("contract_revisions")
    op.drop_index("ix_contracts_customer_id_starts_at", table_name="contracts")
    op.drop_table("contracts")
