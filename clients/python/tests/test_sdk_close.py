"""A sync client in local mode closes at once, though its change stream is blocked in a
read (heartbeats 30 s apart here): close() wakes the reader instead of waiting out a join."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from tests.conftest import Stores
from tests.factories.auth import create_key
from tests.stream.conftest import serve

from allotment_client import Allotment


@pytest.fixture
async def quiet_service(stores: Stores) -> AsyncIterator[tuple[str, str]]:
    async with serve(stores, stream_heartbeat_s=30) as served:
        key = (await create_key(served.app, scopes=["check"]))["Authorization"][7:]
        yield served.url, key


async def test_a_local_sync_client_closes_promptly(quiet_service: tuple[str, str]) -> None:
    url, key = quiet_service

    def scenario() -> float:
        sdk = Allotment(url, key, local=True, spool=False)
        assert sdk.refresher is not None and sdk.refresher.connected.wait(10)
        time.sleep(0.2)  # the reader is blocked in its read now
        started = time.monotonic()
        sdk.close()
        return time.monotonic() - started

    took = await asyncio.to_thread(scenario)
    assert took < 0.5, took
