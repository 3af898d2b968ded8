"""Subjects' keyed pseudonyms (docs/privacy.md).

    of(customer_key, subject) = "psn_" + hex(HMAC-SHA256(key, message))[:32]
    message = f"{len(customer_key)}:{customer_key}{subject}"   (unambiguous)

(128 bits of the MAC.) A pseudonym's own pseudonym is itself: a row whose subject was erased
(replaced by its pseudonym) is recorded by the same pseudonym when it ends later.

The key is derived with HKDF-SHA256 from `ALLOTMENT_PSEUDONYM_SECRET`, or, unset, from the
signing secret (signing/secret.py), so every process of a deployment computes the same
pseudonym for the same subject, today and after an erasure. The customer's key is in the
MAC's input: one person's pseudonyms under two customers do not link. Without the key a
pseudonym cannot be turned back into the subject, nor confirmed by guessing subjects.

Usage events, the decision log, the audit trail and the log lines hold `of(...)`, never the
raw subject; seats, sessions and devices keep the raw one until it is erased.

A process holds one `Pseudonyms` per deployment secret: the app builds it from its settings
(`app.state.pseudonyms`, and in every session's `info`), other callers take the one of the
environment's settings (`of_session`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from allotment.config import Settings, get_settings
from allotment.signing import secret

PREFIX = "psn_"
INFO_KEY = "pseudonyms"  # the session.info entry (db.create_sessionmaker)
_SALT = b"allotment pseudonyms"
_INFO = b"allotment/subject-pseudonyms/hmac-sha256/v1"
_CACHED = 65_536  # subjects per process whose pseudonym is kept
_PSEUDONYM = re.compile(r"psn_[0-9a-f]{32}")


class Pseudonyms:
    """Pseudonyms under one key; the last `_CACHED` are kept (one HMAC per new subject)."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self.of = lru_cache(maxsize=_CACHED)(self._compute)

    def _compute(self, customer_key: str, subject: str) -> str:
        if _PSEUDONYM.fullmatch(subject):  # an erased row's: it stays what it was
            return subject
        message = f"{len(customer_key)}:{customer_key}{subject}".encode()  # unambiguous
        return PREFIX + hmac.new(self._key, message, hashlib.sha256).hexdigest()[:32]

    def ref(self, customer_key: str, subject: str | None) -> str | None:
        """`of`, or None for no subject."""
        return None if subject is None else self.of(customer_key, subject)


def derive(value: str) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=_SALT, info=_INFO).derive(value.encode())


def from_settings(settings: Settings) -> Pseudonyms:
    if settings.pseudonym_secret is not None and settings.pseudonym_secret.get_secret_value():
        return Pseudonyms(derive(settings.pseudonym_secret.get_secret_value()))
    value, _ = secret.secret(settings)
    return Pseudonyms(derive(value))


@lru_cache(maxsize=1)
def default() -> Pseudonyms:
    """Those of the environment's settings (the CLI, the worker, a bare sessionmaker)."""
    return from_settings(get_settings())


def of_session(session: Any) -> Pseudonyms:
    """The pseudonyms of the app or process the session belongs to."""
    found: Pseudonyms | None = session.info.get(INFO_KEY)
    return found if found is not None else default()


_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


def loggable_path(scope: Any) -> str:
    """The request's path for the access log: a route with a `{subject}` (a seat's release,
    an erasure) shows the subject's pseudonym instead (the app's `path_of` for
    kit/middleware.RequestContext)."""
    params = scope.get("path_params")
    if not params or "subject" not in params:
        return str(scope["path"])
    template: str = scope["route"].path
    pseudonyms: Pseudonyms | None = getattr(scope["app"].state, "pseudonyms", None)
    if pseudonyms is None:  # an app not started: the template, never the subject
        return template
    ref = pseudonyms.of(str(params.get("key", "")), str(params["subject"]))

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        return ref if name == "subject" else str(params.get(name, ""))

    return _PARAM.sub(fill, template)
