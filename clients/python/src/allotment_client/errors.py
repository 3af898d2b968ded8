"""The service's problem documents (RFC 9457, `application/problem+json`) as exceptions.

    AllotmentError                    status   problem type
     ├── BadRequest                     400     bad-request
     ├── Unauthorized                   401     unauthorized
     ├── Forbidden                      403     forbidden
     ├── NotFound                       404     not-found
     ├── Conflict                       409     conflict, event-conflict, instance-not-live, …
     ├── Gone                           410     (a session or lease that lapsed or was closed)
     ├── ValidationError                422     validation-error (carries `errors`)
     ├── RateLimited                    429     (carries `retry_after`)
     ├── Unavailable                    503     service-unavailable (carries `retry_after`)
     │    └── Unreachable               —       no answer at all (connect error, timeout)
     └── ArtifactInvalid                —       an artifact that does not verify (`reason`)

Every exception carries what the document said: `status`, `type` (the last segment of the
problem type URI, e.g. `instance-not-live`), `title`, `detail`, `errors` and the raw
`problem`. Other 4xx and 5xx statuses are a plain `AllotmentError`.
"""

from __future__ import annotations

import json
from typing import Any

PROBLEM_TYPE_BASE = "https://allotment.dev/problems/"


class AllotmentError(Exception):
    status: int | None = None  # None: no answer came

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        type: str = "about:blank",
        title: str = "",
        errors: list[dict[str, Any]] | None = None,
        problem: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        self.type = type
        self.title = title
        self.errors = errors or []
        self.problem = problem or {}
        self.retry_after = retry_after

    def __str__(self) -> str:
        head = f"{self.status} {self.type}" if self.status else self.type
        return f"{head}: {self.detail}"


class BadRequest(AllotmentError):
    status = 400


class Unauthorized(AllotmentError):
    status = 401


class Forbidden(AllotmentError):
    status = 403


class NotFound(AllotmentError):
    status = 404


class Conflict(AllotmentError):
    status = 409


class Gone(AllotmentError):
    status = 410


class ValidationError(AllotmentError):
    status = 422


class RateLimited(AllotmentError):
    status = 429


class Unavailable(AllotmentError):
    status: int | None = 503


class Unreachable(Unavailable):
    """No answer from the service: it could not be connected to, or did not answer in time."""

    status = None


class ArtifactInvalid(AllotmentError):
    """An artifact that must not be used; `reason` is one of docs/artifacts.md's reasons
    (`malformed`, `algorithm`, `unknown_kid`, `bad_signature`, `clock_behind`,
    `not_yet_valid`, `expired`, `wrong_machine`, `bad_key_set`)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail, type=reason)
        self.reason = reason


BY_STATUS: dict[int, type[AllotmentError]] = {
    cls.status: cls  # type: ignore[misc]
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        Gone,
        ValidationError,
        RateLimited,
        Unavailable,
    )
}


def retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds (the service sends whole seconds; an HTTP date is ignored)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def from_response(status: int, body: bytes, headers: Any) -> AllotmentError:
    """The exception for an error answer: its problem document when it has one, else what
    the status says."""
    problem: dict[str, Any] = {}
    try:
        parsed = json.loads(body) if body else {}
        if isinstance(parsed, dict):
            problem = parsed
    except ValueError:
        pass
    kind = str(problem.get("type") or "about:blank")
    if kind.startswith(PROBLEM_TYPE_BASE):
        kind = kind[len(PROBLEM_TYPE_BASE) :]
    title = str(problem.get("title") or "")
    detail = str(problem.get("detail") or title or body[:200].decode("utf-8", "replace"))
    errors = problem.get("errors")
    cls = BY_STATUS.get(status, AllotmentError)
    if cls is AllotmentError and status >= 500:
        cls = Unavailable if status in (502, 504) else AllotmentError
    return cls(
        detail or f"HTTP {status}",
        status=status,
        type=kind,
        title=title,
        errors=errors if isinstance(errors, list) else None,
        problem=problem,
        retry_after=retry_after(headers.get("retry-after")),
    )
