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


# The problem document as JSON Schema: `document_problems` declares it, once, for the error
# statuses every operation of the OpenAPI document can answer.
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An RFC 9457 problem document; extension members vary by `type`.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": f"`{PROBLEM_TYPE_BASE}{{slug}}`"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "The request path."},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "Each problem of a 422, with the path of the value at fault.",
            "items": {
                "type": "object",
                "required": ["path", "message"],
                "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
    "additionalProperties": True,
}
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_BODY_METHODS = frozenset({"post", "put", "patch"})
_WRITE_METHODS = _BODY_METHODS | {"delete"}


def document_problems(document: dict[str, Any], *, public: set[tuple[str, str]]) -> None:
    """Declare problem+json responses in an OpenAPI document, in place.

    Every operation gets the statuses any route of its shape can answer (`public` holds the
    (path, method) of routes without a key): 401/403/503 behind a key, and 409 on its
    writes (a state conflict, or an `Idempotency-Key` in flight); 400/422 with parameters
    or a body; 404 with path parameters; 413/415 on POST/PUT/PATCH (the body guard);
    412/428 with `If-Match`. Other statuses a route answers it declares itself
    (`responses=`): they get the problem schema here too, and keep their description.
    FastAPI's own 422 schema (`HTTPValidationError`) is never what the API sends, so it is
    replaced.
    """
    components = document.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = PROBLEM_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            params = operation.get("parameters", [])
            statuses: set[int] = set()
            if (path, method) not in public:
                statuses |= {401, 403, 503}
                if method in _WRITE_METHODS:
                    statuses.add(409)
            if params or "requestBody" in operation:
                statuses |= {400, 422}
            if any(p.get("in") == "path" for p in params):
                statuses.add(404)
            if method in _BODY_METHODS:
                statuses |= {413, 415}
            if any(p.get("in") == "header" and p["name"].lower() == "if-match" for p in params):
                statuses |= {412, 428}
            responses = operation.setdefault("responses", {})
            declared = {int(s) for s in responses if s.isdigit() and int(s) >= 400}
            for status in sorted(statuses | declared):
                entry = responses.setdefault(str(status), {})
                if entry.get("description") in (None, "", "Validation Error"):
                    entry["description"] = _TITLES.get(status, "Error")
                entry["content"] = {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_REF}}


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
        # A validator's own ValueError carries its message; pydantic's prefix says nothing.
        message = message.removeprefix("Value error, ")
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
        from allotment.privacy.pseudonyms import loggable_path  # it imports this module

        # A subject in the path is logged by pseudonym, as the access log does.
        log.exception("unhandled_exception", path=loggable_path(request.scope))
        request_id = _request_id(request)
        # This handler answers from outside the request middleware, so it adds the header.
        return problem_response(
            500,
            "An unexpected error occurred; quote the request id when reporting it.",
            instance=request.url.path,
            request_id=request_id,
            headers={"X-Request-Id": request_id} if request_id else None,
        )
