"""The named-seat assignment fast path: `POST /v1/customers/{key}/seats` in one round trip.

When this process knows the customer's seat limits (`known.py`, learnt by the general path),
the assignment is a single autocommit statement (`direct.assign_direct`: pool lock, checks,
seat, burst episode, audit record and lifecycle event, then commit) on a connection of the
hot pool (`db.hot_connection`: no SQLAlchemy session, transaction or ping), reached without
FastAPI's routing and dependency solving, like /v1/check's (`check/fastpath.py`). Those
layers, not the database, were most of an assignment's cost. With an `Idempotency-Key` the
same statement claims the key first (migration 0011), and the response is stored with the
effect in one transaction, as kit/idempotency.py does for the routes.

It serves only what it can answer exactly as the route would, through the very guard, schema
and service function the route uses, and otherwise hands the request, body intact, to the
route: a customer whose limits this process has not read, limits the database calls stale,
an unknown customer, a malformed `Idempotency-Key`, a body that does not validate (the route
words the 422), or no slot (`IN_FLIGHT` statements at once) and hot connection free within
`db_hot_wait_s` (overload, or PostgreSQL down or just back: the route's pool answers that).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from allotment import invalidation
from allotment.db import HotPoolUnavailable, hot_connection, session_scope
from allotment.errors import AllotmentError, render_domain_error
from allotment.kit import idempotency
from allotment.kit.idempotency import HEADER
from allotment.kit.jsonx import dumps
from allotment.seats import direct, known
from allotment.seats.endpoints import ASSIGN_GUARD
from allotment.seats.filled import announce_filled
from allotment.seats.schemas import SeatAssign

_PATH = re.compile(r"/v1/customers/([^/]+)/seats")
_ROUTE = SimpleNamespace(path="/v1/customers/{key}/seats")
_IDEMPOTENCY = HEADER.lower().encode()
_JSON = [(b"content-type", b"application/json")]


class SeatFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _PATH.fullmatch(scope["path"]) if scope["type"] == "http" else None
        if match is None or scope["method"] != "POST" or not known.knows(match.group(1)):
            await self.app(scope, receive, send)
            return
        given = [value for name, value in scope["headers"] if name == _IDEMPOTENCY]
        idempotency_key = given[0].decode("latin-1") if len(given) == 1 else None
        if given and not idempotency.usable_key(idempotency_key):  # the route words the 400
            await self.app(scope, receive, send)
            return
        key = match.group(1)
        scope["route"] = _ROUTE  # the request middleware labels metrics by route template
        scope["path_params"] = {"key": key}
        request = Request(scope, receive)
        body = await request.body()
        try:
            principal = await ASSIGN_GUARD(request)
            try:
                wanted = SeatAssign.model_validate_json(body)
            except ValidationError:
                wanted = None
            answer = None
            if wanted is not None:
                keyed = None
                if idempotency_key is not None:
                    fingerprint = idempotency.fingerprint("POST", request.url.path, body)
                    keyed = direct.Keyed(principal.key_id, idempotency_key, fingerprint)
                answer = await _assign(request, key, wanted, principal.actor, keyed)
        except idempotency.IdempotentReplay as exc:
            await idempotency.replay_response(exc)(scope, receive, send)
            return
        except AllotmentError as exc:
            await render_domain_error(request, exc)(scope, receive, send)
            return
        except HotPoolUnavailable:
            answer = None
        if answer is None:  # the route decides, from the same body
            await self.app(scope, _replay(body, receive), send)
            return
        status, payload = answer
        headers = [*_JSON, (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


async def _assign(
    request: Request, key: str, wanted: SeatAssign, actor: str, keyed: direct.Keyed | None
) -> tuple[int, bytes] | None:
    """The status and body of the assignment, committed; None for the route to decide.
    Without a key: one autocommit statement. With one: that statement claims the key too,
    and the response is stored with the effect before the commit."""
    state = request.app.state
    fields: dict[str, Any] = dict(
        customer_key=key,
        subject=wanted.subject,
        type=wanted.type,
        tenant=wanted.tenant,
        actor=actor,
        request_id=request.scope["state"].get("request_id"),
        keyed=keyed,
        pseudonyms=state.pseudonyms,
    )
    wait_s = state.settings.db_hot_wait_s
    async with _slot(state, wait_s), hot_connection(state.hot_pool, wait_s=wait_s) as pg:
        if keyed is None:
            assignment = await direct.assign_direct(pg, state.engine, **fields)
            answer = None if assignment is None else _response(assignment)
        else:  # BEGIN goes with the statement, the stored answer with the COMMIT
            try:
                assignment = await direct.assign_direct(pg, state.engine, **fields)
                if assignment is None:  # nothing written (stale limits...): the route decides
                    answer = None
                    if pg.info.transaction_status != TransactionStatus.IDLE:
                        await pg.execute("COMMIT")
                else:
                    answer = _response(assignment)
                    await idempotency.store_and_commit(
                        pg,
                        principal=keyed.principal,
                        key=keyed.key,
                        request_hash=keyed.request_hash,
                        status=answer[0],
                        body=answer[1],
                        ttl_s=state.settings.idempotency_ttl_s,
                        last=direct.audit_append(assignment, actor, fields["request_id"]),
                    )
            except BaseException:
                if pg.info.transaction_status != TransactionStatus.IDLE:
                    with contextlib.suppress(psycopg.Error):  # a broken connection: gone anyway
                        await pg.execute("ROLLBACK")
                raise
    if assignment is not None and assignment.created:  # committed: tell the caches
        direct.count_direct(assignment)
        await invalidation.customer_committed(state.bus, key)
        if assignment.filled is not None:  # rare: a transaction of its own (seats/filled.py)
            async with session_scope(state.sessionmaker, bus=state.bus) as session:
                await announce_filled(session, assignment, now=assignment.seat.assigned_at)
    return answer


# Seat statements in flight at once, per worker. Every assignment takes the customer's row
# lock and the audit chain's head row; statements beyond a few only queue in PostgreSQL on
# those locks, and each waiter costs the database CPU (docs/performance.md, "Seat
# assignments against a durable write"). Here they queue in the worker, which costs nothing.
IN_FLIGHT = 3


@contextlib.asynccontextmanager
async def _slot(state: Any, wait_s: float) -> AsyncIterator[None]:
    """One of the IN_FLIGHT slots within `wait_s` (else HotPoolUnavailable: the route)."""
    slots = getattr(state, "seat_slots", None)
    if slots is None:  # made in the app's own event loop, on first use
        slots = state.seat_slots = asyncio.Semaphore(IN_FLIGHT)
    try:
        async with asyncio.timeout(wait_s):
            await slots.acquire()
    except TimeoutError:
        raise HotPoolUnavailable() from None
    try:
        yield
    finally:
        slots.release()


def _response(assignment: direct.Assignment) -> tuple[int, bytes]:
    return 201 if assignment.created else 200, dumps(assignment.read().model_dump(mode="json"))


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` for the route: the body this middleware already read, then the rest."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
