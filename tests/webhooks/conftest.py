"""Webhook fixtures: an app that may send to 127.0.0.1, short back-offs, a real receiver,
and `allotment worker` processes against the test database."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from allotment.app import create_app
from allotment.webhooks.delivery import DeliveryLoop
from tests.conftest import Stores, reset
from tests.factories.auth import create_key
from tests.webhooks.receiver import Receiver

ALLOTMENT = str(Path(sys.executable).parent / "allotment")

# Seconds, not hours: retries within a test's patience; the lease outlasts the timeout.
FAST = {
    "webhooks_allow_private": True,
    "webhooks_timeout_s": 3.0,
    "webhooks_lease_s": 4.0,
    "webhooks_backoff_base_s": 0.2,
    "webhooks_backoff_cap_s": 0.5,
    "webhooks_poll_s": 0.2,
    "webhooks_slow_s": 0.5,
}


def fast_env(stores: Stores, **overrides: Any) -> dict[str, str]:
    values = {**FAST, **overrides}
    return {
        **stores.env(),
        **{
            f"ALLOTMENT_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in values.items()
        },
    }


@pytest.fixture(scope="session")
async def hooks_app(stores: Stores) -> AsyncIterator[Any]:
    application = create_app(stores.settings(**FAST))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def api(hooks_app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the webhook-enabled app with an admin key, on empty tables."""
    await reset(hooks_app)
    headers = await create_key(hooks_app, scopes=["admin"])
    transport = httpx.ASGITransport(app=hooks_app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=headers
    ) as http:
        yield http


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


@pytest.fixture
async def delivering(hooks_app: Any, stores: Stores) -> AsyncIterator[DeliveryLoop]:
    """The delivery loop, in this process, on the app's sessionmaker."""
    loop = DeliveryLoop(
        hooks_app.state.sessionmaker, hooks_app.state.settings, database_url=stores.database_url
    )
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    yield loop
    stop.set()
    await task
    await loop.aclose()


class Workers:
    """`allotment worker` processes; killed at the end of the test."""

    def __init__(self, stores: Stores, tmp: Path) -> None:
        self.stores, self.tmp = stores, tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, **overrides: Any) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [ALLOTMENT, "worker", "--interval", "30"],
            env=fast_env(self.stores, **overrides),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.tmp,
        )
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.tmp.glob("worker-*.log")))

    def close(self) -> None:
        # Killed, not stopped: a graceful stop is not what these tests are about, and the
        # tables are emptied before the next test.
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc)


@pytest.fixture
def workers(stores: Stores, tmp_path: Path) -> Iterator[Workers]:
    running = Workers(stores, tmp_path)
    yield running
    running.close()


async def until(
    condition: Callable[[], bool | Awaitable[bool]], *, within: float = 20.0, what: str = ""
) -> None:
    """Wait for `condition` (polled every 50 ms); fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.05)
