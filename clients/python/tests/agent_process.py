"""The sidecar agent as a real process for the tests: `allotment agent ...` (the server CLI
delegating to `allotment-agent`), which a test can SIGKILL and start again on its spool."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

BIN = Path(sys.executable).parent


class AgentProcess:
    def __init__(
        self, upstream: str, key: str, spool: Path, log_path: Path, *options: str, port: int
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.args = [
            str(BIN / "allotment"),
            "agent",
            "--upstream",
            upstream,
            "--key",
            key,
            "--listen",
            f"127.0.0.1:{port}",
            "--spool",
            str(spool),
            "--flush-interval",
            "0.05",
            *options,
        ]
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)

    async def wait_ready(self, within: float = 30.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(base_url=self.url, timeout=2.0) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"agent exited early:\n{self.log_path.read_text()}")
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError(f"agent not ready:\n{self.log_path.read_text()}")

    async def health(self) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.url, timeout=5.0) as http:
            return (await http.get("/healthz")).json()  # type: ignore[no-any-return]

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
