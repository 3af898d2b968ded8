"""Who is calling, and what their scopes let them do.

scope            may
admin            everything
check            checks, seats, sessions, instances, events (a product backend)
finance          read usage, invoice previews, audit, decisions
customer:<key>   read-only, that one customer (a self-service dashboard)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CUSTOMER_KEY_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
_CUSTOMER_KEY = re.compile(CUSTOMER_KEY_PATTERN)
BASE_SCOPES = frozenset({"admin", "check", "finance"})


def scope_error(scope: str) -> str | None:
    if scope in BASE_SCOPES:
        return None
    if scope.startswith("customer:"):
        if _CUSTOMER_KEY.match(scope.removeprefix("customer:")):
            return None
        return f"{scope!r}: the customer key must be lowercase letters, digits and -_. (≤ 64)"
    return f"{scope!r} is not a scope; use admin, check, finance or customer:<key>"


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    name: str
    scopes: frozenset[str]

    @property
    def actor(self) -> str:
        return f"api_key:{self.key_id}"

    @property
    def customer_scoped(self) -> bool:
        return any(scope.startswith("customer:") for scope in self.scopes)

    def allows(self, required: tuple[str, ...], *, customer: str | None, read_only: bool) -> bool:
        if "admin" in self.scopes or not self.scopes.isdisjoint(required):
            return True
        return customer is not None and read_only and f"customer:{customer}" in self.scopes
