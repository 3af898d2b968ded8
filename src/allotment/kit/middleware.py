"""Pure ASGI middleware: request ids and access logs, body size limits, content types.

Pure ASGI (not BaseHTTPMiddleware) because these wrap the /v1/check hot path.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from allotment.errors import problem_response
from allotment.kit.ids import new_id
from allotment.kit.metrics import REQUEST_LATENCY

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContext:
    """Gives each request an id (or keeps a sane incoming X-Request-Id), binds it to every
    log line, returns it in `X-Request-Id`, and records latency by route template."""

    def __init__(self, app: ASGIApp, path_of: Callable[[Scope], str] | None = None) -> None:
        self.app = app
        # The path the access line shows for a route with path parameters (default: as
        # requested). The app's hides subjects (docs/privacy.md).
        self._path_of: Callable[[Scope], str] = path_of or _requested
        self._histograms: dict[tuple[str, str, int], Any] = {}
        # A concrete logger, bound once (the configuration in force when the app's
        # middleware stack is built): a lazy proxy re-binds on every call.
        self._log = structlog.get_logger("allotment.access").bind()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _VALID_REQUEST_ID.match(candidate):
                    request_id = candidate
                break
        request_id = request_id or new_id("req")
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        header = (b"x-request-id", request_id.encode())
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            labels = (scope["method"], template, status)
            histogram = self._histograms.get(labels)
            if histogram is None:
                histogram = REQUEST_LATENCY.labels(scope["method"], template, str(status))
                self._histograms[labels] = histogram
            histogram.observe(elapsed)
            self._log.info(
                "request",
                method=scope["method"],
                # Only a route with path parameters may need another path (not /v1/check's).
                path=self._path_of(scope) if scope.get("path_params") else scope["path"],
                route=template,
                status=status,
                ms=round(elapsed * 1000, 3),
            )


def _requested(scope: Scope) -> str:
    return str(scope["path"])


_BODY_METHODS = {"POST", "PUT", "PATCH"}
ACCEPTED_MEDIA_TYPES = (
    "application/json",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "application/merge-patch+json",
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
    # POST /v1/policies documents and parses these too (policy/validation.py).
    "text/json",
    "text/x-yaml",
)


class BodyGuard:
    """Refuses bodies over `max_bytes` (413, by Content-Length or while streaming) and bodies
    whose Content-Type is not one the API reads (415), before any endpoint parses them; and
    paths or query strings holding a NUL (400), which no key, id or filter can contain and
    PostgreSQL cannot even be asked about.

    `protocols` maps path prefixes that speak another protocol (OFREP) to the renderer of
    that protocol's refusal (status, detail, path → response); their bodies are whatever the
    protocol says they are, so their Content-Type is not checked."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        protocols: Mapping[str, Callable[[int, str, str], Response]] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.protocols = dict(protocols or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or _has_nul(scope.get("query_string", b"")):
            await self._reject(scope, send, 400, "The path or query string holds a NUL (%00).")
            return
        if scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length_raw = headers.get(b"content-length")
        has_body = b"transfer-encoding" in headers
        if length_raw is not None:
            try:
                length = int(length_raw)
                if length < 0:
                    raise ValueError(length)
            except ValueError:
                await self._reject(scope, send, 400, "Content-Length is not a number.")
                return
            if length > self.max_bytes:
                await self._reject(scope, send, 413, self._too_large())
                return
            has_body = has_body or length > 0
        if has_body and not self._readable(headers, scope["path"]):
            await self._reject_media_type(scope, send, headers)
            return

        if length_raw is None:
            # No Content-Length: chunked, or a server that frames bodies without either header
            # (HTTP/2). Buffer up to the limit, then hand the body on.
            chunks: list[bytes] = []
            received = 0
            more = True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    return
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > self.max_bytes:
                    await self._reject(scope, send, 413, self._too_large())
                    return
                chunks.append(chunk)
                more = message.get("more_body", False)
            body = b"".join(chunks)
            if body and not has_body and not self._readable(headers, scope["path"]):
                await self._reject_media_type(scope, send, headers)
                return
            delivered = False

            async def replay() -> Message:
                nonlocal delivered
                if delivered:
                    return await receive()
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, send)
            return
        await self.app(scope, receive, send)

    def _protocol(self, path: str) -> Callable[[int, str, str], Response] | None:
        for prefix, render in self.protocols.items():
            if path.startswith(prefix):
                return render
        return None

    def _readable(self, headers: dict[bytes, bytes], path: str) -> bool:
        if self._protocol(path) is not None:
            return True
        if path == "/v1/events" and any(name.startswith(b"ce-") for name in headers):
            # A CloudEvent in binary content mode (`ce-*` headers): its body is the event's
            # data, of whatever type `Content-Type` says; POST /v1/events decides, and names
            # a missing `ce-specversion` (usage/binding.py).
            return True
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().decode("latin-1")
        return media_type.lower() in ACCEPTED_MEDIA_TYPES

    async def _reject_media_type(
        self, scope: Scope, send: Send, headers: dict[bytes, bytes]
    ) -> None:
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().decode("latin-1")
        shown = media_type or "none"
        wanted = "application/json"
        if scope["path"].startswith("/v1/policies"):
            wanted += ", or application/yaml for a policy document"
        detail = f"Content-Type {shown!r} is not accepted; send {wanted}."
        await self._reject(scope, send, 415, detail)

    def _too_large(self) -> str:
        return f"The request body exceeds the limit of {self.max_bytes} bytes."

    async def _reject(self, scope: Scope, send: Send, status: int, detail: str) -> None:
        request_id: Any = scope.get("state", {}).get("request_id")
        render = self._protocol(scope["path"])
        if render is not None:
            response = render(status, detail, scope["path"])
        else:
            response = problem_response(
                status, detail, instance=scope["path"], request_id=request_id
            )
        await response(scope, _drain, send)


def _has_nul(query: bytes) -> bool:
    return b"\x00" in query or b"%00" in query


async def _drain() -> Message:
    return {"type": "http.disconnect"}
