"""The agent as an ASGI application: routes, local decisions, forwarding, the event spool.

    POST /v1/check, /v1/check/batch      from the customer's artifact when it decides
                                         (`local.decide`), else forwarded
    POST /ofrep/v1/evaluate/flags/{key}  a feature flag likewise; limit flags forwarded
    POST /ofrep/v1/evaluate/flags        forwarded (limit flags need the catalog)
    POST /v1/events                      spooled (fsync) → 202; delivered by the SDK's
                                         AsyncTracker until the upstream acknowledges them
    GET  /healthz, /metrics

A plain ASGI callable rather than a framework app: a warm local check is a JSON parse, a
few field checks, two dictionary lookups and a cached encoding, and a router, dependency
solving and response models would cost more than all of that (bench/agent.py).
The artifacts, their refresh and the change stream are the SDK's (`AsyncAllotment` in local
mode: `ArtifactCache` and `AsyncRefresher`); the spool and the sender too (`Spool`,
`EventQueue(durable=True)`, `AsyncTracker`). Customers are learnt from requests: the first
check of a customer starts fetching its artifact and is forwarded meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import unquote

import orjson
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from allotment_client.aio import AsyncAllotment
from allotment_client.artifacts import Artifact
from allotment_client.events import AsyncTracker, EventQueue
from allotment_client.local import ArtifactCache, decide
from allotment_client.models import Decision
from allotment_client.refresh import AsyncRefresher
from allotment_client.spool import Spool, event_key

from .asgi import (
    BY_AGENT,
    MAX_BODY,
    BodyTooLarge,
    Receive,
    Scope,
    Send,
    read_body,
    respond,
    respond_problem,
)
from .intake import Refused, events_of, problems
from .metrics import Metrics
from .settings import AgentSettings
from .shapes import (
    CheckInput,
    DecisionBytes,
    Invalid,
    OfrepFailure,
    check_body,
    flag_bytes,
    is_limit_flag,
    ofrep_context,
    ofrep_input,
)
from .store import ArtifactStore
from .upstream import Upstream

log = logging.getLogger("allotment_client.agent")

OFREP_FLAG = "/ofrep/v1/evaluate/flags/"
STORE_INTERVAL_S = 0.5


class _EventCounts(Collector):
    """What became of the spooled events, read from the queue at scrape time."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterable[CounterMetricFamily]:
        queue = self.agent.queue
        family = CounterMetricFamily(
            "allotment_agent_events_delivered",
            "Events the upstream answered, by its verdict",
            labels=["result"],
        )
        family.add_metric(["acknowledged"], queue.acknowledged if queue is not None else 0)
        family.add_metric(["refused"], queue.refused_total if queue else 0)
        yield family


class Agent:
    """The sidecar. `clock` is when "now" is for deciding (tests move it past an artifact's
    `grace_until`); `spool` an already opened one (the CLI opens it first, to fail fast
    when another agent holds it)."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        spool: Spool | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = Metrics()
        self.metrics.registry.register(_EventCounts(self))
        self.encode = DecisionBytes()
        self._spool = spool
        self.client: AsyncAllotment | None = None
        self.cache: ArtifactCache | None = None
        self.refresher: AsyncRefresher | None = None
        self.queue: EventQueue | None = None
        self.tracker: AsyncTracker | None = None
        self.upstream: Upstream | None = None
        self.store: ArtifactStore | None = None
        self._fetching: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._caller_key = settings.caller_key.encode() if settings.caller_key else None
        self._routes: dict[str, Callable[[Scope, Receive, Send], Awaitable[None]]] = {
            "/v1/check": self.check,
            "/v1/check/batch": self.check_batch,
            "/v1/events": self.events,
            "/ofrep/v1/evaluate/flags": self.ofrep_bulk,
            "/healthz": self.healthz,
            "/metrics": self.metrics_page,
        }

    # -- life -------------------------------------------------------------------------

    async def startup(self) -> None:
        settings = self.settings
        spool = self._spool if self._spool is not None else Spool(settings.spool)
        self.client = AsyncAllotment(
            settings.upstream,
            settings.key,
            local=True,
            fingerprint=settings.fingerprint,
            artifact_ttl=settings.artifact_ttl,
            spool=False,
        )
        self.cache, self.refresher = self.client.artifacts, self.client.refresher
        assert self.refresher is not None and self.cache is not None
        self.store = ArtifactStore(spool.directory / "artifacts")
        loaded = await asyncio.to_thread(self.store.load, self.cache)
        self.refresher.start()
        self.queue = EventQueue(source="allotment-agent", spool=spool, durable=True)
        self.tracker = AsyncTracker(self.client, self.queue, interval=settings.flush_interval)
        self.tracker.start()  # a backlog left by a previous run goes first
        self.upstream = Upstream(settings, self.metrics)
        self._spawn(self.upstream.probe())
        self._spawn(self._keep())
        log.info(
            "agent for %s on %s:%d, spool %s (%d events waiting, %d artifacts kept)",
            settings.upstream,
            settings.host,
            settings.port,
            spool.directory,
            len(spool),
            loaded,
        )

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self.store is not None and self.cache is not None:
            with contextlib.suppress(OSError):
                self.store.save(self.cache)
        if self.tracker is not None:
            await self.tracker.close(2.0)  # what is not delivered stays in the spool
        if self.queue is not None and self.queue.spool is not None:
            self.queue.spool.close()
        if self.client is not None:
            await self.client.close()
        if self.upstream is not None:
            await self.upstream.close()

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _keep(self) -> None:
        """Write new artifacts to the store (docs/agent.md, "restarts")."""
        assert self.store is not None and self.cache is not None
        while True:
            await asyncio.sleep(STORE_INTERVAL_S)
            try:
                await asyncio.to_thread(self.store.save, self.cache)
            except OSError as exc:
                log.warning("artifacts not kept on disk: %s", exc)

    async def _learn(self, customer: str) -> None:
        assert self.refresher is not None
        try:
            await self.refresher.fetch(customer)
        except Exception as exc:  # recorded in the cache; the refresher retries with back-off
            log.info("no artifact for %s yet: %s", customer, exc)
        finally:
            self._fetching.discard(customer)

    def artifact(self, customer: str) -> Artifact | None:
        """The customer's usable artifact now; a customer never seen starts a fetch (its
        checks are forwarded meanwhile)."""
        cache = self.cache
        assert cache is not None
        found = cache.get(customer, self.clock())
        if (
            found is None
            and customer not in self._fetching
            and not cache.knows(customer)
            and len(self._fetching) + len(cache.customers()) < self.settings.max_customers
        ):
            self._fetching.add(customer)
            self._spawn(self._learn(customer))
        return found

    def decide(self, ask: CheckInput, feature: str, artifact: Artifact) -> Decision | None:
        return decide(
            artifact,
            feature,
            subject=ask.subject,
            instance=ask.instance,
            tenant=ask.tenant,
            context=ask.context,
            consume=ask.consume,
            machine=self.settings.fingerprint,
            now=self.clock(),
        )

    # -- ASGI -------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        route = self._routes.get(path)
        if route is None and path.startswith(OFREP_FLAG):
            route = self.ofrep_flag
        try:
            if route is None:
                await respond_problem(send, 404, f"The agent serves no {path}")
            elif self._caller_key is not None and path not in ("/healthz", "/metrics"):
                if self._authorised(scope):
                    await route(scope, receive, send)
                elif path.startswith("/ofrep/"):
                    await respond(send, 401, None, headers=[(b"www-authenticate", b"Bearer")])
                else:
                    await respond_problem(
                        send,
                        401,
                        "Send the agent's caller key",
                        headers=[(b"www-authenticate", b"Bearer")],
                    )
            else:
                await route(scope, receive, send)
        except BodyTooLarge:
            await respond_problem(send, 413, f"The body is larger than {MAX_BODY} bytes")

    def _authorised(self, scope: Scope) -> bool:
        assert self._caller_key is not None
        for name, value in scope["headers"]:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                value = value[7:]
            elif name != b"x-api-key":
                continue
            if hmac.compare_digest(value.strip(), self._caller_key):
                return True
        return False

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.error("agent start-up failed: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- checks -----------------------------------------------------------------------

    async def _check_input(
        self, scope: Scope, receive: Receive, send: Send, *, batch: bool
    ) -> tuple[bytes, CheckInput | None]:
        body = await read_body(receive)
        if scope["method"] != "POST":
            await respond_problem(send, 405, "POST only", headers=[(b"allow", b"POST")])
            return body, None
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            await respond_problem(send, 400, f"The body is not valid JSON: {exc}")
            return body, None
        try:
            return body, check_body(document, batch=batch)
        except Invalid as exc:
            await respond_problem(send, 422, "The check is not valid", errors=exc.errors)
            return body, None

    async def check(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, ask = await self._check_input(scope, receive, send, batch=False)
        if ask is None:
            return
        if ask.consume is None:
            artifact = self.artifact(ask.customer)
            if artifact is not None:
                decision = self.decide(ask, ask.features[0], artifact)
                if decision is not None:
                    self.metrics.by["check", "agent"].inc()
                    await respond(send, 200, self.encode(decision, artifact), headers=BY_AGENT)
                    return
        await self.forward(scope, body, send, endpoint="check")

    async def check_batch(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Local only when the artifact decides every feature (one artifact: one state, as
        the service decides a batch from one snapshot); else the whole batch is forwarded."""
        body, ask = await self._check_input(scope, receive, send, batch=True)
        if ask is None:
            return
        artifact = self.artifact(ask.customer)
        if artifact is not None:
            decisions = [self.decide(ask, feature, artifact) for feature in ask.features]
            if all(decision is not None for decision in decisions):
                encoded = b",".join(self.encode(d, artifact) for d in decisions if d is not None)
                self.metrics.by["batch", "agent"].inc()
                await respond(send, 200, b'{"decisions":[' + encoded + b"]}", headers=BY_AGENT)
                return
        await self.forward(scope, body, send, endpoint="batch")

    # -- OFREP ------------------------------------------------------------------------

    async def ofrep_flag(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive)
        key = unquote(scope["path"][len(OFREP_FLAG) :])
        if scope["method"] != "POST":
            await respond(
                send,
                405,
                orjson.dumps({"errorDetails": "POST only"}),
                headers=[(b"allow", b"POST")],
            )
            return
        try:
            if not is_limit_flag(key):
                context = ofrep_context(body, key)
                ask = ofrep_input(context, key)
                artifact = self.artifact(ask.customer) if ask is not None else None
                if ask is not None and artifact is not None:
                    decision = self.decide(ask, key, artifact)
                    if decision is not None:
                        self.metrics.by["ofrep", "agent"].inc()
                        answer = flag_bytes(
                            key, decision, artifact, targeted=ask.subject is not None
                        )
                        await respond(send, 200, answer, headers=BY_AGENT)
                        return
        except OfrepFailure as exc:
            await respond(send, exc.status, exc.body(), headers=BY_AGENT)
            return
        await self.forward(scope, body, send, endpoint="ofrep")

    async def ofrep_bulk(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive)
        await self.forward(scope, body, send, endpoint="ofrep_bulk")

    async def forward(self, scope: Scope, body: bytes, send: Send, *, endpoint: str) -> None:
        assert self.upstream is not None
        await self.upstream.forward(scope, body, send, endpoint=endpoint)

    # -- events -----------------------------------------------------------------------

    async def events(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Spooled durably (fsync) before the 202; delivered with their own ids, so the
        upstream's (source, id) dedupe makes every re-send a duplicate."""
        assert self.queue is not None
        body = await read_body(receive)
        if scope["method"] != "POST":
            await respond_problem(send, 405, "POST only", headers=[(b"allow", b"POST")])
            return
        content_type: str | None = None
        ce_headers: list[tuple[str, bytes]] = []
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name.startswith(b"ce-"):
                ce_headers.append((name.decode("latin-1"), value))
        try:
            events, single = events_of(content_type, ce_headers, body)
        except Refused as exc:
            await respond_problem(send, exc.status, exc.detail, errors=exc.errors)
            return
        rejected: list[dict[str, Any]] = []
        good: list[dict[str, Any]] = []
        seen: set[tuple[str, str]] = set()
        for index, event in enumerate(events):
            errors = problems(event)
            if errors:
                if single:
                    self.metrics.events.labels("rejected").inc()
                    await respond_problem(send, 422, "The event is not valid", errors=errors)
                    return
                rejected.append({"index": index, "errors": errors})
            elif event_key(event) not in seen:  # a repeat in the batch: the first copy wins
                seen.add(event_key(event))
                good.append(event)
        if good:
            try:
                await asyncio.to_thread(self.queue.add_many, good)
            except OSError as exc:
                log.error("the spool cannot be written: %s", exc)
                await respond_problem(
                    send,
                    503,
                    f"The event spool cannot be written: {exc}",
                    headers=[(b"retry-after", b"1")],
                )
                return
        self.metrics.events.labels("spooled").inc(len(good))
        self.metrics.events.labels("rejected").inc(len(rejected))
        await respond(send, 202, orjson.dumps({"spooled": len(good), "rejected": rejected}))

    # -- health -----------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        cache, queue = self.cache, self.queue
        now = self.clock()
        customers = cache.customers() if cache is not None else []
        usable = sum(1 for c in customers if cache is not None and cache.get(c, now) is not None)
        connected = bool(self.refresher is not None and self.refresher.connected.is_set())
        backlog = len(queue.spool) if queue is not None and queue.spool is not None else 0
        upstream = self.upstream
        reachable = upstream.up if upstream is not None else None
        return {
            "status": "ok" if reachable and connected else "degraded",
            "upstream": {
                "url": self.settings.upstream,
                "reachable": reachable,
                "last_error": upstream.last_error if upstream is not None else None,
            },
            "stream_connected": connected,
            "artifacts": {"customers": len(customers), "usable": usable},
            "spool": {
                # `is not None`: a Spool with nothing pending has len() 0, so it is falsy.
                "directory": (
                    str(queue.spool.directory)
                    if queue is not None and queue.spool is not None
                    else None
                ),
                "backlog": backlog,
            },
            "events": {
                "delivered": queue.acknowledged if queue is not None else 0,
                "refused": queue.refused_total if queue else 0,
            },
        }

    async def healthz(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, orjson.dumps(self.health()))

    async def metrics_page(self, scope: Scope, receive: Receive, send: Send) -> None:
        health = self.health()
        self.metrics.spool_backlog.set(health["spool"]["backlog"])
        self.metrics.artifacts.set(health["artifacts"]["usable"])
        self.metrics.stream_connected.set(1 if health["stream_connected"] else 0)
        self.metrics.upstream_up.set(1 if health["upstream"]["reachable"] else 0)
        page = generate_latest(self.metrics.registry)
        await respond(send, 200, page, b"text/plain; version=0.0.4; charset=utf-8")
