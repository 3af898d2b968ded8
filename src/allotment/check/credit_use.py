"""Credit wallets for checks: each customer's wallet at the start of the month, read at most
once per customer state (and per `ttl_s` for the month's fixed lines), never per check.

    WalletCache.get(snapshot, now)   the customer's MonthWallet (billing/credit_balance.py),
                                     or None: no wallet, or none needed. Read on demand when
                                     the customer's state version or the month changed
                                     (a grant bumps the state version, so a top-up shows
                                     at the next check); past `ttl_s` the entry is served
                                     while a background read renews it
    needs(snapshot)                  the plan in force enforces its credits

The balance itself is finished per check with the meter totals the usage cache already
holds (check/credits.py): the wallet's grants and the month's lines other than meters
change only with the customer's state or slowly (instance-hours); meter use changes with
every event. A read is what `billing.wallet_ledger.month_wallet` costs: one preview per
month since the first grant (docs/billing.md, "Credit wallets"), so it is done once per
state change, shared by every check that waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from allotment.billing import wallet_ledger
from allotment.billing.credit_balance import MonthWallet
from allotment.check.values import Snapshot

log = logging.getLogger("allotment.check.credit_use")


# Meters whose month total in the usage cache is the quantity an invoice bills: the others
# are priced with the wallet's fixed lines, as of its last read.
LIVE_AGGREGATIONS = frozenset({"count", "sum", "max", "unique_count"})


def needs(snapshot: Snapshot) -> bool:
    plan = snapshot.plan
    credits = plan.price.credits if plan is not None else None
    return credits is not None and credits.enforce and snapshot.customer_id is not None


@dataclass(slots=True)
class _Entry:
    wallet: MonthWallet | None
    state_version: int
    month: datetime
    read_at: float  # monotonic


class WalletCache:
    def __init__(
        self,
        *,
        maker: async_sessionmaker[AsyncSession],
        ttl_s: float = 30.0,
        max_entries: int = 10_000,
    ) -> None:
        self.maker = maker
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._reads: dict[str, asyncio.Task[_Entry]] = {}

    def clear(self) -> None:
        self._entries.clear()

    async def get(self, snapshot: Snapshot, now: datetime) -> MonthWallet | None:
        if snapshot.customer_id is None:
            return None
        key = snapshot.customer
        month = wallet_ledger.month_start(now)
        entry = self._entries.get(key)
        if (
            entry is not None
            and entry.state_version == snapshot.state_version
            and entry.month == month
        ):
            if time.monotonic() - entry.read_at >= self.ttl_s and key not in self._reads:
                self._start(key, snapshot, now)  # renewed in the background; this one stands
            return entry.wallet
        task = self._reads.get(key)
        if task is None or task.done():
            task = self._start(key, snapshot, now)
        try:
            # Shielded: a cancelled check must not cancel the read other checks wait on.
            return (await asyncio.shield(task)).wallet
        except Exception as exc:  # PostgreSQL down: the last wallet read stands
            log.debug("wallet read failed: %s", exc)
            return entry.wallet if entry is not None else None

    def _start(self, key: str, snapshot: Snapshot, now: datetime) -> asyncio.Task[_Entry]:
        task = asyncio.get_running_loop().create_task(self._read(key, snapshot, now))
        self._reads[key] = task
        task.add_done_callback(lambda done: self._done(key, done))
        return task

    def _done(self, key: str, task: asyncio.Task[_Entry]) -> None:
        if self._reads.get(key) is task:
            del self._reads[key]
        with contextlib.suppress(asyncio.CancelledError):
            if task.exception() is not None:
                return
            entry = task.result()
            current = self._entries.get(key)
            if current is None or current.state_version <= entry.state_version:
                self._entries[key] = entry
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)

    async def _read(self, key: str, snapshot: Snapshot, now: datetime) -> _Entry:
        assert snapshot.customer_id is not None
        sent = time.monotonic()
        async with self.maker() as session:
            plan, catalog = snapshot.plan, snapshot.catalog
            wallet = await wallet_ledger.month_wallet(
                session,
                customer_id=snapshot.customer_id,
                now=now,
                plan_credits=plan is not None and plan.price.credits is not None,
                live_meters=frozenset(
                    name
                    for name, meter in (catalog.meters.items() if catalog else ())
                    if meter.aggregation in LIVE_AGGREGATIONS
                ),
            )
        return _Entry(wallet, snapshot.state_version, wallet_ledger.month_start(now), sent)
