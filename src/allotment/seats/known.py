"""The named-seat limits this process last read for each customer, for the direct path.

`direct.assign` (the general path) remembers them whenever it reads a customer's limits
under the pool lock; `direct.assign_direct` sends them with the assignment and the database
confirms, under the same lock, that the contract revision and policy version they came from
are still those in force (else it answers `stale` and they are forgotten here). So a stale
entry costs one fallback, never a wrong answer. Bounded LRU; `clear()` for tests.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from allotment.contracts import pools
from allotment.contracts.limits import SeatLimits


@dataclass(frozen=True)
class KnownLimits:
    """A customer's named-seat limits, and the contract revision and policy version they
    were read under."""

    contract_id: str
    revision: int
    active_version: int | None  # None: the revision pins its version
    seats: SeatLimits


_known: OrderedDict[str, KnownLimits] = OrderedDict()
_MAX = 100_000


def get(customer: str) -> KnownLimits | None:
    return _known.get(customer)


def knows(customer: str) -> bool:
    """Whether this process holds the customer's named-seat limits (the fast path's test)."""
    return customer in _known


def remember(customer: str, found: pools.Pools) -> None:
    seats = found.limits.seats if found.limits is not None else None
    if seats is None or seats.model != "named" or found.contract_id is None:
        _known.pop(customer, None)
        return
    assert found.revision is not None
    _known[customer] = KnownLimits(found.contract_id, found.revision, found.active_version, seats)
    _known.move_to_end(customer)
    while len(_known) > _MAX:
        _known.popitem(last=False)


def forget(customer: str) -> None:
    _known.pop(customer, None)


def clear() -> None:
    _known.clear()
