"""The few ASGI pieces the agent's routes share: reading a body (bounded), sending an
answer, sending a problem document."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from .shapes import PROBLEM_MEDIA_TYPE, problem

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON = b"application/json"
DECIDED_BY = b"allotment-decided-by"
BY_AGENT = [(DECIDED_BY, b"agent")]
MAX_BODY = 1_048_576  # the service's default ALLOTMENT_MAX_BODY_BYTES


class BodyTooLarge(Exception):
    pass


async def read_body(receive: Receive) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        if len(body) > MAX_BODY:
            raise BodyTooLarge
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def respond(
    send: Send,
    status: int,
    body: bytes | None,
    content_type: bytes = JSON,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    listed = [*headers]
    if body is not None:
        listed.append((b"content-type", content_type))
    listed.append((b"content-length", b"%d" % len(body or b"")))
    await send({"type": "http.response.start", "status": status, "headers": listed})
    await send({"type": "http.response.body", "body": body or b""})


async def respond_problem(
    send: Send,
    status: int,
    detail: str,
    *,
    errors: list[dict[str, str]] | None = None,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    await respond(send, status, problem(status, detail, errors=errors), PROBLEM_MEDIA_TYPE, headers)
