"""What the sync and the async client share: each API call as a `Call` (the request, how
to read its answer, whether a retry is safe) and the retry policy, without any I/O.

A client runs a call as

    attempt = 0
    while True:
        try:    response = send(call.request)        # the only sync/async difference
        except httpx.TransportError as exc:  step = call.next_step(attempt, error=exc)
        else:   step = call.next_step(attempt, response=response)
        if step.done: return step.value              # or next_step raised the error
        sleep(step.delay); attempt += 1

A call is retried when no request reached the service (a connect error), when the service
refused it without acting (503, 429, and 409 `idempotency-in-flight`), and, when the call is
safe to repeat (a read, a check without `consume`, a write with an `Idempotency-Key`, events
with their ids), after any transport error or 5xx. The same request, headers included, is
sent each time: a write's `Idempotency-Key` is chosen once per call, so the service replays
its first answer instead of acting twice.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx

from allotment_client import errors

T = TypeVar("T")

IDEMPOTENCY_HEADER = "Idempotency-Key"


@dataclass(frozen=True)
class RetryPolicy:
    """Up to `attempts` tries in all, waiting `backoff` × 2^n (with jitter, at most
    `max_backoff`, or the service's `Retry-After` when it sends one) in between."""

    attempts: int = 4
    backoff: float = 0.2
    max_backoff: float = 5.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff * 4)
        base = min(self.max_backoff, self.backoff * (2**attempt))
        return base * (0.5 + random.random() / 2)


NO_RETRY = RetryPolicy(attempts=1)


@dataclass(frozen=True)
class Step(Generic[T]):
    done: bool
    value: T | None = None
    delay: float = 0.0


def parse_json(response: httpx.Response) -> Any:
    return json.loads(response.content) if response.content else None


def parse_nothing(response: httpx.Response) -> None:
    return None


def parse_text(response: httpx.Response) -> str:
    return response.text


@dataclass
class Call(Generic[T]):
    """One API call: built once, sent as many times as the retry policy allows."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json_body: Any = None
    content: bytes | None = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    safe: bool = False
    policy: RetryPolicy | None = None

    @classmethod
    def write(
        cls, method: str, path: str, parse: Callable[[httpx.Response], T], **kw: Any
    ) -> Call[T]:
        """A write made safe to repeat by an `Idempotency-Key` chosen here, once."""
        key = kw.pop("idempotency_key", None) or f"sdk-{uuid.uuid4().hex}"
        headers = {**kw.pop("headers", {}), IDEMPOTENCY_HEADER: key}
        return cls(method, path, parse, headers=headers, safe=True, **kw)

    def request(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        content: bytes | None
        if self.json_body is not None:
            content = json.dumps(self.json_body, separators=(",", ":")).encode()
            headers = {"Content-Type": "application/json", **self.headers}
        else:
            content, headers = self.content, self.headers
        return http.build_request(
            self.method, self.path, content=content, params=self.params, headers=headers
        )

    def next_step(
        self,
        attempt: int,
        policy: RetryPolicy,
        *,
        response: httpx.Response | None = None,
        error: httpx.TransportError | None = None,
    ) -> Step[T]:
        """What to do after `attempt` (0-based) answered `response` or failed with `error`:
        the parsed value, a wait before the next try, or the error raised."""
        policy = self.policy or policy
        last = attempt + 1 >= policy.attempts
        if error is not None:
            # A connect error means nothing was sent: always safe to try again.
            if not last and (self.safe or isinstance(error, httpx.ConnectError)):
                return Step(False, delay=policy.delay(attempt))
            raise errors.Unreachable(
                f"{self.method} {self.path}: {type(error).__name__}: {error}"
            ) from error
        assert response is not None
        if response.status_code < 400:
            return Step(True, self.parse(response))
        problem = errors.from_response(response.status_code, response.content, response.headers)
        refused = response.status_code in (429, 503) or problem.type == "idempotency-in-flight"
        if not last and (refused or (self.safe and response.status_code >= 500)):
            return Step(False, delay=policy.delay(attempt, problem.retry_after))
        raise problem


def drive(plan: Generator[Call[Any], Any, T], send: Callable[[Call[Any]], Any]) -> T:
    """Run a plan of calls (a generator yielding `Call`s, as `local.fetch_artifact`) with a
    sync `send`: each answer is sent back in, each error thrown in."""
    try:
        call = next(plan)
        while True:
            try:
                result = send(call)
            except Exception as exc:
                call = plan.throw(exc)
            else:
                call = plan.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def adrive(
    plan: Generator[Call[Any], Any, T], send: Callable[[Call[Any]], Awaitable[Any]]
) -> T:
    """`drive` with an async `send`."""
    try:
        call = next(plan)
        while True:
            try:
                result = await send(call)
            except Exception as exc:
                call = plan.throw(exc)
            else:
                call = plan.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
