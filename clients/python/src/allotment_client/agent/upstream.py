"""The agent's upstream: requests forwarded with the agent's own key, and a liveness probe.

A forwarded request keeps the caller's body, query string, `Idempotency-Key`,
`If-None-Match` and `Accept`, never its `Authorization`; the answer comes back as the
service gave it, marked `Allotment-Decided-By: upstream`. No answer at all: 503
problem+json, or on the OFREP routes 429 with `Retry-After` (the protocol's "come back
later"), marked `none`.
"""

from __future__ import annotations

import asyncio
import logging

import httpx

from allotment_client import __version__

from .asgi import DECIDED_BY, Scope, Send, respond, respond_problem
from .metrics import Metrics
from .settings import AgentSettings

log = logging.getLogger("allotment_client.agent")

PROBE_INTERVAL_S = 2.0
# Headers a forwarded request keeps; the caller's Authorization never leaves the agent.
FORWARDED_HEADERS = frozenset({b"idempotency-key", b"if-none-match", b"accept"})
RETURNED_HEADERS = (
    "content-type",
    "retry-after",
    "etag",
    "www-authenticate",
    "idempotent-replayed",
)


class Upstream:
    def __init__(self, settings: AgentSettings, metrics: Metrics) -> None:
        self.metrics = metrics
        self.up: bool | None = None  # the last probe of its /healthz answered
        # The last forwarded call that failed — no answer, a 5xx, or the agent's key refused
        # (401/403: every caller would see it) — cleared by the next success.
        self.last_error: str | None = None
        self.http = httpx.AsyncClient(
            base_url=settings.upstream,
            headers={
                "Authorization": f"Bearer {settings.key}",
                "User-Agent": f"allotment-agent/{__version__}",
            },
            timeout=httpx.Timeout(10.0, connect=2.0),
            # As many kept connections as callers are likely to have in flight: a pool
            # smaller than the concurrency opens and closes a connection per forward.
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=128),
        )

    async def probe(self) -> None:
        while True:
            try:
                answer = await self.http.get("/healthz", timeout=1.0)
                self.up = answer.status_code < 500
            except httpx.HTTPError:
                self.up = False
            await asyncio.sleep(PROBE_INTERVAL_S)

    async def close(self) -> None:
        await self.http.aclose()

    async def forward(self, scope: Scope, body: bytes, send: Send, *, endpoint: str) -> None:
        """The request, sent upstream with the agent's key; its answer passed back as it
        came. No answer at all: 503 problem+json (OFREP: 429 with Retry-After, the
        protocol's "come back later")."""
        # The body was read as JSON here, whatever the caller labelled it (`curl -d` says
        # form-urlencoded): the upstream is told what it is.
        headers = [
            (name.decode(), value.decode("latin-1"))
            for name, value in scope["headers"]
            if name in FORWARDED_HEADERS
        ]
        headers.append(("content-type", "application/json"))
        path = scope["path"] + (
            ("?" + scope["query_string"].decode("latin-1")) if scope.get("query_string") else ""
        )
        try:
            answer = await self.http.request(scope["method"], path, content=body, headers=headers)
        except httpx.HTTPError as exc:
            self.metrics.upstream_errors.labels("unreachable").inc()
            self.last_error = f"{scope['path']}: unreachable ({type(exc).__name__})"
            self.metrics.by[endpoint, "unavailable"].inc()
            log.info("upstream unreachable for %s: %s", scope["path"], exc)
            retry = [(b"retry-after", b"1"), (DECIDED_BY, b"none")]
            if endpoint.startswith("ofrep"):
                await respond(send, 429, None, headers=retry)
            else:
                await respond_problem(
                    send,
                    503,
                    "The upstream cannot be reached and no artifact the agent holds decides this",
                    headers=retry,
                )
            return
        if answer.status_code >= 500:
            self.metrics.upstream_errors.labels("5xx").inc()
        if answer.status_code in (401, 403) and not (self.last_error or "").endswith(
            f": {answer.status_code}"
        ):
            # Logged once until a call succeeds again: every forwarded call would say so.
            log.warning(
                "the upstream refused the agent's key (--key) for %s: %d %s",
                scope["path"],
                answer.status_code,
                answer.text[:200],
            )
        if answer.status_code >= 500 or answer.status_code in (401, 403):
            self.last_error = f"{scope['path']}: {answer.status_code}"
        elif answer.status_code < 400:
            self.last_error = None
        self.metrics.by[endpoint, "upstream"].inc()
        returned = [
            (name.encode(), answer.headers[name].encode("latin-1"))
            for name in RETURNED_HEADERS
            if name in answer.headers
        ]
        returned.append((DECIDED_BY, b"upstream"))
        listed = [*returned, (b"content-length", b"%d" % len(answer.content))]
        await send({"type": "http.response.start", "status": answer.status_code, "headers": listed})
        await send({"type": "http.response.body", "body": answer.content})
