"""Usage: POST /v1/events (CloudEvents, one or a batch) and GET …/usage (finance)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from allotment import wiring
from allotment.auth.principal import CUSTOMER_KEY_PATTERN, Principal
from allotment.db import after_commit
from allotment.deps import ReadSessionDep, SessionDep, require
from allotment.errors import (
    Conflict,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    ValidationFailed,
)
from allotment.kit.clock import QueryInstant, utcnow
from allotment.kit.idempotency import IdempotencyDep
from allotment.kit.identifiers import CustomerKey
from allotment.usage import binding, reads
from allotment.usage import service as usage
from allotment.usage.broker import BrokerUnavailable
from allotment.usage.events import Window
from allotment.usage.metrics import EVENTS_CONFLICTS, EVENTS_UNMETERED
from allotment.usage.schemas import IngestRead, UsageRead

router = APIRouter(tags=["usage"])

Backend = Annotated[Principal, require("check")]
Finance = Annotated[Principal, require("finance", customer_param="key")]
MAX_BATCH = 1000
BATCH_MEDIA_TYPE = binding.BATCH_MEDIA_TYPE

_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["specversion", "id", "source", "type", "subject"],
    "properties": {
        "specversion": {"type": "string", "enum": ["1.0"]},
        "id": {"type": "string", "minLength": 1},
        "source": {"type": "string", "minLength": 1},
        "type": {"type": "string", "minLength": 1},
        "subject": {
            "type": "string",
            "pattern": CUSTOMER_KEY_PATTERN,
            "description": "The customer's key.",
        },
        "time": {"type": "string", "format": "date-time"},
        "tenant": {"type": "string"},
        "data": {},
        "data_base64": {
            "type": "string",
            "contentEncoding": "base64",
            "description": "Instead of data (never both): read as datacontenttype says, "
            "JSON when absent.",
        },
    },
}

_BINARY_HEADERS = (
    (
        "specversion",
        "Binary content mode: `1.0`; with it, the body is the event's data "
        "(JSON, or text/* as a string).",
    ),
    ("id", "Binary mode: the event's id (unique per source)."),
    ("source", "Binary mode: the event's source."),
    ("type", "Binary mode: the event's type (a meter's event_type)."),
    ("subject", "Binary mode: the customer's key."),
    ("time", "Binary mode: RFC 3339 with an offset."),
    ("tenant", "Binary mode: the tenant's key (an extension attribute)."),
)
_BATCH_SCHEMA: dict[str, Any] = {"type": "array", "items": _EVENT_SCHEMA, "maxItems": MAX_BATCH}


@router.post(
    "/v1/events",
    response_model=IngestRead,
    responses={
        409: {
            "description": "A single event whose (source, id) was accepted before with "
            "another payload (`event-conflict`), or an Idempotency-Key in flight"
        }
    },
    openapi_extra={
        # Binary content mode: the attributes as headers (percent-encoded UTF-8), the body
        # is `data` (JSON, or text/*), so generated clients can send what the SDKs send.
        "parameters": [
            {
                "name": f"ce-{name}",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": description,
            }
            for name, description in _BINARY_HEADERS
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/cloudevents+json": {"schema": _EVENT_SCHEMA},
                # Plain JSON takes either: an array is a batch, whatever the media type.
                "application/json": {"schema": {"anyOf": [_EVENT_SCHEMA, _BATCH_SCHEMA]}},
                BATCH_MEDIA_TYPE: {"schema": _BATCH_SCHEMA},
            },
        },
    },
)
async def ingest_events(
    request: Request, principal: Backend, session: SessionDep, idempotency: IdempotencyDep
) -> Response:
    """One CloudEvent (structured JSON, or binary mode: attributes in `ce-*` headers and
    `data` as the body), or a batch of up to 1,000. A batch answers 200 with each bad event
    rejected by index, each conflicting one (an id reused with another payload) in
    `conflicts`, and each accepted one no meter reads in `unmetered`; a single bad event is a
    422, a single conflicting one a 409. Acknowledged only after commit (with
    ALLOTMENT_EVENTS_BROKER: after JetStream acknowledged it; a 503 when it did not)."""
    raw_events, batch, binary = binding.parse_body(request.headers.raw, await request.body())
    if len(raw_events) > MAX_BATCH:
        raise PayloadTooLarge(f"A batch holds at most {MAX_BATCH} events; split it.")
    settings = request.app.state.settings
    now = utcnow()
    checker = request.app.state.checker

    async def snapshot_of(key: CustomerKey) -> Any:
        snapshot, _ = await checker.snapshot(key, now)
        if snapshot is None:
            raise ServiceUnavailable("The store is unavailable; nothing was accepted.")
        return snapshot

    window = Window(
        now=now,
        late=timedelta(seconds=settings.events_late_window_s),
        future=timedelta(seconds=settings.events_future_s),
    )
    broker = getattr(request.app.state, "broker", None)
    if broker is not None:  # through JetStream to the aggregators (docs/scale-out.md)
        try:
            outcome = await broker.ingest(raw_events, snapshot_of=snapshot_of, window=window)
        except BrokerUnavailable as exc:
            broker.refused(str(exc))
            raise ServiceUnavailable(
                f"The event broker did not acknowledge the events ({exc}); send them again "
                "(events it did store are then duplicates)."
            ) from None
    else:
        outcome = await usage.ingest(
            session,
            raw_events=raw_events,
            snapshot_of=snapshot_of,
            window=window,
            engine=request.app.state.engine,
            actor=principal.actor,
        )
    if outcome.customers and checker.usage is not None:
        # This worker's checks see the new use at once; other workers within usage_refresh_s.
        def forget() -> None:
            for key in outcome.customers:
                checker.usage.forget(key)

        after_commit(session, forget)
    if not batch and outcome.rejected:
        errors = outcome.rejected[0]["errors"]
        if binary:
            errors = binding.header_paths(errors)
        raise ValidationFailed(
            "The event was rejected: " + "; ".join(f"{e['path']}: {e['message']}" for e in errors),
            errors=errors,
        )
    if not batch and outcome.conflicts:
        EVENTS_CONFLICTS.inc()
        raise _conflict(outcome.conflicts[0])
    unmetered, conflicts = len(outcome.unmetered), len(outcome.conflicts)
    if unmetered or conflicts:
        after_commit(session, lambda: _count(unmetered, conflicts))
    read = IngestRead.model_validate(
        {
            "accepted": outcome.accepted,
            "duplicates": outcome.duplicates,
            "rejected": outcome.rejected,
            "unmetered": outcome.unmetered,
            "conflicts": outcome.conflicts,
        }
    )
    return await idempotency.respond(read)


def _conflict(found: dict[str, Any]) -> Conflict:
    return Conflict(
        f"Event {found['id']!r} of source {found['source']!r} was accepted before with another "
        "payload (type, subject, time, tenant or data); the first copy stands. A new event "
        "needs a new id.",
        type="event-conflict",
        title="Event conflict",
        extra={"source": found["source"], "id": found["id"]},
    )


def _count(unmetered: int, conflicts: int) -> None:
    if unmetered:
        EVENTS_UNMETERED.inc(unmetered)
    if conflicts:
        EVENTS_CONFLICTS.inc(conflicts)


@router.get("/v1/customers/{key}/usage", response_model=UsageRead, response_model_by_alias=True)
async def read_usage(
    key: CustomerKey,
    request: Request,
    principal: Finance,
    session: ReadSessionDep,
    meter: Annotated[str, Query(description="A meter of the customer's policy version.")],
    from_: Annotated[
        QueryInstant | None,
        Query(alias="from", description="Default: the current billing period's start."),
    ] = None,
    to: Annotated[
        QueryInstant | None, Query(description="Default: the current billing period's end.")
    ] = None,
    granularity: Annotated[reads.Granularity, Query()] = "day",
    tenant: Annotated[str | None, Query()] = None,
) -> UsageRead:
    snapshot, _ = await request.app.state.checker.snapshot(key, utcnow())
    if snapshot is None:
        # Nothing cached and the store down: which meters the customer has is unknown, so
        # the meter cannot be judged (a 422 would blame the request for the outage).
        raise ServiceUnavailable(
            "The database is unavailable and the customer's policy is not cached, so its "
            "meters are unknown; nothing was read. Retry shortly.",
            retry_after=2,
        )
    if not snapshot.known:
        raise NotFound(f"Customer {key!r} does not exist.", type="customer-not-found")
    catalog = snapshot.catalog
    found = catalog.meters.get(meter) if catalog is not None else None
    if found is None:
        message = f"no meter '{meter}' in the customer's policy version"
        raise ValidationFailed(
            f"The request names {message}.", errors=[{"path": "query.meter", "message": message}]
        )
    if tenant is not None and tenant not in snapshot.holdings.tenants:
        message = f"no tenant '{tenant}' for this customer"
        raise ValidationFailed(
            f"The request names {message}.", errors=[{"path": "query.tenant", "message": message}]
        )
    now = utcnow()
    for guard in wiring.usage_read_guards():
        await guard(
            session,
            settings=request.app.state.settings,
            customer_key=key,
            event_type=found.event_type,
            instants={"from": from_, "to": to},
            now=now,
        )
    period_start, period_end = reads.billing_period(now)
    return await reads.usage(
        session,
        customer_key=key,
        meter=found,
        start=from_ or period_start,
        end=to or period_end,
        granularity=granularity,
        tenant=tenant,
        as_of=now,
    )
