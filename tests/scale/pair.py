"""A PostgreSQL primary and its streaming replica, two real server processes a test owns.

    Pair.start(workdir)     initdb a primary, start it on a free local port, copy it with
                            `pg_basebackup -R` (a standby.signal and primary_conninfo) and
                            start the copy on another free port: a hot standby streaming
                            from the primary
    pair.pause_replay() / resume_replay()     pg_wal_replay_pause() / _resume() on the replica
    pair.stop_replica() / start_replica()     `pg_ctl stop -m fast`, then start it again
    pair.close()                              both stopped

The binaries are pgserver's (a dependency of the project) or, failing that, a system
PostgreSQL's; `binaries()` is None when neither has pg_basebackup, and the tests skip. As
root, PostgreSQL refuses to run: the servers then run as pgserver's own system user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.check.servers import free_port

NEEDED = ("initdb", "pg_ctl", "pg_basebackup", "postgres")
SYSTEM_BINARIES = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def binaries() -> Path | None:
    """A directory holding every binary the pair needs, or None."""
    candidates: list[Path] = []
    try:
        from pgserver._commands import POSTGRES_BIN_PATH

        candidates.append(Path(POSTGRES_BIN_PATH))
    except ImportError:
        pass
    candidates.extend(SYSTEM_BINARIES)
    for directory in candidates:
        if all((directory / name).is_file() for name in NEEDED):
            return directory
    return None


def _run_as() -> str | None:
    """The system user the servers run as: pgserver's when this process is root."""
    if os.geteuid() != 0:
        return None
    from pgserver.utils import ensure_user_exists

    ensure_user_exists("pgserver")
    return "pgserver"


@dataclass
class Server:
    pgdata: Path
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> list[tuple[object, ...]]:
        with psycopg.connect(self.url(database), autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []


class Pair:
    def __init__(self, workdir: Path, bin_dir: Path) -> None:
        self.workdir = workdir
        self.bin = bin_dir
        self.user = _run_as()
        self.primary = Server(workdir / "primary", free_port())
        self.replica = Server(workdir / "replica", free_port())

    @classmethod
    def start(cls, workdir: Path, bin_dir: Path) -> Pair:
        workdir.mkdir(parents=True, exist_ok=True)
        pair = cls(workdir, bin_dir)
        if pair.user is not None:
            from pgserver.utils import ensure_prefix_permissions

            shutil.chown(workdir, user=pair.user)
            ensure_prefix_permissions(workdir)
        pair._run("initdb", "-D", str(pair.primary.pgdata), "-U", "postgres", "--auth=trust")
        pair._pg_ctl(pair.primary, "start")
        try:
            pair._run(
                "pg_basebackup",
                *("-D", str(pair.replica.pgdata), "-R", "-X", "stream", "-c", "fast"),
                *("-h", "127.0.0.1", "-p", str(pair.primary.port), "-U", "postgres"),
            )
            pair._pg_ctl(pair.replica, "start")
        except BaseException:
            pair.close()
            raise
        return pair

    def _run(self, program: str, *args: str) -> None:
        subprocess.run(
            [str(self.bin / program), *args],
            check=True,
            capture_output=True,
            user=self.user,
            cwd=self.workdir,
            timeout=60,
        )

    def _pg_ctl(self, server: Server, action: str) -> None:
        options = (
            f"-p {server.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
            "-c fsync=off -c wal_receiver_status_interval=1s"
        )
        args = ["-D", str(server.pgdata), "-l", str(server.pgdata.with_suffix(".log")), "-w"]
        if action == "start":
            args += ["-o", options]
        else:
            args += ["-m", "fast"]
        self._run("pg_ctl", *args, action)

    def create_database(self, name: str) -> str:
        self.primary.sql(f'CREATE DATABASE "{name}"')
        return self.primary.url(name)

    def pause_replay(self) -> None:
        self.replica.sql("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        self.replica.sql("SELECT pg_wal_replay_resume()")

    def stop_replica(self) -> None:
        self._pg_ctl(self.replica, "stop")

    def start_replica(self) -> None:
        self._pg_ctl(self.replica, "start")

    def close(self) -> None:
        for server in (self.replica, self.primary):
            if (server.pgdata / "postmaster.pid").exists():
                with contextlib.suppress(subprocess.SubprocessError):
                    self._pg_ctl(server, "stop")
