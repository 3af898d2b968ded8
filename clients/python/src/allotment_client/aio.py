"""`AsyncAllotment`: the asynchronous client, method for method `client.Allotment`'s, awaited.

    async with AsyncAllotment("https://allotment.example", api_key="alm_…", local=True) as a:
        (await a.check("acme", "sso")).allowed
        a.track("api.call", customer="acme", data={"count": 1})

The calls and their retries are `_calls.py` and `_http.py`, shared with the sync client; only
the transport, the sleeps and the background work (tasks, not threads) differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine, Generator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import httpx

from allotment_client import _calls
from allotment_client._config import Config, SpoolSetting, heartbeat_interval, open_spool
from allotment_client._http import Call, RetryPolicy
from allotment_client.artifacts import Artifact
from allotment_client.errors import AllotmentError, Gone
from allotment_client.events import AsyncTracker, EventQueue
from allotment_client.local import ArtifactCache, check_feature_name, decide
from allotment_client.models import Decision
from allotment_client.refresh import AsyncRefresher

T = TypeVar("T")


class AsyncAllotment:
    """The product-backend API of an Allotment service.

    `local=True`: checks the customer's verified artifact can decide are answered in this
    process (`Decision.local`); the rest go to the service. `fingerprint`: this machine's
    instance fingerprint, for artifacts bound to it. Events tracked with `track()` are sent
    in batches by a background thread and spooled to `spool` (a directory; False for none)
    while the service cannot be reached."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        local: bool = False,
        fingerprint: str | None = None,
        artifact_ttl: int = 3600,
        stream: bool = True,
        source: str = "allotment-client",
        spool: SpoolSetting = None,
        batch_size: int = 500,
        flush_interval: float = 0.5,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._config = Config(base_url.rstrip("/"), api_key, timeout, retry or RetryPolicy())
        self._http = httpx.AsyncClient(transport=transport, **self._config.http_options())
        self._source = source
        self._spool_setting = spool
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._tracker: AsyncTracker | None = None
        self.artifacts: ArtifactCache | None = None
        self.refresher: AsyncRefresher | None = None
        self._machine = fingerprint
        self._registered: dict[str, str] = {}  # instance id → fingerprint, registered here
        if local:
            self.artifacts = ArtifactCache(fingerprint=fingerprint, ttl=artifact_ttl)
            self.refresher = AsyncRefresher(self, self.artifacts, stream=stream)

    # -- plumbing ---------------------------------------------------------------------

    async def _send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = await self._http.send(call.request(self._http))
            except httpx.TransportError as exc:
                step = call.next_step(attempt, self._config.retry, error=exc)
            else:
                step = call.next_step(attempt, self._config.retry, response=response)
            if step.done:
                return step.value  # type: ignore[return-value]
            await asyncio.sleep(step.delay)
            attempt += 1

    async def __aenter__(self) -> AsyncAllotment:
        if self.refresher is not None:
            self.refresher.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - a budget, not a cancel
        """Deliver the tracked events (spooling what cannot be), stop the background
        threads, close the connections."""
        if self._tracker is not None:
            await self._tracker.close(timeout)
            if self._tracker.queue.spool is not None:
                self._tracker.queue.spool.close()
        if self.refresher is not None:
            await self.refresher.close()
        await self._http.aclose()

    # -- checks -----------------------------------------------------------------------

    async def check(
        self,
        customer: str,
        feature: str,
        *,
        subject: str | None = None,
        instance: str | None = None,
        tenant: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Decision:
        """May `customer` (this subject, instance, tenant) use `feature` now?"""
        if self.refresher is not None:
            check_feature_name(feature)  # as the service would: a 422, not feature_unknown
            now = time.time()
            self.refresher.start()
            artifact = await self.refresher.artifact(customer, now)
            if artifact is not None:
                answer = decide(
                    artifact,
                    feature,
                    subject=subject,
                    instance=instance,
                    tenant=tenant,
                    context=context,
                    machine=self._machine,
                    now=now,
                )
                if answer is not None:
                    return answer
        return await self._send(
            _calls.check(
                customer,
                feature,
                subject=subject,
                instance=instance,
                tenant=tenant,
                context=context,
            )
        )

    async def check_batch(
        self,
        customer: str,
        features: Sequence[str],
        *,
        subject: str | None = None,
        instance: str | None = None,
        tenant: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> list[Decision]:
        """Up to 100 features decided together, from one snapshot (always the service's)."""
        return await self._send(
            _calls.check_batch(
                customer,
                features,
                subject=subject,
                instance=instance,
                tenant=tenant,
                context=context,
            )
        )

    async def consume(
        self,
        customer: str,
        feature: str,
        units: int = 1,
        *,
        subject: str | None = None,
        instance: str | None = None,
        tenant: str | None = None,
        context: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Decision:
        """Check and consume `units` of the feature's meter atomically (never past a hard
        limit). Retried with the same `Idempotency-Key`: consumed once."""
        return await self._send(
            _calls.check(
                customer,
                feature,
                subject=subject,
                instance=instance,
                tenant=tenant,
                context=context,
                consume=units,
                idempotency_key=idempotency_key,
            )
        )

    async def entitlements(self, customer: str) -> dict[str, Any]:
        return await self._send(_calls.entitlements(customer))

    async def artifact_token(
        self, customer: str, *, ttl: int | None = None, fingerprint: str | None = None
    ) -> str:
        """The customer's signed artifact as issued (compact JWS), unverified: see
        `artifacts.verify` and `jwks()`."""
        return await self._send(_calls.artifact(customer, ttl=ttl, fingerprint=fingerprint))

    async def jwks(self) -> dict[str, Any]:
        """The published key set (`GET /.well-known/jwks.json`)."""
        return await self._send(_calls.jwks())

    async def artifact(self, customer: str) -> Artifact | None:
        """The customer's verified artifact (local mode), fetched if not held."""
        if self.refresher is None:
            raise RuntimeError("artifacts are held in local mode: Allotment(..., local=True)")
        self.refresher.start()
        return await self.refresher.artifact(customer, time.time())

    async def usage(
        self,
        customer: str,
        meter: str,
        *,
        start: str | None = None,
        end: str | None = None,
        granularity: str | None = None,
        tenant: str | None = None,
    ) -> dict[str, Any]:
        return await self._send(
            _calls.usage(
                customer, meter, start=start, end=end, granularity=granularity, tenant=tenant
            )
        )

    # -- seats and sessions -----------------------------------------------------------

    async def assign_seat(
        self,
        customer: str,
        subject: str,
        *,
        type: str = "member",
        tenant: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        return await self._send(
            _calls.assign_seat(
                customer, subject, type=type, tenant=tenant, idempotency_key=idempotency_key
            )
        )

    async def release_seat(self, customer: str, subject: str) -> None:
        await self._send(_calls.release_seat(customer, subject))

    async def seats(
        self, customer: str, *, limit: int | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        return await self._send(_calls.list_seats(customer, limit=limit, cursor=cursor))

    async def open_session(
        self, customer: str, subject: str, *, tenant: str | None = None
    ) -> dict[str, Any]:
        return await self._send(_calls.open_session(customer, subject, tenant=tenant))

    async def renew_session(self, session_id: str) -> dict[str, Any]:
        return await self._send(_calls.renew_session(session_id))

    async def close_session(self, session_id: str) -> None:
        await self._send(_calls.close_session(session_id))

    # -- instances --------------------------------------------------------------------

    async def register_instance(
        self,
        customer: str,
        fingerprint: str,
        *,
        kind: str,
        environment: str | None = None,
        tenant: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        registered: dict[str, Any] = await self._send(
            _calls.register_instance(
                customer,
                fingerprint,
                kind=kind,
                environment=environment,
                tenant=tenant,
                metadata=metadata,
                idempotency_key=idempotency_key,
            )
        )
        if isinstance(registered, dict) and "id" in registered:
            self._registered[str(registered["id"])] = fingerprint
        return registered

    async def renew_instance(self, instance_id: str) -> dict[str, Any]:
        return await self._send(_calls.renew_instance(instance_id))

    async def deregister_instance(self, instance_id: str) -> None:
        try:
            await self._send(_calls.deregister_instance(instance_id))
        finally:
            # Local mode: an artifact bound to that instance must not outlive its lease
            # here (the fingerprint is known when this client registered it).
            if self.artifacts is not None:
                self.artifacts.unbind(self._registered.pop(instance_id, None))

    async def instances(
        self, customer: str, *, limit: int | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        return await self._send(_calls.list_instances(customer, limit=limit, cursor=cursor))

    def hold_instance(
        self,
        customer: str,
        fingerprint: str,
        *,
        kind: str,
        environment: str | None = None,
        tenant: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> HoldingInstance:
        """Register this instance and keep its lease alive from a task until the lease is
        released: `async with allotment.hold_instance(...) as lease:` (deregistered on
        leaving), or `lease = await allotment.hold_instance(...)` then `await
        lease.release()`."""
        return HoldingInstance(
            self.register_instance(
                customer,
                fingerprint,
                kind=kind,
                environment=environment,
                tenant=tenant,
                metadata=metadata,
            ),
            self,
        )

    # -- events -----------------------------------------------------------------------

    def _events(self) -> AsyncTracker:
        if self._tracker is None:
            queue = EventQueue(
                source=self._source,
                spool=open_spool(self._spool_setting, self._config.base_url),
                batch_size=self._batch_size,
            )
            self._tracker = AsyncTracker(self, queue, interval=self._flush_interval)
        self._tracker.start()
        return self._tracker

    def track(
        self,
        type: str,
        customer: str,
        data: Any = None,
        *,
        id: str | None = None,
        time: datetime | str | None = None,
        tenant: str | None = None,
    ) -> str:
        """Record a usage event (a CloudEvent of `type` for `customer`); returns its id.
        Sent in the background (a task of the running loop): `await flush()` waits for
        delivery."""
        tracker = self._events()
        event = tracker.queue.event(type, customer, data, id=id, time=time, tenant=tenant)
        tracker.queue.add(event)
        return str(event["id"])

    async def flush(self, timeout: float = 30.0) -> bool:  # noqa: ASYNC109 - a budget, not a cancel
        """Wait until every tracked event is delivered — and what a previous process left in
        the spool; False if `timeout` passed first."""
        return await self._events().flush(timeout)

    async def send_events(self, events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Send a batch of CloudEvents now (up to 1,000), bypassing the buffer."""
        return await self._send(_calls.send_events(events))


class HoldingInstance:
    """What `AsyncAllotment.hold_instance()` returns: awaited, the registered lease; used
    as `async with`, the lease, released on leaving."""

    def __init__(
        self, registering: Coroutine[Any, Any, dict[str, Any]], client: AsyncAllotment
    ) -> None:
        self._registering = registering
        self._client = client
        self._lease: AsyncInstanceLease | None = None

    async def _start(self) -> AsyncInstanceLease:
        if self._lease is None:
            self._lease = AsyncInstanceLease(self._client, await self._registering)
        return self._lease

    def __await__(self) -> Generator[Any, None, AsyncInstanceLease]:
        return self._start().__await__()

    async def __aenter__(self) -> AsyncInstanceLease:
        return await self._start()

    async def __aexit__(self, *exc: object) -> None:
        if self._lease is not None:
            await self._lease.release()


class AsyncInstanceLease:
    """A registered instance whose lease a task renews (a third of the lease before it
    ends). `await release()` deregisters it; `lost` is set when a renewal found the lease
    gone (410) — register again."""

    def __init__(self, client: AsyncAllotment, registered: dict[str, Any]) -> None:
        self.client = client
        self.instance = registered
        self.id = str(registered["id"])
        self.lost = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(heartbeat_interval(self.instance))
            try:
                self.instance = await self.client.renew_instance(self.id)
            except Gone:
                self.lost.set()
                return
            except AllotmentError:
                continue  # try again at the next interval, while the lease lasts

    async def release(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if not self.lost.is_set():
            with contextlib.suppress(Gone):
                await self.client.deregister_instance(self.id)

    async def __aenter__(self) -> AsyncInstanceLease:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()
