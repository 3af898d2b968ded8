"""Usage: event ids (the dedupe set), events partitioned by month, hourly counters, uniques.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29

`usage_event_ids` holds every accepted (source, id) with a primary key: the one unique
constraint that makes ingestion exactly-once (a partitioned table can only enforce
uniqueness per partition, and two copies of an event may carry different times). Monthly
partitions of `usage_events` are created on demand and ahead by the worker
(`usage/partitions.py`), not here, so a database migrated long ago still gets them.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE usage_event_ids (
            source text NOT NULL,
            id text NOT NULL,
            customer_id bigint,
            time timestamptz NOT NULL,
            received_at timestamptz NOT NULL,
            CONSTRAINT pk_usage_event_ids PRIMARY KEY (source, id)
        );
        CREATE TABLE usage_events (
            customer_id bigint,  -- NULL: a lifecycle event of no customer (a policy publish)
            tenant text,
            type text NOT NULL,
            source text NOT NULL,
            id text NOT NULL,
            time timestamptz NOT NULL,
            data jsonb,
            extensions jsonb,
            received_at timestamptz NOT NULL
        ) PARTITION BY RANGE (time);
        CREATE INDEX ix_usage_events_customer_id_type_time
            ON usage_events (customer_id, type, time);
        CREATE TABLE usage_counters (
            customer_id bigint NOT NULL,
            meter text NOT NULL,
            hour timestamptz NOT NULL,
            tenant text NOT NULL DEFAULT '',
            kind text NOT NULL,
            value numeric NOT NULL,
            events bigint NOT NULL,
            CONSTRAINT pk_usage_counters PRIMARY KEY (customer_id, meter, hour, tenant),
            CONSTRAINT ck_usage_counters_kind CHECK (kind IN ('add', 'max'))
        );
        CREATE TABLE usage_uniques (
            customer_id bigint NOT NULL,
            meter text NOT NULL,
            month timestamptz NOT NULL,
            tenant text NOT NULL DEFAULT '',
            value text NOT NULL,
            first_hour timestamptz NOT NULL,
            CONSTRAINT pk_usage_uniques PRIMARY KEY (customer_id, meter, month, tenant, value)
        );
        """
    )


def downgrade() -> None:
    op.execute(
        "DROP TABLE usage_uniques; DROP TABLE usage_counters; DROP TABLE usage_events; "
        "DROP TABLE usage_event_ids;"
    )
