"""Identifiers the API accepts, each defined once: its length limit and its characters.

    type            limit                            used by
    CustomerKey     CUSTOMER_KEY_PATTERN (64 chars)  customers, check, batch check
    TenantKey       the same pattern                 tenants, seats, sessions, instances, check
    Subject         MAX_SUBJECT (256), no NUL        seats, sessions, check, batch check
    Fingerprint     MAX_FINGERPRINT (256), no NUL    instances, check (`instance`), batch check
    Environment     MAX_ENVIRONMENT (128), no NUL    instances
    CatalogName     policy NAME_PATTERN (63 chars)   features, meters, kinds, plans, add-ons

Every route that takes one of these uses the type from here, so a value one route accepts
is never refused by another (a seat's subject is always one a check can name); an over-long
or malformed value is a 422 naming its path. docs/seats.md#identifiers lists them.
NUL is refused everywhere: PostgreSQL text cannot hold it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

from allotment.auth.principal import CUSTOMER_KEY_PATTERN
from allotment.policy.spec import NAME_PATTERN

__all__ = [
    "MAX_ENVIRONMENT",
    "MAX_FINGERPRINT",
    "MAX_KEY",
    "MAX_NAME",
    "MAX_SUBJECT",
    "CatalogName",
    "CustomerKey",
    "Environment",
    "Fingerprint",
    "Subject",
    "TenantKey",
]

MAX_SUBJECT = 256
MAX_FINGERPRINT = 256
MAX_ENVIRONMENT = 128
MAX_KEY = 64  # CUSTOMER_KEY_PATTERN: a first character and up to 63 more
MAX_NAME = 63  # NAME_PATTERN: a first letter and up to 62 more

_NO_NUL = r"^[^\x00]+$"

CustomerKey = Annotated[str, StringConstraints(pattern=CUSTOMER_KEY_PATTERN)]
TenantKey = Annotated[str, StringConstraints(pattern=CUSTOMER_KEY_PATTERN)]
Subject = Annotated[str, StringConstraints(min_length=1, max_length=MAX_SUBJECT, pattern=_NO_NUL)]
Fingerprint = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_FINGERPRINT, pattern=_NO_NUL)
]
Environment = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ENVIRONMENT, pattern=_NO_NUL)
]
CatalogName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
