"""usage_event_ids.digest: what an accepted event said, so a reused id can be told apart.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02

SHA-256 (32 bytes) of the event's canonical (type, subject, time, tenant, data), computed by
`usage/events.py` `digest` at ingest and written with the id's claim. When an id is taken,
the stored digest says whether the repeat is a duplicate (the same payload) or a conflict
(another payload: reported, never stored). Nullable, with no backfill: ids claimed before
this revision, and the service's own lifecycle events, have none and count as duplicates.
Adding a nullable column without a default rewrites nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("usage_event_ids", sa.Column("digest", sa.LargeBinary, nullable=True))


def downgrade() -> None:
    op.drop_column("usage_event_ids", "digest")
