"""Alembic environment: runs online against ALLOTMENT_DATABASE_URL or a given connection."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool

from allotment.db import Base, async_url
from allotment.models import load_all

load_all()
target_metadata = Base.metadata
config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url") or os.environ["ALLOTMENT_DATABASE_URL"]
    engine = create_engine(async_url(url), poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


run()
