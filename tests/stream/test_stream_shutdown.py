"""A worker told to stop (SIGTERM from a supervisor, SIGINT from Ctrl-C) with streams open
stops promptly: uvicorn waits for the requests in flight before it shuts the app down, and
a stream never ends by itself, so the app ends its streams as soon as the signal arrives
(kit/shutdown.py). With the default 15 s heartbeat and a 1 h stream life, a worker that
waited for them would take at least 15 s (the test bounds it by 5 s, a functional bound,
not a benchmark)."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.check.servers import Worker, free_port
from tests.stream.support import Listener

PROMPT_S = 5.0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_worker_with_open_streams_stops_within_seconds(
    stores: Any, backend: dict[str, str], tmp_path: Path, sig: signal.Signals
) -> None:
    worker = Worker(stores.env(), free_port(), tmp_path / "worker.log")
    try:
        await worker.wait_ready()
        url = f"{worker.base_url}/v1/stream"
        async with Listener(url, backend) as one, Listener(url, backend, params={"customer": "x"}):
            assert one.opening is not None
            sent = time.monotonic()
            worker.proc.send_signal(sig)
            await asyncio.wait_for(one.ended.wait(), PROMPT_S)  # the stream ended cleanly
            await asyncio.to_thread(worker.proc.wait, PROMPT_S)
            stopped = time.monotonic() - sent
        print(f"{sig.name}: stopped {stopped:.2f}s after the signal")
        assert stopped < PROMPT_S
        log = worker.log_path.read_text()
        assert "Traceback" not in log, log
    finally:
        worker.terminate()
