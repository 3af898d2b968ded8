"""The change stream served over real HTTP: uvicorn in the test's event loop, on the test
worker's PostgreSQL and Redis namespace (so writes made through the session `client`, another
app instance, reach it through the journal as another worker's would)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn

from allotment.app import create_app
from allotment.stream.hub import Hub
from tests.check.servers import free_port
from tests.conftest import Stores

HEARTBEAT_S = 0.3


@dataclass
class Served:
    app: Any
    url: str

    @property
    def hub(self) -> Hub:
        return self.app.state.stream  # type: ignore[no-any-return]

    @property
    def stream(self) -> str:
        return f"{self.url}/v1/stream"


@contextlib.asynccontextmanager
async def serve(stores: Stores, **settings: Any) -> AsyncIterator[Served]:
    app = create_app(stores.settings(**{"stream_max_s": 3600.0, **settings}))
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    # The test process keeps its own signal handlers (uvicorn would take SIGINT and SIGTERM).
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started and app.state.stream.attached:
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        assert server.started and app.state.stream.attached, "the server did not start"
        yield Served(app, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)


@pytest.fixture(scope="module")
async def served(stores: Stores) -> AsyncIterator[Served]:
    async with serve(stores, stream_heartbeat_s=HEARTBEAT_S) as running:
        yield running
