"""Deciding checks in process from verified artifacts, and holding those artifacts.

    decide(artifact, feature, *, subject=, instance=, tenant=, context=, consume=,
           machine=, now=)                 → Decision, or None: ask the service
    ArtifactCache                           each customer's artifact: when to refresh it,
                                            what a stream event makes stale (no I/O)
    fetch_artifact(cache, customer)         the calls that fetch and verify one artifact,
                                            as a generator that a sync or async runner drives

What an artifact decides (the table in docs/sdk.md, "What is decided where"):

    a feature the catalog lacks                      locally: feature_unknown
    a feature denied before its rules (not in the    locally, whatever else the check names
      plan, contract over, dependency missing)
    a check naming nothing else (no subject,         locally, as the artifact says; the service
      instance, tenant, context)                       when a rule reads meter use or the clock,
                                                       or the feature has a hard meter limit
    a seat: required feature naming a subject        the service (the subject's seat)
    an instance: required feature naming the         locally; another instance: the service
      machine the artifact is bound to
    a tenant, consume, or what the feature's rules   the service
      read (subject, instance, context)

An artifact is never used outside [nbf − skew, grace_until + skew], and one bound to a
machine never on another (`machine`): `decide` answers None then.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import random
import re
import threading
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any

from allotment_client import _calls
from allotment_client._http import Call
from allotment_client.artifacts import LIVE_INPUTS, Artifact, KeySet, rule_inputs, verify
from allotment_client.errors import (
    AllotmentError,
    ArtifactInvalid,
    Conflict,
    Forbidden,
    ValidationError,
)
from allotment_client.models import Decision

GRACE_WARNING = "grace_period"
FEATURE_PATTERN = "^[a-z][a-z0-9_]{0,62}$"  # the service's (docs/check.md)
_FEATURE = re.compile(FEATURE_PATTERN)


def check_feature_name(feature: str) -> None:
    """Raise the ValidationError the service answers (422) for a name that cannot be a
    feature's, so a local check and the service agree on invalid input."""
    if isinstance(feature, str) and _FEATURE.fullmatch(feature):
        return
    message = f"String should match pattern '{FEATURE_PATTERN}'"
    errors = [{"path": "feature", "message": message}]
    detail = "The request is not valid; see `errors` for each problem."
    raise ValidationError(
        detail,
        type="validation-error",
        title="Validation failed",
        errors=errors,
        problem={
            "type": "https://allotment.dev/problems/validation-error",
            "title": "Validation failed",
            "status": 422,
            "detail": detail,
            "instance": "/v1/check",
            "errors": errors,
        },
    )


JWKS_MAX_AGE_S = 300  # the key set's Cache-Control max-age (docs/artifacts.md)
UNKNOWN_S = 60.0  # a customer the service said does not exist (404): not asked again for this


def decide(
    artifact: Artifact,
    feature: str,
    *,
    subject: str | None = None,
    instance: str | None = None,
    tenant: str | None = None,
    context: Mapping[str, Any] | None = None,
    consume: int | None = None,
    machine: str | None = None,
    now: float | None = None,
) -> Decision | None:
    """The decision `artifact` makes for this check, or None when the service must decide
    (live state the artifact does not hold) or the artifact may not be used (out of its
    time, or bound to a machine other than `machine`)."""
    if now is None:
        now = time.time()
    if not artifact.usable_from <= now <= artifact.usable_until:
        return None
    if artifact.bound is not None and machine != artifact.bound:
        return None
    if consume:
        return None
    entry = artifact.entries.get(feature)
    if entry is None:
        return artifact.unknown_feature(feature)
    if entry.fixed or (subject is None and instance is None and tenant is None and not context):
        answer = entry.plain
    else:
        answer = _with_inputs(artifact, entry, subject, instance, tenant, context)
    if answer is not None and now > artifact.grace_from:
        return dataclasses.replace(answer, warnings=(*answer.warnings, GRACE_WARNING))
    return answer


def _with_inputs(
    artifact: Artifact,
    entry: Any,
    subject: str | None,
    instance: str | None,
    tenant: str | None,
    context: Mapping[str, Any] | None,
) -> Decision | None:
    reads = entry.reads
    if tenant is not None or reads & LIVE_INPUTS:
        return None  # tenant quotas and holdings; meter use; the clock
    if context and "context" in reads:
        return None
    if subject is not None and ("subject" in reads or entry.seat_required):
        return None
    if instance is not None:
        if "instance" in reads:
            return None
        if entry.instance_required:
            # Only the machine the artifact is bound to (its lease as issued) is known here.
            if artifact.bound is not None and instance == artifact.bound:
                return entry.bound_decision  # type: ignore[no-any-return]
            return None
    return entry.plain  # type: ignore[no-any-return]


@dataclass
class _Held:
    artifact: Artifact | None
    refresh_at: float
    failures: int = 0
    error: BaseException | None = None


class ArtifactCache:
    """Each customer's verified artifact and when to refresh it. Thread-safe; no I/O.

    An artifact is refreshed at `refresh_ratio` of its life (from `iat` to `exp`), at once
    when `stale(customer)` is called (a stream event), and after a failure with back-off
    (1 s doubling to 60 s). Whatever happens, `get()` never hands out an artifact past its
    `grace_until` or one bound to a machine other than `fingerprint`.
    """

    def __init__(
        self,
        *,
        fingerprint: str | None = None,
        ttl: int = 3600,
        refresh_ratio: float = 0.8,
    ) -> None:
        self.fingerprint = fingerprint
        self.ttl = ttl
        self.refresh_ratio = refresh_ratio
        self.keys: KeySet | None = None
        self.rules: dict[int, Mapping[str, frozenset[str]] | None] = {}
        self._held: dict[str, _Held] = {}
        self._unknown: dict[str, float] = {}  # customer → until when it is known not to exist
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.generation = 0  # moves with every put, failure and stale(): see wait()

    def set_keys(self, keys: KeySet) -> None:
        """A fresh key set. An artifact whose key left it (retired as compromised) is
        dropped at once: its checks go to the service until a new one is fetched."""
        with self._changed:
            self.keys = keys
            for held in self._held.values():
                if held.artifact is not None and held.artifact.kid not in keys.keys:
                    held.artifact = None
                    held.refresh_at = 0.0
            self.generation += 1
            self._changed.notify_all()

    def unbind(self, fingerprint: str | None = None) -> None:
        """This client deregistered an instance (`fingerprint`; None: not known): drop the
        artifacts bound to it at once — their checks go to the service until a fresh one
        (customer-level, the lease being gone) is fetched, which starts now."""
        with self._changed:
            for held in self._held.values():
                artifact = held.artifact
                if artifact is None or artifact.bound is None:
                    continue
                if fingerprint is None or artifact.bound == fingerprint:
                    held.artifact = None
                    held.refresh_at = 0.0
            self.generation += 1
            self._changed.notify_all()

    def get(self, customer: str, now: float | None = None) -> Artifact | None:
        held = self._held.get(customer)
        if held is None or held.artifact is None:
            return None
        artifact = held.artifact
        if artifact.usable(time.time() if now is None else now, self.fingerprint):
            return artifact
        return None

    def knows(self, customer: str, now: float | None = None) -> bool:
        """True once a fetch for the customer was attempted (success or failure), or while
        the service's 404 for it is remembered (UNKNOWN_S: its checks go to the service,
        which answers customer_unknown, and nothing fetches it on a schedule)."""
        if customer in self._held:
            return True
        until = self._unknown.get(customer)
        if until is None:
            return False
        if until > (time.time() if now is None else now):
            return True
        self._unknown.pop(customer, None)
        return False

    def unknown(self, customer: str, now: float | None = None) -> None:
        """The service has no such customer (404): forget it, and remember that for
        UNKNOWN_S, so it is neither held, nor refreshed, nor fetched again meanwhile."""
        at = time.time() if now is None else now
        with self._changed:
            self._held.pop(customer, None)
            if len(self._unknown) >= 10_000:  # a caller naming random customers stays bounded
                for name, until in list(self._unknown.items()):
                    if until <= at:
                        del self._unknown[name]
                if len(self._unknown) >= 10_000:
                    self._unknown.clear()
            self._unknown[customer] = at + UNKNOWN_S
            self.generation += 1
            self._changed.notify_all()

    def customers(self) -> list[str]:
        return list(self._held)

    def put(self, customer: str, artifact: Artifact, now: float | None = None) -> None:
        at = time.time() if now is None else now
        life = max(0.0, artifact.expires_at - artifact.issued_at)
        refresh_at = max(at + 1.0, artifact.issued_at + life * self.refresh_ratio)
        with self._changed:
            current = self._held.get(customer)
            # A slower fetch must not replace a newer artifact.
            previous = current.artifact if current is not None else None
            if (
                current is not None
                and previous is not None
                and previous.issued_at > artifact.issued_at
            ):
                current.refresh_at = min(current.refresh_at, refresh_at)
                return
            self._held[customer] = _Held(artifact, refresh_at)
            self.generation += 1
            self._changed.notify_all()

    def failed(self, customer: str, error: BaseException, now: float | None = None) -> float:
        """Record a failed fetch; returns when to try again."""
        at = time.time() if now is None else now
        with self._changed:
            held = self._held.setdefault(customer, _Held(None, at))
            held.failures += 1
            held.error = error
            delay = min(60.0, 2.0 ** min(held.failures - 1, 6)) * (0.75 + random.random() / 2)
            held.refresh_at = at + delay
            return held.refresh_at

    def error(self, customer: str) -> BaseException | None:
        held = self._held.get(customer)
        return None if held is None else held.error

    def stale(self, customer: str | None = None) -> None:
        """A stream event: refresh `customer` (every customer when None) at once."""
        with self._changed:
            targets = self._held.values() if customer is None else [self._held.get(customer)]
            for held in targets:
                if held is not None:
                    held.refresh_at = 0.0
            self.generation += 1
            self._changed.notify_all()

    def on_event(self, event: str, data: Mapping[str, Any]) -> None:
        """Apply one change-stream event (docs/stream.md)."""
        if event == "customer.changed":
            customer = data.get("customer")
            if not isinstance(customer, str) or customer not in self._held:
                return
            version = data.get("state_version")
            held = self._held[customer].artifact
            if (
                isinstance(version, int)
                and held is not None
                and held.state_version is not None
                and version <= held.state_version
            ):
                return  # already holds that state or a later one
            self.stale(customer)
        elif event in ("policy.published", "resync"):
            self.stale()

    def due(self, now: float | None = None) -> tuple[list[str], float | None]:
        """The customers to refresh now, and the next instant one falls due (None: none)."""
        at = time.time() if now is None else now
        ready: list[str] = []
        upcoming: float | None = None
        for customer, held in list(self._held.items()):
            if held.refresh_at <= at:
                ready.append(customer)
            elif upcoming is None or held.refresh_at < upcoming:
                upcoming = held.refresh_at
        return ready, upcoming

    def wait(self, since: int, timeout: float | None) -> None:
        """Block (a refresher thread) until the generation moves past `since` (read before
        calling `due()`, so no change is missed) or `timeout` passes."""
        with self._changed:
            if self.generation == since:
                self._changed.wait(timeout)

    def notify(self) -> None:
        with self._changed:
            self.generation += 1
            self._changed.notify_all()


def fetch_artifact(
    cache: ArtifactCache, customer: str
) -> Generator[Call[Any], Any, Artifact | None]:
    """Fetch, verify and store `customer`'s artifact: yields the calls to make, receives
    their answers (a runner sends each result, or throws its error in). Returns the
    artifact, or None when the customer does not exist; records any failure in the cache
    (which schedules the next try) and raises it."""
    try:
        bound = cache.fingerprint
        try:
            token = yield _calls.artifact(customer, ttl=cache.ttl, fingerprint=bound)
        except Conflict as exc:
            if exc.type != "instance-not-live":
                raise
            bound = None  # this machine holds no live lease: the customer-level artifact
            token = yield _calls.artifact(customer, ttl=cache.ttl, fingerprint=None)
        keys = cache.keys
        if keys is None or time.time() - keys.fetched_at > JWKS_MAX_AGE_S:
            keys = KeySet.from_jwks((yield _calls.jwks()))
            cache.set_keys(keys)
        version = _policy_version(token)
        if version is not None and version not in cache.rules:
            try:
                policy = yield _calls.policy(version)
                cache.rules[version] = rule_inputs(policy.get("document") or {})
            except Forbidden:
                cache.rules[version] = None  # a customer's own key: rules unknown
        rules = cache.rules.get(version) if version is not None else None
        try:
            artifact = verify(token, keys, fingerprint=bound, rules=rules)
        except ArtifactInvalid as exc:
            if exc.reason != "unknown_kid":
                raise
            keys = KeySet.from_jwks((yield _calls.jwks()))  # a rotation
            cache.set_keys(keys)
            artifact = verify(token, keys, fingerprint=bound, rules=rules)
        cache.put(customer, artifact)
        return artifact
    except Exception as exc:  # whatever failed, the next try waits its back-off
        if isinstance(exc, AllotmentError) and exc.status == 404:
            cache.unknown(customer)  # not retried on a schedule: remembered a while
            return None
        cache.failed(customer, exc)
        raise


def _policy_version(token: str) -> int | None:
    try:
        body = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        version = claims.get("policy_version")
        return version if isinstance(version, int) else None
    except (ValueError, IndexError, AttributeError):
        return None
