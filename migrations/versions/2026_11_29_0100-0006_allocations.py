"""Seats, seat bursts, sessions and instances: the allocations and their intervals.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

Every allocation row is also its lifecycle interval: [assigned_at, released_at) for a seat,
[opened_at, ended_at) for a session, [registered_at, ended_at) for an instance, where a lapsed
lease ends at its expiry (the reaper writes that instant, not the time it ran). Rows are never
deleted; billing reads them. A partial unique index keeps one live row per seat subject and
per instance fingerprint, and one open burst episode per customer.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def _customer_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["customer_id"],
        ["customers.id"],
        name=f"fk_{table}_customer_id_customers",
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "seats",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("customer_id", sa.BigInteger, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("tenant", sa.Text, nullable=True),
        sa.Column("over_limit", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("assigned_at", TZ, nullable=False),
        sa.Column("released_at", TZ, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_seats"),
        _customer_fk("seats"),
        sa.CheckConstraint("type IN ('member', 'guest')", name="ck_seats_type"),
        sa.CheckConstraint(
            "released_at IS NULL OR released_at >= assigned_at", name="ck_seats_interval"
        ),
    )
    op.create_index(
        "uq_seats_live_subject",
        "seats",
        ["customer_id", "subject"],
        unique=True,
        postgresql_where=sa.text("released_at IS NULL"),
    )
    op.create_index("ix_seats_customer_id_assigned_at", "seats", ["customer_id", "assigned_at"])

    op.create_table(
        "seat_bursts",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("customer_id", sa.BigInteger, nullable=False),
        sa.Column("limit", sa.Integer, nullable=False),
        sa.Column("extra", sa.Integer, nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("window_ends_at", TZ, nullable=False),
        sa.Column("ended_at", TZ, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_seat_bursts"),
        _customer_fk("seat_bursts"),
        sa.CheckConstraint(
            "ended_at IS NULL OR ended_at >= started_at", name="ck_seat_bursts_interval"
        ),
    )
    op.create_index(
        "uq_seat_bursts_open",
        "seat_bursts",
        ["customer_id"],
        unique=True,
        postgresql_where=sa.text("ended_at IS NULL"),
    )
    op.create_index(
        "ix_seat_bursts_customer_id_started_at", "seat_bursts", ["customer_id", "started_at"]
    )

    op.create_table(
        "seat_sessions",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("customer_id", sa.BigInteger, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("tenant", sa.Text, nullable=True),
        sa.Column("ttl_s", sa.Integer, nullable=False),
        sa.Column("opened_at", TZ, nullable=False),
        sa.Column("expires_at", TZ, nullable=False),
        sa.Column("ended_at", TZ, nullable=True),
        sa.Column("end_reason", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_seat_sessions"),
        _customer_fk("seat_sessions"),
        sa.CheckConstraint(
            "ended_at IS NULL OR ended_at >= opened_at", name="ck_seat_sessions_interval"
        ),
        sa.CheckConstraint(
            "end_reason IS NULL OR end_reason IN ('closed', 'expired')",
            name="ck_seat_sessions_end_reason",
        ),
    )
    op.create_index(
        "ix_seat_sessions_live",
        "seat_sessions",
        ["customer_id", "expires_at"],
        postgresql_where=sa.text("ended_at IS NULL"),
    )
    op.create_index(
        "ix_seat_sessions_lapse",
        "seat_sessions",
        ["expires_at"],
        postgresql_where=sa.text("ended_at IS NULL"),
    )
    op.create_index(
        "ix_seat_sessions_customer_id_opened_at", "seat_sessions", ["customer_id", "opened_at"]
    )

    op.create_table(
        "instances",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("customer_id", sa.BigInteger, nullable=False),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("weight", sa.Integer, nullable=False),
        sa.Column("environment", sa.Text, nullable=False),
        sa.Column("tenant", sa.Text, nullable=True),
        sa.Column("metadata", postgresql.JSONB, nullable=False, server_default="{}"),
        sa.Column("ttl_s", sa.Integer, nullable=False),
        sa.Column("registered_at", TZ, nullable=False),
        sa.Column("lease_expires_at", TZ, nullable=False),
        sa.Column("ended_at", TZ, nullable=True),
        sa.Column("end_reason", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_instances"),
        _customer_fk("instances"),
        sa.CheckConstraint("weight > 0", name="ck_instances_weight"),
        sa.CheckConstraint(
            "ended_at IS NULL OR ended_at >= registered_at", name="ck_instances_interval"
        ),
        sa.CheckConstraint(
            "end_reason IS NULL OR end_reason IN ('deregistered', 'expired')",
            name="ck_instances_end_reason",
        ),
    )
    op.create_index(
        "uq_instances_live_fingerprint",
        "instances",
        ["customer_id", "fingerprint"],
        unique=True,
        postgresql_where=sa.text("ended_at IS NULL"),
    )
    op.create_index(
        "ix_instances_lapse",
        "instances",
        ["lease_expires_at"],
        postgresql_where=sa.text("ended_at IS NULL"),
    )
    op.create_index(
        "ix_instances_customer_id_fingerprint",
        "instances",
        ["customer_id", "fingerprint", sa.text("registered_at DESC")],
    )
    op.create_index(
        "ix_instances_customer_id_registered_at", "instances", ["customer_id", "registered_at"]
    )


def downgrade() -> None:
    for table in ("instances", "seat_sessions", "seat_bursts", "seats"):
        op.drop_table(table)
