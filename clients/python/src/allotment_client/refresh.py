"""Keeping an `ArtifactCache` fresh: before expiry, and at once on a change-stream event.

    Refresher(client, cache)         sync: two daemon threads (the stream, the refreshes)
    AsyncRefresher(client, cache)    async: two tasks on the running loop

The stream (`GET /v1/stream`, docs/stream.md) is read with httpx-sse; each event goes to
`cache.on_event()`, which marks what it makes stale, and the refresher fetches it again
(`local.fetch_artifact`). A broken stream reconnects after the `retry:` the service asked for
(1 s by default), resuming from the last non-empty id; what cannot be resumed arrives as
`resync`, which refreshes everything. `connected` is set while the stream is open. A key
refused the whole stream (`customer:<key>`, 403) reads its customer's (`?customer=`) once
the cache holds exactly one customer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse, connect_sse

from allotment_client._http import adrive, drive
from allotment_client.artifacts import Artifact
from allotment_client.errors import AllotmentError, from_response
from allotment_client.local import ArtifactCache, fetch_artifact

if TYPE_CHECKING:
    from allotment_client.aio import AsyncAllotment
    from allotment_client.client import Allotment

log = logging.getLogger("allotment_client.refresh")

STREAM_PATH = "/v1/stream"
STREAM_TIMEOUT = httpx.Timeout(10.0, read=60.0)  # heartbeats come every 15 s
EVENTS = frozenset({"customer.changed", "policy.published", "resync"})


class _StreamState:
    """What the sync and async stream readers share: the last id and the retry delay."""

    def __init__(self, cache: ArtifactCache) -> None:
        self.cache = cache
        self.last_id: str | None = None
        self.retry_s = 1.0
        self.forbidden = False  # a `customer:<key>` key: it must name its customer

    def headers(self) -> dict[str, str]:
        return {"Last-Event-ID": self.last_id} if self.last_id else {}

    def params(self) -> dict[str, str] | None:
        """Unfiltered, unless the key may only read one customer's stream: then that of the
        one customer held (none held yet: wait for one)."""
        if not self.forbidden:
            return None
        held = self.cache.customers()
        return {"customer": held[0]} if len(held) == 1 else None

    def refused(self, error: AllotmentError) -> float:
        """The stream was refused: how long to wait before the next try."""
        if error.status == 403 and not self.forbidden:
            self.forbidden = True
            return self.retry_s
        return max(self.retry_s, 30.0) if error.status in (401, 403) else self.retry_s

    def handle(self, sse: ServerSentEvent) -> None:
        if sse.retry:
            self.retry_s = sse.retry / 1000
        if sse.id:
            self.last_id = sse.id  # an empty id (the opening block) is not kept
        if sse.event in EVENTS:
            try:
                data = json.loads(sse.data) if sse.data else {}
            except ValueError:
                data = {}
            self.cache.on_event(sse.event, data if isinstance(data, dict) else {})


class Refresher:
    def __init__(self, client: Allotment, cache: ArtifactCache, *, stream: bool = True) -> None:
        self.client = client
        self.cache = cache
        self.connected = threading.Event()
        self._stopped = threading.Event()
        self._stream_http: httpx.Client | None = None
        self._stream_response: httpx.Response | None = None
        self._threads = [
            threading.Thread(target=self._refresh, name="allotment-refresh", daemon=True)
        ]
        if stream:
            self._threads.append(
                threading.Thread(target=self._stream, name="allotment-stream", daemon=True)
            )
        for thread in self._threads:
            thread.start()

    def fetch(self, customer: str) -> Artifact | None:
        """Fetch `customer`'s artifact now (None: no such customer). Raises what failed."""
        return drive(fetch_artifact(self.cache, customer), self.client._send)

    def artifact(self, customer: str, now: float) -> Artifact | None:
        """The customer's usable artifact; the first time, fetched before answering."""
        found = self.cache.get(customer, now)
        if found is not None or self.cache.knows(customer):
            return found
        try:
            return self.fetch(customer)
        except AllotmentError as exc:
            log.info("no artifact for %s: %s", customer, exc)
            return None

    def _refresh(self) -> None:
        while not self._stopped.is_set():
            generation = self.cache.generation
            ready, upcoming = self.cache.due()
            for customer in ready:
                if self._stopped.is_set():
                    return
                try:
                    self.fetch(customer)
                except Exception as exc:  # recorded in the cache, retried with back-off
                    log.info("artifact refresh for %s failed: %s", customer, exc)
            if not ready:
                wait = 60.0 if upcoming is None else max(0.0, upcoming - time.time())
                self.cache.wait(generation, min(wait, 60.0))

    def _stream(self) -> None:
        state = _StreamState(self.cache)
        config = self.client._config
        while not self._stopped.is_set():
            wait = state.retry_s
            try:
                with httpx.Client(
                    base_url=config.base_url, headers=config.headers(), timeout=STREAM_TIMEOUT
                ) as http:
                    self._stream_http = http
                    with connect_sse(
                        http, "GET", STREAM_PATH, headers=state.headers(), params=state.params()
                    ) as source:
                        response = source.response
                        self._stream_response = response
                        if self._stopped.is_set():
                            break
                        if response.status_code >= 400:
                            raise from_response(
                                response.status_code, response.read(), response.headers
                            )
                        self.connected.set()
                        for sse in source.iter_sse():
                            state.handle(sse)
            except AllotmentError as exc:
                wait = state.refused(exc)
                log.info("change stream refused: %s", exc)
            except Exception as exc:
                if not self._stopped.is_set():
                    log.info("change stream broke: %s", exc)
            finally:
                self.connected.clear()
                self._stream_http = None
                self._stream_response = None
            self._stopped.wait(wait)

    def close(self) -> None:
        self._stopped.set()
        self.cache.notify()
        # A read blocked on the stream's socket (heartbeats come every 15 s) wakes only when
        # the socket is shut down: closing the client alone left close() waiting for the
        # join's timeout.
        response = self._stream_response
        if response is not None:
            stream = response.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        http = self._stream_http
        if http is not None:
            with contextlib.suppress(Exception):
                http.close()
        for thread in self._threads:
            thread.join(2.0)


class AsyncRefresher:
    def __init__(
        self, client: AsyncAllotment, cache: ArtifactCache, *, stream: bool = True
    ) -> None:
        self.client = client
        self.cache = cache
        self.stream = stream
        self.connected = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks.append(loop.create_task(self._refresh()))
            if self.stream:
                self._tasks.append(loop.create_task(self._stream()))

    async def fetch(self, customer: str) -> Artifact | None:
        return await adrive(fetch_artifact(self.cache, customer), self.client._send)

    async def artifact(self, customer: str, now: float) -> Artifact | None:
        found = self.cache.get(customer, now)
        if found is not None or self.cache.knows(customer):
            return found
        try:
            return await self.fetch(customer)
        except AllotmentError as exc:
            log.info("no artifact for %s: %s", customer, exc)
            return None

    async def _refresh(self) -> None:
        while True:
            ready, upcoming = self.cache.due()
            for customer in ready:
                try:
                    await self.fetch(customer)
                except Exception as exc:
                    log.info("artifact refresh for %s failed: %s", customer, exc)
            if not ready:
                # Stream events mark customers due from this same loop: a short poll
                # notices them without a cross-thread wake-up.
                wait = 0.05 if upcoming is None else max(0.0, upcoming - time.time())
                await asyncio.sleep(min(wait, 0.05))

    async def _stream(self) -> None:
        state = _StreamState(self.cache)
        config = self.client._config
        while True:
            wait = state.retry_s
            try:
                async with (
                    httpx.AsyncClient(
                        base_url=config.base_url, headers=config.headers(), timeout=STREAM_TIMEOUT
                    ) as http,
                    aconnect_sse(
                        http, "GET", STREAM_PATH, headers=state.headers(), params=state.params()
                    ) as source,
                ):
                    response = source.response
                    if response.status_code >= 400:
                        body: Any = await response.aread()
                        raise from_response(response.status_code, body, response.headers)
                    self.connected.set()
                    async for sse in source.aiter_sse():
                        state.handle(sse)
            except asyncio.CancelledError:
                raise
            except AllotmentError as exc:
                wait = state.refused(exc)
                log.info("change stream refused: %s", exc)
            except Exception as exc:
                log.info("change stream broke: %s", exc)
            finally:
                self.connected.clear()
            await asyncio.sleep(wait)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
