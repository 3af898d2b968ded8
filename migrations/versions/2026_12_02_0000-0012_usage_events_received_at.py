"""usage_events by received_at: previews as of an instant find late events by index.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02

An invoice preview counts an event when its `time` is in the period and it was received at
or before the preview's `as_of` (docs/billing.md, "Taken at an instant"). The events received
after `as_of` are few (they arrive inside the late-arrival window) but sit among every event
of the month; this index finds them without reading the others. Created on the partitioned
parent, so every monthly partition, present and future, has it.
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX ix_usage_events_customer_id_received_at "
        "ON usage_events (customer_id, received_at)"
    )


def downgrade() -> None:
    op.execute("DROP INDEX ix_usage_events_customer_id_received_at")
