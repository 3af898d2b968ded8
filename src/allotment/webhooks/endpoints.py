"""The webhook endpoints API (docs/webhooks.md): admin scope throughout."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from allotment.auth.principal import Principal
from allotment.deps import SessionDep, SettingsDep, require
from allotment.kit.idempotency import IdempotencyDep
from allotment.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, PageRead
from allotment.webhooks import service as webhooks
from allotment.webhooks.schemas import (
    WebhookDeliveryRead,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
    WebhookEndpointRead,
    WebhookEndpointUpdate,
    WebhookSecretRotated,
    WebhookTestSent,
)

router = APIRouter(tags=["webhooks"])

# Endpoints decide where the service's news goes and hold signing secrets: admin only.
Admin = Annotated[Principal, require()]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
BASE = "/v1/webhook-endpoints"


@router.post(BASE, status_code=201, response_model=WebhookEndpointCreated)
async def create_endpoint(
    body: WebhookEndpointCreate,
    principal: Admin,
    session: SessionDep,
    settings: SettingsDep,
    idempotency: IdempotencyDep,
) -> Response:
    """Register an endpoint; the answer carries its `whsec_` secret, shown this once."""
    created = await webhooks.create(session, data=body, settings=settings, actor=principal.actor)
    return await idempotency.respond(created, status=201)


@router.get(BASE, response_model=PageRead[WebhookEndpointRead])
async def list_endpoints(
    principal: Admin, session: SessionDep, limit: Limit = DEFAULT_LIMIT, cursor: str | None = None
) -> PageRead[WebhookEndpointRead]:
    page = await webhooks.list_endpoints(session, limit=limit, cursor=cursor)
    return PageRead(items=page.items, next_cursor=page.next_cursor)


@router.get(BASE + "/{endpoint_id}", response_model=WebhookEndpointRead)
async def get_endpoint(
    endpoint_id: str, principal: Admin, session: SessionDep
) -> WebhookEndpointRead:
    return webhooks.read(await webhooks.get(session, endpoint_id))


@router.patch(BASE + "/{endpoint_id}", response_model=WebhookEndpointRead)
async def update_endpoint(
    endpoint_id: str,
    body: WebhookEndpointUpdate,
    principal: Admin,
    session: SessionDep,
    settings: SettingsDep,
) -> WebhookEndpointRead:
    return await webhooks.update(
        session, endpoint_id=endpoint_id, data=body, settings=settings, actor=principal.actor
    )


@router.delete(BASE + "/{endpoint_id}", status_code=204)
async def delete_endpoint(endpoint_id: str, principal: Admin, session: SessionDep) -> Response:
    """Remove the endpoint with its deliveries: nothing more is sent to it."""
    await webhooks.delete(session, endpoint_id=endpoint_id, actor=principal.actor)
    return Response(status_code=204)


@router.post(BASE + "/{endpoint_id}/rotate-secret", response_model=WebhookSecretRotated)
async def rotate_secret(
    endpoint_id: str,
    principal: Admin,
    session: SessionDep,
    settings: SettingsDep,
    idempotency: IdempotencyDep,
) -> Response:
    """A new secret, shown once; the old one keeps signing (a second signature) until
    `previous_secret_expires_at`."""
    rotated = await webhooks.rotate(
        session, endpoint_id=endpoint_id, settings=settings, actor=principal.actor
    )
    return await idempotency.respond(rotated, status=200)


@router.post(BASE + "/{endpoint_id}/test", status_code=202, response_model=WebhookTestSent)
async def send_test(
    endpoint_id: str, principal: Admin, session: SessionDep, idempotency: IdempotencyDep
) -> Response:
    """Queue a `webhook.test` message for this endpoint alone."""
    sent = await webhooks.send_test(session, endpoint_id=endpoint_id)
    return await idempotency.respond(sent, status=202)


@router.get(BASE + "/{endpoint_id}/deliveries", response_model=PageRead[WebhookDeliveryRead])
async def list_deliveries(
    endpoint_id: str,
    principal: Admin,
    session: SessionDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> PageRead[WebhookDeliveryRead]:
    """The endpoint's deliveries, newest first, each with every attempt."""
    page = await webhooks.deliveries(session, endpoint_id=endpoint_id, limit=limit, cursor=cursor)
    return PageRead(items=page.items, next_cursor=page.next_cursor)


@router.post(
    "/v1/webhook-deliveries/{delivery_id}/retry",
    status_code=202,
    response_model=WebhookDeliveryRead,
)
async def retry_delivery(
    delivery_id: str, principal: Admin, session: SessionDep, idempotency: IdempotencyDep
) -> Response:
    """Send the delivery again now (with the same webhook-id), whatever its state."""
    retried = await webhooks.retry(session, delivery_id=delivery_id, actor=principal.actor)
    return await idempotency.respond(retried, status=202)
