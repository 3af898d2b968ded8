"""Webhook attempts are recorded when they start, and closed with their outcome.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-05

`webhook_attempts.outcome` is `in_flight` from the claim until the answer is recorded, then
`delivered` (a 2xx) or `failed` (any other answer, or none); an attempt left open by a
worker that died is closed as `interrupted` when its delivery is claimed again, or by the
worker's pass once the lease lapsed (docs/webhooks.md, "Delivery"). `duration_ms` is null
until an answer is recorded, and stays null for an interrupted attempt. Existing rows were
all recorded with their answer: 2xx ones are `delivered`, the rest `failed`. The partial
index finds the open attempts without reading the closed ones.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("webhook_attempts", sa.Column("outcome", sa.Text, nullable=True))
    op.execute(
        "UPDATE webhook_attempts SET outcome = CASE WHEN status BETWEEN 200 AND 299 "
        "THEN 'delivered' ELSE 'failed' END"
    )
    op.alter_column("webhook_attempts", "outcome", nullable=False)
    op.create_check_constraint(
        op.f("ck_webhook_attempts_outcome"),
        "webhook_attempts",
        "outcome IN ('in_flight', 'delivered', 'failed', 'interrupted')",
    )
    op.alter_column("webhook_attempts", "duration_ms", nullable=True)
    op.create_index(
        "ix_webhook_attempts_in_flight",
        "webhook_attempts",
        ["delivery_id"],
        postgresql_where=sa.text("outcome = 'in_flight'"),
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_attempts_in_flight", table_name="webhook_attempts")
    op.execute("DELETE FROM webhook_attempts WHERE duration_ms IS NULL")
    op.alter_column("webhook_attempts", "duration_ms", nullable=False)
    op.drop_constraint(op.f("ck_webhook_attempts_outcome"), "webhook_attempts", type_="check")
    op.drop_column("webhook_attempts", "outcome")
