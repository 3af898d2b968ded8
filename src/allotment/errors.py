"""Domain errors and their RFC 9457 `application/problem+json` rendering.

    AllotmentError                 status   type
     ├── BadRequest                  400     bad-request
     ├── Unauthorized                401     unauthorized
     ├── Forbidden                   403     forbidden
     ├── NotFound                    404     not-found
     ├── Conflict                    409     conflict
     ├── PreconditionFailed          412     precondition-failed
     ├── PayloadTooLarge             413     payload-too-large
     ├── UnsupportedMediaType        415     unsupported-media-type
     ├── ValidationFailed            422     validation-error   (carries `errors`)
     ├── PreconditionRequired        428     precondition-required
     └── ServiceUnavailable          503     service-unavailable (carries Retry-After)

Services raise these; handlers here turn them, FastAPI's validation errors, Starlette's
HTTP errors and any unexpected exception into problem documents. Nothing else in the code
builds an error response.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError as PydanticValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from allotment.kit.jsonx import dumps

PROBLEM_TYPE_BASE = "https://allotment.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"

log = structlog.get_logger("allotment.errors")


class AllotmentError(Exception):
    status: int = 400
    type: str = "bad-request"
    title: str = "Bad request"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        title: str | None = None,
        errors: Sequence[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        if title is not None:
            self.title = title
        self.errors = list(errors) if errors else None
        self.headers = headers or {}
        self.extra = extra or {}


class BadRequest(AllotmentError):
    status, type, title = 400, "bad-request", "Bad request"


class Unauthorized(AllotmentError):
    status, type, title = 401, "unauthorized", "Unauthorized"

    def __init__(self, message: str = "A valid API key is required.", **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kw)


class Forbidden(AllotmentError):
    status, type, title = 403, "forbidden", "Forbidden"


class NotFound(AllotmentError):
    status, type, title = 404, "not-found", "Not found"


class Conflict(AllotmentError):
    status, type, title = 409, "conflict", "Conflict"


class PreconditionFailed(AllotmentError):
    status, type, title = 412, "precondition-failed", "Precondition failed"


class PayloadTooLarge(AllotmentError):
    status, type, title = 413, "payload-too-large", "Payload too large"


class UnsupportedMediaType(AllotmentError):
    status, type, title = 415, "unsupported-media-type", "Unsupported media type"


class ValidationFailed(AllotmentError):
    status, type, title = 422, "validation-error", "Validation failed"


class PreconditionRequired(AllotmentError):
    status, type, title = 428, "precondition-required", "Precondition required"


class ServiceUnavailable(AllotmentError):
    status, type, title = 503, "service-unavailable", "Service unavailable"

    def __init__(self, message: str, *, retry_after: int = 1, **kw: Any) -> None:
        kw.setdefault("headers", {"Retry-After": str(retry_after)})
        super().__init__(message, **kw)


_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    412: "Precondition failed",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Validation failed",
    428: "Precondition required",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}

_SLUGS = {
    405: "method-not-allowed",
    406: "not-acceptable",
    429: "too-many-requests",
    500: "internal-error",
}


def problem_response(
    status: int,
    detail: str,
    *,
    type: str | None = None,
    title: str | None = None,
    instance: str | None = None,
    errors: Sequence[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> Response:
    slug = type or _SLUGS.get(status) or _TITLES.get(status, "error").lower().replace(" ", "-")
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + slug,
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = list(errors)
    if request_id:
        body["request_id"] = request_id
    if extra:
        body.update(extra)
    return Response(dumps(body), status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def _loc_to_path(loc: Sequence[Any]) -> str:
    # FastAPI prefixes locations with where the value came from; "body" is implied.
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "$"


def validation_errors(errors: Sequence[Any]) -> list[dict[str, str]]:
    result = []
    for err in errors:
        message = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            message = "Unknown field"
        result.append({"path": _loc_to_path(err.get("loc", ())), "message": message})
    return result


def render_domain_error(request: Request, exc: AllotmentError) -> Response:
    return problem_response(
        exc.status,
        exc.message,
        type=exc.type,
        title=exc.title,
        instance=request.url.path,
        errors=exc.errors,
        headers=exc.headers,
        extra=exc.extra,
        request_id=_request_id(request),
    )


def render_validation_error(
    request: Request, exc: RequestValidationError | PydanticValidationError
) -> Response:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = next(e for e in errors if e.get("type") == "json_invalid")
        ctx = detail.get("ctx") or {}
        return problem_response(
            400,
            f"The request body is not valid JSON: {ctx.get('error', 'parse error')}",
            type="malformed-json",
            title="Malformed JSON",
            instance=request.url.path,
            request_id=_request_id(request),
        )
    return problem_response(
        422,
        "The request is not valid; see `errors` for each problem.",
        type="validation-error",
        instance=request.url.path,
        errors=validation_errors(errors),
        request_id=_request_id(request),
    )


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(AllotmentError)
    async def _domain(request: Request, exc: AllotmentError) -> Response:
        return render_domain_error(request, exc)

    @app.exception_handler(RequestValidationError)
    @app.exception_handler(PydanticValidationError)
    async def _validation(
        request: Request, exc: RequestValidationError | PydanticValidationError
    ) -> Response:
        return render_validation_error(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        detail = (
            exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "Error")
        )
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"No route matches {request.url.path}."
        if exc.status_code == 405 and detail == "Method Not Allowed":
            detail = f"{request.method} is not allowed on {request.url.path}."
        return problem_response(
            exc.status_code,
            detail,
            instance=request.url.path,
            headers=getattr(exc, "headers", None),
            request_id=_request_id(request),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled_exception", path=request.url.path)
        request_id = _request_id(request)
        # This handler answers from outside the request middleware, so it adds the header.
        return problem_response(
            500,
            "An unexpected error occurred; quote the request id when reporting it.",
            instance=request.url.path,
            request_id=request_id,
            headers={"X-Request-Id": request_id} if request_id else None,
        )
