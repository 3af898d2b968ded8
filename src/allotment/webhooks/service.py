"""The webhook endpoints API's use cases (docs/webhooks.md); services flush, never commit.

    create / update / delete / get / list_endpoints     endpoints (audited)
    rotate                a new secret; the old one keeps signing for the overlap
    send_test             a `webhook.test` message to one endpoint
    deliveries            an endpoint's deliveries with their attempts, newest first
    retry                 a delivery due again now (and its retry window restarted)

The secrets are sealed with AES-256-GCM under a key derived from the service's signing
secret (signing/secret.py, with an `info` of their own), the endpoint id as associated data.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.audit import service as audit
from allotment.config import Settings
from allotment.errors import Conflict, NotFound, ValidationFailed
from allotment.kit.clock import utcnow
from allotment.kit.ids import new_id
from allotment.kit.pagination import Page, paginate
from allotment.signing.secret import Sealer, sealer
from allotment.webhooks import catalog, outbox, signature, targets
from allotment.webhooks.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookMessage,
)
from allotment.webhooks.schemas import (
    WebhookAttemptRead,
    WebhookDeliveryRead,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
    WebhookEndpointRead,
    WebhookEndpointUpdate,
    WebhookSecretRotated,
    WebhookTestSent,
)

SEALING_INFO = b"allotment/webhook-secrets/aes-256-gcm/v1"


def secrets_sealer(settings: Settings) -> Sealer:
    return sealer(settings, info=SEALING_INFO)


def read(row: WebhookEndpoint) -> WebhookEndpointRead:
    """The endpoint as the API shows it. A previous secret past its overlap no longer signs,
    so its expiry is not shown, whether or not the worker's pass dropped it yet
    (webhooks/sweep.py)."""
    previous_until = row.previous_secret_until
    if previous_until is not None and previous_until <= utcnow():
        previous_until = None
    return WebhookEndpointRead(
        id=row.id,
        url=row.url,
        description=row.description,
        event_types=row.event_types,
        enabled=row.enabled,
        disabled_reason=row.disabled_reason,
        previous_secret_expires_at=previous_until,
        slowed_until=row.slowed_until,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _audited(row: WebhookEndpoint) -> dict[str, Any]:
    return read(row).model_dump(
        mode="json", include={"url", "description", "event_types", "enabled"}
    )


def _check_event_types(event_types: list[str] | None) -> list[dict[str, str]]:
    if event_types is None:
        return []
    problems = []
    if not event_types:
        problems.append(
            {"path": "event_types", "message": "empty: omit it or send null for every type"}
        )
    known = ", ".join(catalog.SUBSCRIBABLE)
    for index, name in enumerate(event_types):
        if name not in catalog.SUBSCRIBABLE:
            problems.append(
                {
                    "path": f"event_types[{index}]",
                    "message": f"unknown event type {name!r}; one of {known}",
                }
            )
        elif name in event_types[:index]:
            problems.append(
                {"path": f"event_types[{index}]", "message": f"{name!r} is listed twice"}
            )
    return problems


async def _check_url(url: str, settings: Settings) -> list[dict[str, str]]:
    try:
        target = targets.check_url(url)
        await targets.resolve(target, allow_private=settings.webhooks_allow_private)
    except targets.TargetRefused as exc:
        return [{"path": "url", "message": str(exc)}]
    return []


def _refuse(problems: list[dict[str, str]]) -> None:
    if problems:
        raise ValidationFailed(
            "The webhook endpoint is not valid: "
            + "; ".join(f"{p['path']}: {p['message']}" for p in problems),
            errors=problems,
        )


async def get(session: AsyncSession, endpoint_id: str, *, lock: bool = False) -> WebhookEndpoint:
    query = select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
    if lock:
        query = query.with_for_update()
    row = (await session.scalars(query)).one_or_none()
    if row is None:
        raise NotFound(
            f"Webhook endpoint {endpoint_id!r} does not exist.", type="webhook-endpoint-not-found"
        )
    return row


async def create(
    session: AsyncSession, *, data: WebhookEndpointCreate, settings: Settings, actor: str
) -> WebhookEndpointCreated:
    _refuse(_check_event_types(data.event_types) + await _check_url(data.url, settings))
    now = utcnow()
    endpoint_id = new_id("we")
    secret = signature.new_secret()
    row = WebhookEndpoint(
        id=endpoint_id,
        url=data.url,
        description=data.description,
        event_types=data.event_types,
        enabled=data.enabled,
        secret_sealed=secrets_sealer(settings).seal(secret.encode(), kid=endpoint_id),
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    audit.record(
        session,
        actor=actor,
        action="webhook_endpoint.created",
        target_type="webhook_endpoint",
        target_key=endpoint_id,
        after=_audited(row),
    )
    return WebhookEndpointCreated(**read(row).model_dump(), secret=secret)


async def list_endpoints(session: AsyncSession, *, limit: int, cursor: str | None) -> Page[Any]:
    page = await paginate(
        session, select(WebhookEndpoint), WebhookEndpoint.id, limit=limit, cursor=cursor
    )
    return Page(items=[read(row) for row in page.items], next_cursor=page.next_cursor)


async def update(
    session: AsyncSession,
    *,
    endpoint_id: str,
    data: WebhookEndpointUpdate,
    settings: Settings,
    actor: str,
) -> WebhookEndpointRead:
    row = await get(session, endpoint_id, lock=True)
    given = data.model_fields_set
    problems = []
    if "event_types" in given:
        problems += _check_event_types(data.event_types)
    if "url" in given:
        if data.url is None:
            problems.append({"path": "url", "message": "cannot be null"})
        else:
            problems += await _check_url(data.url, settings)
    if "enabled" in given and data.enabled is None:
        problems.append({"path": "enabled", "message": "cannot be null"})
    _refuse(problems)
    before = _audited(row)
    if "url" in given and data.url is not None:
        row.url = data.url
    if "description" in given:
        row.description = data.description
    if "event_types" in given:
        row.event_types = data.event_types
    if data.enabled is not None:
        row.enabled = data.enabled
        if data.enabled:
            row.disabled_reason = None
    row.updated_at = utcnow()
    await session.flush()
    audit.record(
        session,
        actor=actor,
        action="webhook_endpoint.updated",
        target_type="webhook_endpoint",
        target_key=endpoint_id,
        before=before,
        after=_audited(row),
    )
    if row.enabled:
        await _wake(session)  # deliveries a disabled endpoint held back are due
    return read(row)


async def delete(session: AsyncSession, *, endpoint_id: str, actor: str) -> None:
    row = await get(session, endpoint_id, lock=True)
    before = _audited(row)
    await session.delete(row)  # its deliveries and their attempts go with it (ON DELETE CASCADE)
    await session.flush()
    audit.record(
        session,
        actor=actor,
        action="webhook_endpoint.deleted",
        target_type="webhook_endpoint",
        target_key=endpoint_id,
        before=before,
    )


async def rotate(
    session: AsyncSession, *, endpoint_id: str, settings: Settings, actor: str
) -> WebhookSecretRotated:
    """A new secret; the current one becomes the previous and signs too until the overlap
    ends. A rotation during an overlap drops the secret before the current one."""
    row = await get(session, endpoint_id, lock=True)
    now = utcnow()
    secret = signature.new_secret()
    overlap = settings.webhooks_rotation_overlap_s
    row.previous_secret_sealed = row.secret_sealed if overlap > 0 else None
    row.previous_secret_until = now + timedelta(seconds=overlap) if overlap > 0 else None
    row.secret_sealed = secrets_sealer(settings).seal(secret.encode(), kid=endpoint_id)
    row.updated_at = now
    await session.flush()
    audit.record(
        session,
        actor=actor,
        action="webhook_endpoint.secret_rotated",
        target_type="webhook_endpoint",
        target_key=endpoint_id,
        after={
            "previous_secret_expires_at": row.previous_secret_until
            and row.previous_secret_until.isoformat()
        },
    )
    return WebhookSecretRotated(
        id=endpoint_id, secret=secret, previous_secret_expires_at=row.previous_secret_until
    )


async def send_test(session: AsyncSession, *, endpoint_id: str) -> WebhookTestSent:
    row = await get(session, endpoint_id)
    if not row.enabled:
        raise Conflict(
            f"Webhook endpoint {endpoint_id!r} is disabled; enable it (PATCH enabled: true) "
            "before sending a test.",
            type="webhook-endpoint-disabled",
        )
    message_id = await outbox.emit_test(session, endpoint_id=endpoint_id)
    delivery_id = await session.scalar(
        select(WebhookDelivery.id).where(WebhookDelivery.message_id == message_id)
    )
    assert delivery_id is not None
    return WebhookTestSent(message_id=message_id, delivery_id=delivery_id)


def _delivery_read(
    delivery: WebhookDelivery, message: WebhookMessage, attempts: list[WebhookAttempt]
) -> WebhookDeliveryRead:
    return WebhookDeliveryRead(
        id=delivery.id,
        endpoint_id=delivery.endpoint_id,
        message_id=delivery.message_id,
        event_type=message.event_type,
        customer=message.customer_key,
        state=delivery.state,  # type: ignore[arg-type]
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at if delivery.state == "pending" else None,
        delivered_at=delivery.delivered_at,
        last_status=delivery.last_status,
        last_error=delivery.last_error,
        created_at=delivery.created_at,
        attempt_log=[
            WebhookAttemptRead(
                attempted_at=a.attempted_at,
                outcome=a.outcome,  # type: ignore[arg-type]
                status=a.status,
                duration_ms=a.duration_ms,
                error=a.error,
            )
            for a in attempts
        ],
    )


async def _attempts_of(session: AsyncSession, ids: list[str]) -> dict[str, list[WebhookAttempt]]:
    found: dict[str, list[WebhookAttempt]] = {i: [] for i in ids}
    if ids:
        rows = await session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(ids))
            .order_by(WebhookAttempt.delivery_id, WebhookAttempt.id)
        )
        for attempt in rows:
            found[attempt.delivery_id].append(attempt)
    return found


async def deliveries(
    session: AsyncSession, *, endpoint_id: str, limit: int, cursor: str | None
) -> Page[Any]:
    await get(session, endpoint_id)
    query: Any = (
        select(WebhookDelivery, WebhookMessage)
        .join(WebhookMessage, WebhookMessage.id == WebhookDelivery.message_id)
        .where(WebhookDelivery.endpoint_id == endpoint_id)
    )
    page = await paginate(
        session,
        query,
        WebhookDelivery.id,
        limit=limit,
        cursor=cursor,
        descending=True,
        scalars=False,
    )
    rows = [(delivery, message) for delivery, message in page.items]
    attempts = await _attempts_of(session, [delivery.id for delivery, _ in rows])
    return Page(
        items=[_delivery_read(d, m, attempts[d.id]) for d, m in rows], next_cursor=page.next_cursor
    )


async def retry(session: AsyncSession, *, delivery_id: str, actor: str) -> WebhookDeliveryRead:
    """Due now, whatever its state; a delivery a worker is sending right now, or one whose
    endpoint is disabled, is a 409 (as a test ping to a disabled endpoint is)."""
    now = utcnow()
    found = (
        await session.execute(
            select(WebhookDelivery, WebhookMessage)
            .join(WebhookMessage, WebhookMessage.id == WebhookDelivery.message_id)
            .where(WebhookDelivery.id == delivery_id)
            .with_for_update(of=WebhookDelivery)
        )
    ).one_or_none()
    if found is None:
        raise NotFound(
            f"Webhook delivery {delivery_id!r} does not exist.", type="webhook-delivery-not-found"
        )
    delivery, message = found
    endpoint = await get(session, delivery.endpoint_id)
    if not endpoint.enabled:
        raise Conflict(
            f"Webhook endpoint {endpoint.id!r} is disabled; enable it (PATCH enabled: true) "
            "before retrying its deliveries.",
            type="webhook-endpoint-disabled",
        )
    if delivery.lease_until is not None and delivery.lease_until > now:
        raise Conflict(
            f"Webhook delivery {delivery_id!r} is being sent right now; see its attempts.",
            type="webhook-delivery-in-flight",
            headers={"Retry-After": "5"},
        )
    delivery.state = "pending"
    delivery.next_attempt_at = now
    delivery.retried_at = now
    await session.flush()
    audit.record(
        session,
        actor=actor,
        action="webhook_delivery.retried",
        target_type="webhook_delivery",
        target_key=delivery_id,
    )
    await _wake(session)
    attempts = await _attempts_of(session, [delivery_id])
    return _delivery_read(delivery, message, attempts[delivery_id])


async def _wake(session: AsyncSession) -> None:
    """Wake the delivery loops when this transaction commits (NOTIFY is sent at commit)."""
    await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": outbox.CHANNEL})
