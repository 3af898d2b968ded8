"""Alerts fired, each once; a seat assignment says how many seats its pool holds.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-04

`alerts_fired` holds one row per alert that went out, unique by customer, type, subject,
threshold and period (docs/webhooks.md, "Event types"). `allotment_assign_seat` (0014) now
also returns `held` for a created seat: the seats of its pool (members or guests) held with
it, so the caller knows when the assignment filled the pool (seats.limit_reached) without
another round trip. The function's text is edited in place rather than written out again, so
the one implementation of the seat rules stays the one in 0014.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)

_CREATED = "status := 'created'; seat_id := p_seat_id;"
_COUNTED = (
    "status := 'created'; "
    "held := CASE WHEN p_type = 'guest' THEN v_guests ELSE v_members END + 1; "
    "seat_id := p_seat_id;"
)


def _rewrite(old: str, new: str) -> str:
    return f"""
DO $$
DECLARE
    definition text;
BEGIN
    SELECT pg_get_functiondef(p.oid) INTO definition FROM pg_proc p
     WHERE p.proname = 'allotment_assign_seat';
    IF position({_literal(old)} IN definition) = 0 THEN
        RAISE EXCEPTION 'allotment_assign_seat is not the function this migration edits';
    END IF;
    EXECUTE replace(definition, {_literal(old)}, {_literal(new)});
END;
$$;
"""


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def upgrade() -> None:
    op.create_table(
        "alerts_fired",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("customer_id", sa.BigInteger, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("threshold", sa.Text, nullable=False),
        sa.Column("period", sa.Text, nullable=False),
        sa.Column("fired_at", TZ, nullable=False),
        sa.Column("data", sa.dialects.postgresql.JSONB, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alerts_fired"),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name="fk_alerts_fired_customer_id_customers",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "customer_id", "type", "subject", "threshold", "period", name="uq_alerts_fired_key"
        ),
    )
    op.execute(_rewrite(_CREATED, _COUNTED))


def downgrade() -> None:
    op.execute(_rewrite(_COUNTED, _CREATED))
    op.drop_table("alerts_fired")
