"""Running the Alembic migrations from code (CLI, tests, `serve --migrate`)."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, pool

from allotment.db import async_url


def migrations_dir() -> Path:
    configured = os.environ.get("ALLOTMENT_MIGRATIONS_DIR")
    candidates = [Path(configured)] if configured else []
    candidates += [Path(__file__).resolve().parents[2] / "migrations", Path.cwd() / "migrations"]
    for candidate in candidates:
        if (candidate / "env.py").exists():
            return candidate
    raise FileNotFoundError("migrations/ not found; set ALLOTMENT_MIGRATIONS_DIR")


def upgrade(database_url: str, revision: str = "head") -> None:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    engine = create_engine(async_url(database_url), poolclass=pool.NullPool)
    with engine.begin() as conn:
        # One migrator at a time, even when several replicas start together.
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7478001)")
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    engine.dispose()
