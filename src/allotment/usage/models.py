"""Usage tables, as Core tables (ingestion and reads use Core only; migrations 0007 and 0013
own the DDL).

    usage_event_ids   (source, id) primary key: the dedupe set; one row per accepted event,
                      with its payload's `digest` (0013; NULL before it) to tell a duplicate
                      from a conflict
    usage_events      every accepted event, partitioned by month on `time`
    usage_counters    per (customer, meter, hour, tenant): `value` (a sum, a count, or for
                      `kind = max` the greatest) and `events`, kept exact at ingest
    usage_uniques     per (customer, meter, month, tenant): each unique value seen, and the
                      hour it was first seen (where its +1 went)

Tenant is '' in counters and uniques when an event names none (a primary key has no NULLs).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    LargeBinary,
    MetaData,
    Numeric,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

from allotment.db import Base

TZ = DateTime(timezone=True)
metadata: MetaData = Base.metadata

usage_event_ids = Table(
    "usage_event_ids",
    metadata,
    Column("source", Text, primary_key=True),
    Column("id", Text, primary_key=True),
    Column("customer_id", BigInteger),
    Column("time", TZ, nullable=False),
    Column("received_at", TZ, nullable=False),
    Column("digest", LargeBinary),  # events.digest; NULL: claimed before 0013, or lifecycle
)

usage_events = Table(
    "usage_events",
    metadata,
    Column("customer_id", BigInteger),
    Column("tenant", Text),
    Column("type", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("id", Text, nullable=False),
    Column("time", TZ, nullable=False),
    Column("data", JSONB),
    Column("extensions", JSONB),
    Column("received_at", TZ, nullable=False),
    postgresql_partition_by="RANGE (time)",
)

usage_counters = Table(
    "usage_counters",
    metadata,
    Column("customer_id", BigInteger, primary_key=True),
    Column("meter", Text, primary_key=True),
    Column("hour", TZ, primary_key=True),
    Column("tenant", Text, primary_key=True, server_default=""),
    Column("kind", Text, nullable=False),
    Column("value", Numeric, nullable=False),
    Column("events", BigInteger, nullable=False),
)

usage_uniques = Table(
    "usage_uniques",
    metadata,
    Column("customer_id", BigInteger, primary_key=True),
    Column("meter", Text, primary_key=True),
    Column("month", TZ, primary_key=True),
    Column("tenant", Text, primary_key=True, server_default=""),
    Column("value", Text, primary_key=True),
    Column("first_hour", TZ, nullable=False),
)
