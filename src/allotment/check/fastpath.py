"""The /v1/check fast path: the same two endpoints, reached without the framework's router.

FastAPI's routing and dependency solving cost more than deciding a check does (profiled
with py-spy under wrk: matching, `solve_dependencies` and the exception/exit-stack layers
took over half of a warm check's CPU). This middleware sits inside the request middleware
(so ids, access logs, metrics, body limits and content types still apply), recognises
`POST /v1/check` and `POST /v1/check/batch`, and calls the very endpoint functions of
`check/endpoints.py` with the very guard they declare. Errors render through the same
problem+json functions as the app's handlers; anything unexpected propagates to the
server error handler as usual. Every other request passes through untouched, and the
routes stay registered in FastAPI for the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import SimpleNamespace

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from allotment.auth.principal import Principal
from allotment.check import endpoints
from allotment.errors import AllotmentError, render_domain_error, render_validation_error

Endpoint = Callable[[Request, Principal], Awaitable[Response]]

_ROUTES: dict[str, tuple[Endpoint, SimpleNamespace]] = {
    "/v1/check": (endpoints.check, SimpleNamespace(path="/v1/check")),
    "/v1/check/batch": (endpoints.check_batch, SimpleNamespace(path="/v1/check/batch")),
}


class CheckFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = _ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        endpoint, label = route
        scope["route"] = label  # the request middleware labels metrics by route template
        request = Request(scope, receive)
        try:
            principal = await endpoints.CHECK_GUARD(request)
            response = await endpoint(request, principal)
        except AllotmentError as exc:
            response = render_domain_error(request, exc)
        except ValidationError as exc:
            response = render_validation_error(request, exc)
        await response(scope, receive, send)
