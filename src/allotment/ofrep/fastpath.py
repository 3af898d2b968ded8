"""The OFREP routes, reached without the framework's router, answering errors as OFREP does.

As check/fastpath.py does for /v1/check (and for the same reason: routing and dependency
solving cost more than a decision), this middleware sits inside the request middleware,
recognises the two OFREP paths and calls the very endpoint functions and guard of
ofrep/endpoints.py. Unlike it, it also owns the error responses of those paths: the protocol
has its own (mapping.error_body), never problem+json —

    raised                               answered
    OfrepError                           its status; 400/404 {key, errorCode, errorDetails}
    Unauthorized, Forbidden              401, 403 without a body
    ServiceUnavailable (key unverifiable)  429 with Retry-After (whole seconds): the one
                                         "come back later" OFREP providers understand
    any other AllotmentError             400 GENERAL with errorDetails
    a method other than POST             405 {errorDetails} (a CORS preflight is answered
                                         first when the origin is allowed: OfrepFastPath)
    anything else                        500 {errorDetails}, logged

Every other request passes through untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import structlog
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from allotment.errors import AllotmentError, Forbidden, ServiceUnavailable, Unauthorized
from allotment.ofrep import endpoints
from allotment.ofrep.mapping import OfrepError, error_body

PREFIX = "/ofrep/"
BULK = "/ofrep/v1/evaluate/flags"
SINGLE = BULK + "/"
_BULK_ROUTE = SimpleNamespace(path=BULK)
_SINGLE_ROUTE = SimpleNamespace(path=SINGLE + "{key}")

log = structlog.get_logger("allotment.ofrep")


def render(error: OfrepError) -> Response:
    body, headers = error_body(error)
    if body is None:
        return Response(status_code=error.status, headers=headers)
    return Response(body, status_code=error.status, headers=headers, media_type="application/json")


def body_refusal(status: int, detail: str, path: str) -> Response:
    """The body guard's refusals (too large, a NUL in the path) on OFREP paths: the request
    cannot be read, which the protocol calls a PARSE_ERROR — with the flag's `key` on the
    single-flag route, as every single-flag failure has (providers require it)."""
    key = path.removeprefix(SINGLE) if path.startswith(SINGLE) else None
    return render(OfrepError(400, detail, code="PARSE_ERROR", key=key))


def as_ofrep(exc: AllotmentError, key: str | None = None) -> OfrepError:
    if isinstance(exc, Unauthorized | Forbidden):
        return OfrepError(exc.status, exc.message)
    if isinstance(exc, ServiceUnavailable):
        retry = exc.headers.get("Retry-After", "1")
        seconds = float(retry) if retry.isdigit() else 1.0
        return OfrepError(429, exc.message, retry_after_s=seconds)
    return OfrepError(400, exc.message, code="GENERAL", key=key)


# What a browser's OFREP provider sends (ofrep-web-provider: the key, JSON, the ETag back).
CORS_HEADERS = ("Authorization", "X-API-Key", "Content-Type", "If-None-Match")


class OfrepFastPath:
    """`cors_origins` (ALLOTMENT_OFREP_CORS_ORIGINS): the browser origins allowed to call
    the OFREP routes — preflights answered, `Access-Control-Allow-Origin` on their answers,
    `ETag` exposed — by Starlette's CORSMiddleware around these routes only. Empty: none
    (no CORS headers; a preflight is a 405 like any other method but POST)."""

    def __init__(self, app: ASGIApp, *, cors_origins: Sequence[str] = ()) -> None:
        self.app = app
        self.cors: ASGIApp | None = None
        if cors_origins:
            self.cors = CORSMiddleware(
                self._serve,
                allow_origins=list(cors_origins),
                allow_methods=["POST"],
                allow_headers=list(CORS_HEADERS),
                expose_headers=["ETag"],
                max_age=600,
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if path == BULK:
            scope["route"] = _BULK_ROUTE  # the request middleware labels metrics by route
        elif path.startswith(SINGLE):
            scope["route"] = _SINGLE_ROUTE
        else:
            await self.app(scope, receive, send)
            return
        await (self.cors or self._serve)(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        key = None if path == BULK else path.removeprefix(SINGLE)
        request = Request(scope, receive)
        if scope["method"] != "POST":
            details = f"{scope['method']} is not allowed here: OFREP evaluates with POST."
            response = render(OfrepError(405, details))
            response.headers["Allow"] = "POST"
            await response(scope, receive, send)
            return
        try:
            principal = await endpoints.OFREP_GUARD(request)
            if key is None:
                response = await endpoints.evaluate_flags(
                    request, principal, request.headers.get("if-none-match")
                )
            else:
                response = await endpoints.evaluate_flag(key, request, principal)
        except OfrepError as exc:
            response = render(exc)
        except AllotmentError as exc:
            response = render(as_ofrep(exc, key))
        except Exception:
            log.exception("ofrep_unhandled", path=path)
            response = render(OfrepError(500, "An unexpected error occurred."))
        await response(scope, receive, send)
