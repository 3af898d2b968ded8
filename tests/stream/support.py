"""What the change-stream tests share: a stream client, and the writes that feed it.

Listener(url, headers, params=…, last_event_id=…)   an SSE client (httpx-sse) reading in
                                                     the background; `.events` is what
                                                     arrived, `await .next(name)` waits
amend(http, headers, contract, limit)                an amendment through the API
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse

# The stream's own events (httpx-sse also yields the opening block and heartbeats that carry
# an id, as events without a name or data: EventSource dispatches neither).
NAMES = frozenset({"customer.changed", "policy.published", "resync"})
WITHIN_S = 10.0  # generous: the 1 s is measured by bench/stream.py, not asserted here


class Listener:
    """A connected stream client; `events` holds the stream's named events in order."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        *,
        params: dict[str, str] | None = None,
        last_event_id: str | None = None,
    ) -> None:
        self.url = url
        self.headers = dict(headers)
        if last_event_id is not None:
            self.headers["Last-Event-ID"] = last_event_id
        self.params = params or {}
        self.events: list[ServerSentEvent] = []
        self.blocks: list[ServerSentEvent] = []  # everything httpx-sse yielded
        self.received_at: list[float] = []  # time.time() at each named event
        self.ended = asyncio.Event()
        self.opening: ServerSentEvent | None = None
        self._http: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Listener:
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None))
        opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._read(opened))
        await asyncio.wait_for(opened, WITHIN_S)
        return self

    async def _read(self, opened: asyncio.Future[None]) -> None:
        assert self._http is not None
        try:
            async with aconnect_sse(
                self._http, "GET", self.url, headers=self.headers, params=self.params
            ) as source:
                status = source.response.status_code
                if status != 200:
                    body = (await source.response.aread()).decode()
                    raise AssertionError(f"stream answered {status}: {body}")
                opened.set_result(None)  # headers in: this client is registered
                async for sse in source.aiter_sse():
                    self.blocks.append(sse)
                    if sse.event in NAMES:
                        self.events.append(sse)
                        self.received_at.append(time.time())
                    elif self.opening is None:
                        self.opening = sse
        except BaseException as exc:
            if not opened.done():
                opened.set_exception(exc)
            elif not isinstance(exc, asyncio.CancelledError | httpx.HTTPError):
                raise
        finally:
            self.ended.set()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
        if self._http is not None:
            await self._http.aclose()

    def named(self, *names: str) -> list[ServerSentEvent]:
        return [e for e in self.events if e.event in names]

    async def until(
        self, probe: Callable[[list[ServerSentEvent]], bool], within: float = WITHIN_S
    ) -> list[ServerSentEvent]:
        """Wait until `probe(events)` holds; returns the events."""
        deadline = time.monotonic() + within
        while not probe(self.events):
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {within}s; events: {self.summary()}")
            if self.ended.is_set() and not probe(self.events):
                raise AssertionError(f"the stream ended; events: {self.summary()}")
            await asyncio.sleep(0.01)
        return self.events

    async def next(
        self, name: str, *, after: int = 0, within: float = WITHIN_S, **data: Any
    ) -> ServerSentEvent:
        """The first event `name` at index ≥ `after` whose data holds `data`."""

        def match(e: ServerSentEvent) -> bool:
            return e.event == name and all(e.json().get(k) == v for k, v in data.items())

        await self.until(lambda events: any(match(e) for e in events[after:]), within)
        return next(e for e in self.events[after:] if match(e))

    def summary(self) -> list[tuple[str, str, str]]:
        return [(e.event, e.id, e.data) for e in self.events]


async def amend(
    http: httpx.AsyncClient, headers: dict[str, str], contract: dict[str, Any], limit: int
) -> dict[str, Any]:
    """Amend `contract` (its seat limit to `limit`) through the API; returns the contract
    now, whose `revision` the next amendment must name."""
    answer = await http.patch(
        f"/v1/contracts/{contract['id']}",
        json={"seats": {"limit": limit}},
        headers={**headers, "If-Match": str(contract["revision"])},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]
