"""The named-seat assignment fast path: `POST /v1/customers/{key}/seats` in one round trip.

When this process knows the customer's seat limits (`known.py`, learnt by the general path),
the assignment is a single autocommit statement (`direct.assign_direct`: pool lock, checks,
seat, burst episode, audit record and lifecycle event, then commit) on a connection of the
hot pool (`db.hot_connection`: no SQLAlchemy session, transaction or ping), reached without
FastAPI's routing and dependency solving, like /v1/check's (`check/fastpath.py`). Those
layers, not the database, were most of an assignment's cost.

It serves only what it can answer exactly as the route would, through the very guard, schema
and service function the route uses, and otherwise hands the request, body intact, to the
route: a customer whose limits this process has not read, limits the database calls stale,
an unknown customer, an `Idempotency-Key` (the route stores the response with the effect),
a body that does not validate (the route words the 422), or no hot connection free within
`db_hot_wait_s` (overload, or PostgreSQL down or just back: the route's pool answers that).
"""

from __future__ import annotations

import re
from types import SimpleNamespace

from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from allotment import invalidation
from allotment.db import HotPoolUnavailable, hot_connection
from allotment.errors import AllotmentError, render_domain_error
from allotment.kit.idempotency import HEADER
from allotment.kit.jsonx import dumps
from allotment.seats import direct, known
from allotment.seats.endpoints import ASSIGN_GUARD
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
        if (
            match is None
            or scope["method"] != "POST"
            or not known.knows(match.group(1))
            or any(name == _IDEMPOTENCY for name, _ in scope["headers"])
        ):
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
            assignment = None
            if wanted is not None:
                state = request.app.state
                async with hot_connection(
                    state.hot_pool, wait_s=state.settings.db_hot_wait_s
                ) as pg:
                    assignment = await direct.assign_direct(
                        pg,
                        state.engine,
                        customer_key=key,
                        subject=wanted.subject,
                        type=wanted.type,
                        tenant=wanted.tenant,
                        actor=principal.actor,
                        request_id=scope["state"].get("request_id"),
                    )
                if assignment is not None and assignment.created:  # committed: tell the caches
                    direct.count_direct(assignment)
                    await invalidation.customer_committed(state.bus, key)
        except AllotmentError as exc:
            await render_domain_error(request, exc)(scope, receive, send)
            return
        except HotPoolUnavailable:
            assignment = None
        if assignment is None:  # the route decides, from the same body
            await self.app(scope, _replay(body, receive), send)
            return
        status = 201 if assignment.created else 200
        payload = dumps(assignment.read().model_dump(mode="json"))
        headers = [*_JSON, (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


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
