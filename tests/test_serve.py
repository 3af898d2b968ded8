"""Zero configuration, end to end: `allotment serve --migrate --demo` with no URLs set.

This is what `make run` does on a fresh machine: start the embedded PostgreSQL and Redis
under ALLOTMENT_DATA_DIR, migrate, seed the demo, print a key, serve; Ctrl-C stops it all;
a second run reuses the data and does not seed twice.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

ALLOTMENT = str(Path(sys.executable).parent / "allotment")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    def __init__(self, data_dir: Path, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALLOTMENT_")}
        env.update(ALLOTMENT_DATA_DIR=str(data_dir), ALLOTMENT_PORT=str(port))
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [ALLOTMENT, "serve", "--migrate", "--demo"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def output_until_ready(self, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None, "serve exited early"
            time.sleep(0.2)
        else:
            raise AssertionError("serve did not become ready")
        out = []
        while not self.lines.empty():
            out.append(self.lines.get())
        return "".join(out)

    def interrupt(self) -> int:
        children = psutil.Process(self.proc.pid).children(recursive=True)
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=60)
        psutil.wait_procs(children, timeout=10)
        return code


def _embedded_alive(data_dir: Path) -> list[str]:
    """PostgreSQL names its data dir on the command line; redis-server runs in it (its cwd)."""
    alive = []
    for proc in psutil.process_iter(["cmdline", "name"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            in_dir = str(data_dir) in cmdline or proc.cwd().startswith(str(data_dir))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if in_dir and ("postgres" in cmdline or "redis" in (proc.info["name"] or "")):
            alive.append(cmdline)
    return alive


def test_serve_zero_config_then_restart_reuses_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = _free_port()
    first = Served(data_dir, port)
    try:
        output = first.output_until_ready()
        key = next(line.strip() for line in output.splitlines() if line.strip().startswith("alm_"))
        assert f"curl -s -H 'Authorization: Bearer {key}' http://127.0.0.1:{port}" in output
        headers = {"Authorization": f"Bearer {key}"}
        created = httpx.post(
            first.base + "/v1/customers", json={"key": "newco", "name": "NewCo"}, headers=headers
        )
        assert created.status_code == 201
        keys = [
            c["key"]
            for c in httpx.get(first.base + "/v1/customers", headers=headers).json()["items"]
        ]
        assert "acme" in keys and "newco" in keys
        running = _embedded_alive(data_dir)
        assert any("redis" in c for c in running) and any("postgres" in c for c in running)
    finally:
        first.interrupt()
    assert _embedded_alive(data_dir) == []

    second = Served(data_dir, port)
    try:
        output = second.output_until_ready()
        assert "already present" in output and "alm_" not in output
        again = httpx.get(second.base + "/v1/customers", headers=headers).json()["items"]
        assert [c["key"] for c in again] == keys
    finally:
        assert second.interrupt() == 0
    assert _embedded_alive(data_dir) == []
