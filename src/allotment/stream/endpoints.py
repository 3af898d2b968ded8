"""GET /v1/stream: the change stream as Server-Sent Events (docs/stream.md).

The response is written by hand (an ASGI callable on a Response) rather than by a library:
each stream is one coroutine waiting on its client's queue (hub.py) with the heartbeat as
its timeout, plus one task waiting for the disconnect. The hub, not the response, decides
what goes out, and ends every stream at once when the server starts shutting down.
"""

from __future__ import annotations

import asyncio
import random
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from allotment.auth.principal import CUSTOMER_KEY_PATTERN, Principal
from allotment.config import Settings
from allotment.deps import Require
from allotment.errors import ServiceUnavailable
from allotment.stream import events, ids
from allotment.stream.hub import Client, Hub, Item
from allotment.stream.metrics import STREAM_EVENTS, STREAM_RESYNCS

router = APIRouter(tags=["stream"])

STREAM_GUARD = Require("check", customer_query="customer")
MEDIA_TYPE = "text/event-stream"

_DESCRIPTION = """Server-Sent Events: one `customer.changed` (`{"customer", "state_version",
"committed_at"}`) or `policy.published` (`{"version", "rollback", "committed_at"}`) per
committed change, each with an `id:`; `resync` (`{"reason"}`) when what was missed cannot be
told (refetch the state you hold); a `: heartbeat` comment after `ALLOTMENT_STREAM_HEARTBEAT_S`
of silence. Resume with the `Last-Event-ID` header (or `?last_event_id=`). A `check` key
reads every customer, or the one it names; a `customer:<key>` key must name its own."""


def _event(name: str, data: dict[str, Any], description: str) -> dict[str, Any]:
    """One kind of event as OpenAPI 3.1 documents a `text/event-stream` body: the media
    type's schema describes each event (`event`, `id`, `data`: one line of JSON)."""
    return {
        "type": "object",
        "title": name,
        "description": description,
        "required": ["event", "data"],
        "properties": {
            "event": {"const": name},
            "id": {"type": "string", "description": "Resume after this event with it"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"type": "object", "required": list(data), "properties": data},
            },
        },
    }


_WHEN = {"type": "string", "format": "date-time", "description": "when the writer committed"}
_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",  # (FastAPI's default for a response class is a string)
    "oneOf": [
        _event(
            events.CUSTOMER_CHANGED,
            {
                "customer": {"type": "string"},
                "state_version": {
                    "type": ["integer", "null"],
                    "description": "the version the change moved the customer to; null "
                    "for seat assignments and deleted customers",
                },
                "committed_at": _WHEN,
            },
            "What the customer is entitled to changed: refetch it.",
        ),
        _event(
            events.POLICY_PUBLISHED,
            {
                "version": {"type": ["integer", "null"]},
                "rollback": {"type": "boolean"},
                "committed_at": _WHEN,
            },
            "A policy version became active (by a publish, or a rollback).",
        ),
        _event(
            events.RESYNC,
            {"reason": {"type": "string"}},
            "What this client missed cannot be told: refetch everything; live events follow.",
        ),
    ],
}
_STREAM_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The stream (text/event-stream), until the client goes away, the "
        "server shuts down or `ALLOTMENT_STREAM_MAX_S` passes (then reconnect with "
        "Last-Event-ID).",
        "content": {MEDIA_TYPE: {"schema": _EVENT_SCHEMA}},
    }
}


class EventStream(Response):
    """One client's stream: registered with the hub before the headers go out, so a change
    committed after the client saw them is on its way to it."""

    media_type = MEDIA_TYPE

    def __init__(
        self, hub: Hub, settings: Settings, *, customer: str | None, last_event_id: str | None
    ) -> None:
        self.hub = hub
        self.settings = settings
        self.customer = customer
        self.last_event_id = last_event_id
        self.status_code = 200
        self.background = None
        # No Content-Length: the body has no end. no-store: no cache or proxy keeps it;
        # X-Accel-Buffering: nginx passes each event on at once.
        self.init_headers({"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = self.hub.register(self.customer)
        watcher = asyncio.create_task(_watch_disconnect(receive, client))
        # The writer is a task of its own so that the hub can cancel it at shutdown should
        # it be stuck in a write to a client that stopped reading.
        writer = client.task = asyncio.create_task(self._stream(client, send))
        try:
            await asyncio.wait({writer})
            error = None if writer.cancelled() else writer.exception()
            if error is not None and not isinstance(error, OSError):  # OSError: client gone
                raise error
        finally:
            writer.cancel()
            watcher.cancel()
            self.hub.unregister(client)

    async def _stream(self, client: Client, send: Send) -> None:
        hub, settings = self.hub, self.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.stream_max_s * random.uniform(0.9, 1.0)
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        fresh = self.last_event_id is None
        opening = client.floor if fresh else None
        start = ids.event_id(*opening) if opening is not None else None
        await _write(send, events.opening(settings.stream_retry_ms, start))
        if not fresh:
            assert self.last_event_id is not None
            replayed = await hub.replay(client, self.last_event_id)
            if client.floor is not None:
                client.sent = client.floor
            await _write(send, b"".join(_sent(item) for item in replayed))
        while not client.closed and loop.time() < deadline:
            if client.items:
                frames = [_sent(item) for item in _drain(client)]
                if frames:
                    await _write(send, b"".join(frames))
                continue
            client.wake.clear()
            quiet = min(settings.stream_heartbeat_s, deadline - loop.time())
            try:
                async with asyncio.timeout(quiet):
                    await client.wake.wait()
            except TimeoutError:
                if loop.time() < deadline:
                    await _write(send, events.heartbeat(_advance(hub, client)))
        # The end (the server's send is a no-op if the client went away already).
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _drain(client: Client) -> list[Item]:
    taken: list[Item] = []
    while client.items:
        item = client.items.popleft()
        if client.stale(item):
            continue
        if item.epoch is not None and item.position is not None:
            client.sent = (item.epoch, item.position)
        taken.append(item)
    return taken


def _sent(item: Item) -> bytes:
    STREAM_EVENTS.labels(item.event).inc()
    if item.reason is not None:
        STREAM_RESYNCS.labels(item.reason).inc()
    return item.frame


def _advance(hub: Hub, client: Client) -> str | None:
    """The id a heartbeat carries: the hub's position, when the journal went past the last
    id this client got (with nothing for it in between: its queue is empty)."""
    sent, epoch, at = client.sent, hub.epoch, hub.position
    if not hub.attached or sent is None or epoch != sent[0] or at is None or at <= sent[1]:
        return None
    client.sent = (epoch, at)
    return ids.event_id(epoch, at)


async def _write(send: Send, body: bytes) -> None:
    if body:
        await send({"type": "http.response.body", "body": body, "more_body": True})


async def _watch_disconnect(receive: Receive, client: Client) -> None:
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    finally:
        client.close()


@router.get(
    "/v1/stream",
    status_code=200,  # FastAPI would look for it in EventStream's constructor
    response_class=EventStream,
    responses=_STREAM_RESPONSE,
    description=_DESCRIPTION,
)
async def stream(
    request: Request,
    principal: Annotated[Principal, Depends(STREAM_GUARD)],
    customer: Annotated[
        str | None,
        Query(pattern=CUSTOMER_KEY_PATTERN, description="Only this customer's changes"),
    ] = None,
    last_event_id: Annotated[
        str | None,
        Query(description="Resume after this id (for clients that cannot set headers)"),
    ] = None,
    last_event_id_header: Annotated[
        str | None, Header(alias="Last-Event-ID", description="Resume after this id")
    ] = None,
) -> Response:
    """Committed changes to customers' entitlements and to the policy, as they happen."""
    hub: Hub = request.app.state.stream
    if hub.closing:
        raise ServiceUnavailable("This worker is shutting down: connect again.")
    # The header wins: EventSource sends it on every reconnect, with the URL (and any
    # last_event_id in it) of the first connect.
    resume = last_event_id_header if last_event_id_header is not None else last_event_id
    return EventStream(hub, request.app.state.settings, customer=customer, last_event_id=resume)
