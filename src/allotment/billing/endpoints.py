"""Finance: invoice previews (JSON or CSV), the list of every contract's, reconciliation."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response

from allotment.auth.principal import Principal
from allotment.billing import service as billing
from allotment.billing.schemas import InvoiceList, InvoiceRead, ReconciliationRead
from allotment.deps import ReadSessionDep, SessionDep, require
from allotment.kit.clock import QueryInstant, isoformat, utcnow
from allotment.kit.jsonx import dumps
from allotment.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(tags=["billing"])

Finance = Annotated[Principal, require("finance")]
# Checked by data.period (not by a Query pattern), so every bad period is reported at the
# same path, `period`, as `as_of` is at `as_of`; the pattern stays in the OpenAPI schema.
Period = Annotated[
    str,
    Query(
        description="A calendar month, YYYY-MM.",
        json_schema_extra={"pattern": r"^[0-9]{4}-[0-9]{2}$"},
    ),
]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
AsOf = Annotated[
    QueryInstant | None,
    Query(
        description="The instant the preview is taken at (RFC 3339, with an offset): within or "
        "after the period, not in the future. Default: now, to the second."
    ),
]


AS_OF_HEADER = "Allotment-As-Of"


def _wants_csv(request: Request) -> bool:
    return "text/csv" in request.headers.get("accept", "")


@router.get(
    "/v1/contracts/{contract_id}/invoice-preview",
    response_model=InvoiceRead,
    responses={200: {"content": {"text/csv": {}}}},
)
async def invoice_preview(
    contract_id: str,
    period: Period,
    request: Request,
    principal: Finance,
    session: ReadSessionDep,
    as_of: AsOf = None,
) -> Response:
    """The contract's invoice for one calendar month (UTC), to date for the current month,
    as of an instant. With `Accept: text/csv`, the lines as CSV."""
    invoice = await billing.preview(
        session, contract_id=contract_id, period=period, now=utcnow(), as_of=as_of
    )
    headers = {AS_OF_HEADER: isoformat(invoice.as_of)}  # the CSV's instant, too
    if _wants_csv(request):
        return Response(billing.csv_lines(invoice), media_type="text/csv", headers=headers)
    return Response(
        dumps(invoice.model_dump(mode="json")), media_type="application/json", headers=headers
    )


@router.get(
    "/v1/invoice-preview",
    response_model=InvoiceList,
    responses={200: {"content": {"text/csv": {}}}},
)
async def invoice_previews(
    period: Period,
    request: Request,
    principal: Finance,
    session: ReadSessionDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: str | None = None,
    as_of: AsOf = None,
) -> Response:
    """Every contract active in the period, with its subtotal. With `Accept: text/csv`, the
    page as CSV (the next cursor in the `Link` header)."""
    invoices = await billing.list_previews(
        session, period=period, now=utcnow(), limit=limit, cursor=cursor, as_of=as_of
    )
    headers = {AS_OF_HEADER: isoformat(invoices.as_of)}
    if invoices.next_cursor is not None:
        # The next page as of the same instant, so a paged export is one instant's.
        query = urlencode(
            {
                "period": period,
                "as_of": isoformat(invoices.as_of),
                "limit": limit,
                "cursor": invoices.next_cursor,
            }
        )
        headers["Link"] = f'<{request.url.path}?{query}>; rel="next"'
    if _wants_csv(request):
        return Response(billing.csv_summaries(invoices), media_type="text/csv", headers=headers)
    return Response(
        dumps(invoices.model_dump(mode="json")), media_type="application/json", headers=headers
    )


@router.get("/v1/contracts/{contract_id}/reconciliation", response_model=ReconciliationRead)
async def reconciliation(
    contract_id: str, period: Period, principal: Finance, session: SessionDep
) -> ReconciliationRead:
    """What was enforced against what the contract allows, with each discrepancy."""
    # The primary, not the replica (ReadSessionDep): a discrepancy found here is announced,
    # once, by a write (reconciliation.discrepancy, docs/webhooks.md).
    return await billing.reconcile_contract(
        session, contract_id=contract_id, period=period, now=utcnow()
    )
