"""Devices per seat: an instance may be bound to the subject holding a seat (docs/seats.md).

Revision ID: 0017
Revises: 0015
Create Date: 2026-12-03

`instances.subject` names the seat holder a device is registered under (null: an unbound
instance, as before). Releasing the seat ends its devices, with the end reason
`seat_released`. The partial index serves the per-subject count taken under the pool lock.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("instances", sa.Column("subject", sa.Text, nullable=True))
    op.drop_constraint("ck_instances_end_reason", "instances", type_="check")
    op.create_check_constraint(
        "ck_instances_end_reason",
        "instances",
        "end_reason IS NULL OR end_reason IN ('deregistered', 'expired', 'seat_released')",
    )
    op.create_index(
        "ix_instances_live_subject",
        "instances",
        ["customer_id", "subject"],
        postgresql_where=sa.text("ended_at IS NULL AND subject IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_instances_live_subject", table_name="instances")
    op.execute(
        "UPDATE instances SET end_reason = 'deregistered' WHERE end_reason = 'seat_released'"
    )
    op.drop_constraint("ck_instances_end_reason", "instances", type_="check")
    op.create_check_constraint(
        "ck_instances_end_reason",
        "instances",
        "end_reason IS NULL OR end_reason IN ('deregistered', 'expired')",
    )
    op.drop_column("instances", "subject")
