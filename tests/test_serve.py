"""Zero configuration, end to end: `allotment serve --migrate --demo` with no URLs set.

This is what `make run` does on a fresh machine: start the embedded PostgreSQL and Redis
under ALLOTMENT_DATA_DIR, migrate, seed the demo, print a key, serve; Ctrl-C stops it all;
a second run reuses the data and does not seed twice.
"""

from __future__ import annotations

import json
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


def _env(data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLOTMENT_")}
    env.update(ALLOTMENT_DATA_DIR=str(data_dir), ALLOTMENT_PORT=str(port))
    return env


class Served:
    def __init__(self, data_dir: Path, port: int, *flags: str) -> None:
        env = _env(data_dir, port)
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [ALLOTMENT, "serve", *(flags or ("--migrate", "--demo"))],
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


def _key(output: str) -> str:
    return next(line.strip() for line in output.splitlines() if line.strip().startswith("alm_"))


def test_the_cli_beside_a_running_server_leaves_its_embedded_servers_running(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    port = _free_port()
    served = Served(data_dir, port)
    try:
        headers = {"Authorization": f"Bearer {_key(served.output_until_ready())}"}
        body = {"customer": "acme", "feature": "reports"}
        before = httpx.post(served.base + "/v1/check", json=body, headers=headers).json()
        redis_before = [c for c in _embedded_alive(data_dir) if "redis" in c]
        # What the README suggests for a lost key, while `make run` serves.
        minted = subprocess.run(
            [ALLOTMENT, "api-keys", "create", "--name", "lost", "--scope", "check"],
            env=_env(data_dir, port),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert minted.returncode == 0, minted.stderr
        # Leaving the servers to the one still using them is not an error worth a traceback.
        assert "Traceback" not in minted.stderr and "did not stop" not in minted.stderr
        new_key = minted.stdout.strip().splitlines()[-1]
        assert [c for c in _embedded_alive(data_dir) if "redis" in c] == redis_before
        assert httpx.get(served.base + "/readyz", timeout=5).status_code == 200
        after = httpx.post(
            served.base + "/v1/check",
            json=body,
            headers={"Authorization": f"Bearer {new_key}"},
        )
        assert after.status_code == 200, after.text
        assert after.json()["cache_ttl_s"] == before["cache_ttl_s"]  # the bus is still heard
        # Invalidation still reaches the server: a revoked key stops working at once.
        keys = httpx.get(served.base + "/v1/api-keys", headers=headers).json()["items"]
        lost = next(k for k in keys if k["name"] == "lost")
        assert httpx.delete(served.base + f"/v1/api-keys/{lost['id']}", headers=headers).is_success
        refused = httpx.post(
            served.base + "/v1/check", json=body, headers={"Authorization": f"Bearer {new_key}"}
        )
        assert refused.status_code == 401
        # A policy published by the CLI reaches the server's cached snapshots at once (the
        # CLI sends on the same bus), not after their cache TTL.
        active = httpx.get(served.base + "/v1/policies/active", headers=headers).json()
        document = active["document"]
        document["features"]["cli_published"] = {}
        policy_file = tmp_path / "policy.json"
        policy_file.write_text(json.dumps(document))
        warm = httpx.post(served.base + "/v1/check", json=body, headers=headers).json()
        assert warm["policy_version"] == active["version"]
        published = subprocess.run(
            [ALLOTMENT, "policy", "publish", str(policy_file)],
            env=_env(data_dir, port),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert published.returncode == 0, published.stderr
        seen = httpx.post(served.base + "/v1/check", json=body, headers=headers).json()
        assert seen["policy_version"] == active["version"] + 1, seen
    finally:
        assert served.interrupt() == 0
    assert _embedded_alive(data_dir) == []  # the last one out stopped them


def test_a_first_serve_without_demo_prints_an_admin_key_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = _free_port()
    first = Served(data_dir, port, "--migrate")
    try:
        key = _key(first.output_until_ready())
        listed = httpx.get(first.base + "/v1/customers", headers={"Authorization": f"Bearer {key}"})
        assert listed.status_code == 200 and listed.json()["items"] == []
    finally:
        first.interrupt()
    second = Served(data_dir, port, "--migrate")
    try:
        assert "alm_" not in second.output_until_ready()
    finally:
        assert second.interrupt() == 0


def test_sigterm_stops_the_embedded_servers_and_a_dead_user_does_not_pin_them(
    tmp_path: Path,
) -> None:
    """`kill` (SIGTERM), as a service manager stops it, used to end the process before the
    embedded servers were stopped: PostgreSQL ran on, and its list of users kept the dead
    pid, so no later run ever stopped it either."""
    data_dir = tmp_path / "data"
    port = _free_port()
    first = Served(data_dir, port, "--migrate")
    first.output_until_ready()
    children = psutil.Process(first.proc.pid).children(recursive=True)
    first.proc.send_signal(signal.SIGTERM)
    first.proc.wait(timeout=60)
    psutil.wait_procs(children, timeout=10)
    assert _embedded_alive(data_dir) == []

    # A user killed outright (SIGKILL) stays in pgserver's list; the next run prunes it.
    handles = data_dir / "pg" / ".handle_pids.json"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    second = Served(data_dir, port, "--migrate")
    second.output_until_ready()
    handles.write_text(json.dumps([gone.pid, *json.loads(handles.read_text())]))
    assert second.interrupt() == 0
    assert _embedded_alive(data_dir) == []
