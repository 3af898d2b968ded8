"""Deciding checks: snapshot → evaluator → decision document, with logging and metrics.

`Checker` lives on `app.state.checker` (one per worker). Its warm path does no I/O: an L1
snapshot, the pure evaluator, one orjson encode. Meter use (check/meter_use.py) is read for a
feature with a meter, or with a rule that reads `usage` (docs/policy.md, "Rules and CEL");
a credit wallet (check/credit_use.py) for a metered feature when the plan enforces credits.
Misses go through the SnapshotCache; an outage with nothing cached falls back to each
feature's `on_outage` (deny by default).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy.exc import DBAPIError

from allotment.billing.credit_balance import MonthWallet
from allotment.check import credit_use, evaluator, gates
from allotment.check import credits as credit_gate
from allotment.check.activation import reads
from allotment.check.credit_use import WalletCache
from allotment.check.decisions import DecisionLog
from allotment.check.meter_use import UsageCache
from allotment.check.metrics import CHECK_LATENCY, DECISIONS
from allotment.check.snapshot import SnapshotCache, StoreUnavailable
from allotment.check.values import CheckRequest, Snapshot, Usage, Verdict
from allotment.kit.clock import isoformat, utcnow
from allotment.kit.ids import new_id, new_ids
from allotment.policy.catalog import Catalog, Feature
from allotment.policy.money import format_amount

# The `endpoint` label of allotment_check_seconds: the routes that decide through a Checker.
# OFREP (allotment/ofrep) decides with the very same methods, and is told apart only here.
ENDPOINTS = ("check", "batch", "ofrep", "ofrep_bulk")


class Checker:
    def __init__(
        self,
        *,
        snapshots: SnapshotCache,
        decisions: DecisionLog,
        usage: UsageCache | None = None,
        warn_at: tuple[Decimal, ...] = gates.WARN_AT,
        wallets: WalletCache | None = None,
    ) -> None:
        self.snapshots = snapshots
        self.decisions = decisions
        self.usage = usage
        self.wallets = wallets
        self.warn_at = warn_at
        self.gates = evaluator.gates_warning_at(warn_at)  # what every check of this one runs
        self.customer_gates = evaluator.gates_warning_at(warn_at, evaluator.CUSTOMER_GATES)
        self._last_catalog: tuple[int | None, Catalog] | None = None
        self._latency = {name: CHECK_LATENCY.labels(name) for name in ENDPOINTS}
        self._counters: dict[tuple[bool, str], Any] = {}

    def cache_ttl_s(self) -> int:
        bus = self.snapshots.bus
        return int(self.snapshots.ttl_s if bus.connected else self.snapshots.ttl_bus_down_s)

    async def snapshot(self, customer: str, now: datetime) -> tuple[Snapshot | None, bool]:
        snapshot = self.snapshots.peek(customer, now)
        if snapshot is not None:
            # While PostgreSQL is known to be down, even a fresh entry is flagged stale.
            return snapshot, self.snapshots.store_down_at is not None
        try:
            snapshot, stale = await self.snapshots.get(customer, now)
        except StoreUnavailable:
            return None, True
        if snapshot.catalog is not None:
            self._last_catalog = (snapshot.policy_version, snapshot.catalog)
        return snapshot, stale

    def _outage(self, request: CheckRequest) -> tuple[Verdict, int | None]:
        """Nothing cached and the store is down: the feature's `on_outage` decides, from
        the last catalog this worker saw; unknown features and no catalog at all deny."""
        if self._last_catalog is not None:
            version, catalog = self._last_catalog
            feature = catalog.features.get(request.feature)
            if feature is not None and feature.on_outage == "allow":
                return Verdict(True, "outage_default", detail="served by on_outage: allow"), version
            return Verdict(False, "outage_default", detail="the store is unavailable"), version
        return Verdict(False, "outage_default", detail="the store is unavailable"), None

    def _count(self, allowed: bool, reason: str, n: int) -> None:
        counter = self._counters.get((allowed, reason))
        if counter is None:
            counter = self._counters[(allowed, reason)] = DECISIONS.labels(
                str(allowed).lower(), reason
            )
        counter.inc(n)

    def document(
        self,
        request: CheckRequest,
        verdict: Verdict,
        snapshot: Snapshot | None,
        stale: bool,
        now: datetime,
        policy_version: int | None = None,
        decision_id: str | None = None,
        feature: str | None = None,
        counted: bool = True,
    ) -> dict[str, Any]:
        """The decision document for `request` (for `feature` in its stead, in a batch; a
        batch counts its decisions in `allotment_decisions_total` itself, once per reason)."""
        decision_id = decision_id or new_id("dec")
        feature = request.feature if feature is None else feature
        contract = snapshot.contract if snapshot is not None else None
        if snapshot is not None:
            policy_version = snapshot.policy_version
        document: dict[str, Any] = {
            "allowed": verdict.allowed,
            "reason": verdict.reason,
            "feature": feature,
            "customer": request.customer,
            "warnings": list(verdict.warnings),
            "policy_version": policy_version,
            "contract_revision": contract.revision if contract else None,
            "decision_id": decision_id,
            "stale": stale,
            "cache_ttl_s": self.cache_ttl_s(),
        }
        if verdict.detail is not None:
            document["detail"] = verdict.detail
        if verdict.missing:
            document["missing"] = list(verdict.missing)
        if verdict.rule_reason is not None:
            document["rule_reason"] = verdict.rule_reason
        if verdict.limit is not None:
            document["limit"] = dict(verdict.limit)
        if counted:
            self._count(verdict.allowed, verdict.reason, 1)
        self._log(request, document, now)
        return document

    def _log(self, request: CheckRequest, document: dict[str, Any], now: datetime) -> None:
        """The decision log's record of `document` (every denial, a sample of allows)."""
        allowed = document["allowed"]
        if self.decisions.wants(allowed):
            self.decisions.record(
                {
                    "id": document["decision_id"],
                    "at": now,
                    "customer": request.customer,
                    "feature": document["feature"],
                    "subject": request.subject,
                    "instance": request.instance,
                    "tenant": request.tenant,
                    "allowed": allowed,
                    "reason": document["reason"],
                    "detail": document.get("rule_reason") or document.get("detail"),
                    "policy_version": document["policy_version"],
                    "contract_revision": document["contract_revision"],
                    "stale": document["stale"],
                }
            )

    def observe(self, endpoint: str, seconds: float) -> None:
        """Time spent deciding a call of `endpoint` (one of ENDPOINTS)."""
        self._latency[endpoint].observe(seconds)

    async def check(self, request: CheckRequest) -> bytes:
        started = time.perf_counter()
        body = orjson.dumps(await self.decision(request))
        self._latency["check"].observe(time.perf_counter() - started)
        return body

    async def decision(self, request: CheckRequest) -> dict[str, Any]:
        """The decision document of one check (logged and counted); `check` encodes it, the
        OFREP routes map it to a flag evaluation (allotment/ofrep/mapping.py)."""
        now = utcnow()
        snapshot, stale = await self.snapshot(request.customer, now)
        if snapshot is None:
            verdict, version = self._outage(request)
            return self.document(request, verdict, None, True, now, version)
        if self.usage is not None and _metered(snapshot, (request.feature,)):
            usage, unavailable = await self._usage(snapshot, now)
            request = replace(request, usage=usage, usage_unavailable=unavailable)
            stale = stale or unavailable
            if self.wallets is not None and credit_use.needs(snapshot):
                request = replace(request, wallet=await self.wallets.get(snapshot, now))
        verdict = evaluator.evaluate(snapshot, request, now, gates=self.gates)
        return self.document(request, verdict, snapshot, stale, now)

    async def batch(self, base: CheckRequest, features: Sequence[str]) -> bytes:
        started = time.perf_counter()
        now = utcnow()
        snapshot, stale = await self.snapshot(base.customer, now)
        decisions = await self.decisions_of(base, features, snapshot, stale, now)
        body = orjson.dumps({"decisions": decisions})
        self._latency["batch"].observe(time.perf_counter() - started)
        return body

    async def decisions_of(
        self,
        base: CheckRequest,
        features: Sequence[str],
        snapshot: Snapshot | None,
        stale: bool,
        now: datetime,
    ) -> list[dict[str, Any]]:
        """A decision document for each of `features`, all from `snapshot` (None: the store
        is down and nothing is cached, so each feature's `on_outage` decides)."""
        if snapshot is not None and self.usage is not None and _metered(snapshot, features):
            usage, unavailable = await self._usage(snapshot, now)
            base = replace(base, usage=usage, usage_unavailable=unavailable)
            stale = stale or unavailable
            if self.wallets is not None and credit_use.needs(snapshot):
                base = replace(base, wallet=await self.wallets.get(snapshot, now))
        ids = new_ids("dec", len(features))
        if snapshot is None:
            decisions = []
            for name, decision_id in zip(features, ids, strict=True):
                verdict, version = self._outage(replace(base, feature=name))
                decisions.append(
                    self.document(base, verdict, None, True, now, version, decision_id, name)
                )
            return decisions
        verdicts = evaluator.evaluate_many(snapshot, features, base, now, gates=self.gates)
        # One increment per reason, not per decision (each takes the metric's lock).
        tally: dict[tuple[bool, str], int] = {}
        for verdict in verdicts:
            key = (verdict.allowed, verdict.reason)
            tally[key] = tally.get(key, 0) + 1
        for (allowed, reason), n in tally.items():
            self._count(allowed, reason, n)
        # A feature named twice is decided twice with the same verdict (evaluate_many reuses
        # it); its document is the first one's with its own decision_id, copied, not rebuilt.
        documents: list[dict[str, Any]] = []
        first: dict[str, dict[str, Any]] = {}
        for name, verdict, decision_id in zip(features, verdicts, ids, strict=True):
            earlier = first.get(name)
            if earlier is None:
                document = self.document(
                    base, verdict, snapshot, stale, now, None, decision_id, name, False
                )
                first[name] = document
            else:
                document = self._again(earlier, base, decision_id, now)
            documents.append(document)
        return documents

    def _again(
        self, earlier: dict[str, Any], request: CheckRequest, decision_id: str, now: datetime
    ) -> dict[str, Any]:
        """The document of a feature a batch names again: `earlier`'s, with its own id (and
        its own decision-log record, as every decision has)."""
        document = {**earlier, "decision_id": decision_id, "warnings": list(earlier["warnings"])}
        if "limit" in earlier:
            document["limit"] = dict(earlier["limit"])
        if "missing" in earlier:
            document["missing"] = list(earlier["missing"])
        self._log(request, document, now)
        return document

    async def limits_of(
        self, snapshot: Snapshot, now: datetime, usage: Usage | None = None
    ) -> dict[str, Any]:
        """The limits in force and what is held of them: seats, instances, each meter (the
        `limits` of the entitlements document). `usage`: the meter use already read for
        this answer, if any (else it is read here, when a meter has a limit)."""
        return {
            "seats": _seats_held(snapshot, now),
            "instances": _instances_held(snapshot, now),
            "meters": await self._meters_held(snapshot, now, usage),
        }

    async def _usage(self, snapshot: Snapshot, now: datetime) -> tuple[Usage | None, bool]:
        """(the customer's use, whether PostgreSQL failed to give it). While PostgreSQL is
        down the last use this worker read stands in, and the answers are flagged stale;
        with none, a hard limit denies (gates.meter), so an outage never lifts a limit."""
        assert self.usage is not None
        try:
            return await self.usage.get(snapshot, now), False
        except (DBAPIError, OSError, TimeoutError):
            return self.usage.last_known(snapshot.customer), True

    async def _meters_held(
        self, snapshot: Snapshot, now: datetime, usage: Usage | None = None
    ) -> dict[str, Any]:
        """Each meter with a limit in force: the limit, its use this period, warnings."""
        catalog = snapshot.catalog
        if catalog is None or snapshot.contract is None:
            return {}
        limited = {
            name: limit
            for name in sorted(catalog.meters)
            if (limit := gates.meter_limit(snapshot, name, now)) is not None
        }
        if usage is None and limited and self.usage is not None:
            usage, _ = await self._usage(snapshot, now)
        found: dict[str, Any] = {}
        for name, limit in limited.items():
            verdict = gates.meter_state(snapshot, name, now, usage=usage, warn_at=self.warn_at)
            document = dict(verdict.limit) if verdict is not None and verdict.limit else {}
            document["period"] = limit.period
            document["warnings"] = list(verdict.warnings) if verdict is not None else []
            document["exhausted"] = verdict is not None and not verdict.allowed
            found[name] = document
        return found

    async def entitlements(self, customer: str, now: datetime | None = None) -> dict[str, Any]:
        document, _ = await self.entitlements_of(customer, now or utcnow())
        return document

    async def entitlements_of(
        self, customer: str, now: datetime
    ) -> tuple[dict[str, Any], Snapshot]:
        """The entitlements document at `now`, and the snapshot it was decided from (the
        signed artifact adds its versions and binds its holdings: artifacts/service.py).

        Each feature is decided as a check naming no subject, instance, tenant or context
        decides it, except that the seat and instance gates, which need one, are not run:
        such a feature says what it needs instead. The meter and credits gates are run, on
        the meter use and the wallet read once for the whole document from the caches the
        checks read (check/meter_use.py, check/credit_use.py): never a query per feature."""
        snapshot, stale = await self.snapshot(customer, now)
        if snapshot is None:
            raise StoreUnavailable("the store is unavailable and nothing is cached")
        catalog = snapshot.catalog
        names = sorted(catalog.features) if catalog else []
        wallet = None
        if self.wallets is not None and snapshot.contract is not None:
            wallet = await self.wallets.get(snapshot, now)
        usage, unavailable = None, False
        if self.usage is not None and _reads_use(snapshot, names, wallet, now):
            usage, unavailable = await self._usage(snapshot, now)
            stale = stale or unavailable
        base = CheckRequest(
            customer=customer, feature="", usage=usage, usage_unavailable=unavailable, wallet=wallet
        )
        verdicts = (
            evaluator.evaluate_many(snapshot, names, base, now, gates=self.customer_gates)
            if names
            else []
        )
        contract = snapshot.contract
        document: dict[str, Any] = {
            "customer": customer,
            "known": snapshot.known,
            "policy_version": snapshot.policy_version,
            "stale": stale,
            "computed_at": isoformat(now),
            "contract": None
            if contract is None
            else {
                "id": contract.id,
                "revision": contract.revision,
                "plan": contract.plan,
                "kind": contract.kind,
                "starts_at": isoformat(contract.starts_at),
                "ends_at": None if contract.ends_at is None else isoformat(contract.ends_at),
                "renews_at": None if contract.ends_at is None else isoformat(contract.ends_at),
                "attributes": dict(contract.attributes),
                "addons": sorted(contract.addons),
                "addon_quantities": dict(contract.addon_quantities),
                "quantities": None if contract.quantities is None else dict(contract.quantities),
            },
            "features": [
                {
                    "feature": name,
                    "allowed": verdict.allowed,
                    "reason": verdict.reason,
                    **({"missing": list(verdict.missing)} if verdict.missing else {}),
                    **({"rule_reason": verdict.rule_reason} if verdict.rule_reason else {}),
                    **(_needs(catalog.features[name]) if catalog else {}),
                }
                for name, verdict in zip(names, verdicts, strict=True)
            ],
            "limits": await self.limits_of(snapshot, now, usage),
            "credits": self._credits_held(wallet, usage, now),
        }
        return document, snapshot

    def _credits_held(
        self, wallet: MonthWallet | None, usage: Usage | None, now: datetime
    ) -> dict[str, Any] | None:
        """The credit wallet's balance at `now` (docs/billing.md, "Credit wallets") with the
        meter use read for the document; None without a wallet."""
        if wallet is None:
            return None
        left = credit_gate.wallet_balance(wallet, usage, now)
        return {
            "balance": format_amount(left),
            "currency": wallet.currency,
            "enforce": wallet.enforce,
            "exhausted": left <= 0,
            "applies_to": list(wallet.applies_to),
        }


def _needs(feature: Feature) -> dict[str, Any]:
    """What a use of the feature needs beyond entitlement: a seat, an instance, its meter's
    room, the features it requires."""
    needs: dict[str, Any] = {}
    if feature.seat_required:
        needs["seat_required"] = True
        needs["guests"] = feature.guests
    if feature.instance_required:
        needs["instance_required"] = True
    if feature.meter is not None:
        needs["meter"] = feature.meter
    if feature.requires:
        needs["requires"] = sorted(feature.requires)
    return needs


def _seats_held(snapshot: Snapshot, now: datetime) -> dict[str, Any] | None:
    """The seat pool in force, with what is held of it at `now`."""
    contract = snapshot.contract
    pool = contract.seats if contract is not None else None
    if pool is None:
        return None
    holdings = snapshot.holdings
    concurrent = pool.model == "concurrent"
    held = holdings.live_sessions(now) if concurrent else len(holdings.members)
    tenants = {}
    for key, quotas in sorted(holdings.tenants.items()):
        if quotas.seats is None:
            continue
        in_tenant = (
            holdings.live_sessions(now, key)
            if concurrent
            else sum(1 for t in holdings.members.values() if t == key)
        )
        tenants[key] = {"quota": quotas.seats, "held": in_tenant}
    return {
        "model": pool.model,
        "limit": pool.limit,
        "held": held,
        "available": max(0, pool.limit - held),
        "over_limit": max(0, held - pool.limit),
        "burst": None
        if pool.burst_window is None
        else {"extra": pool.burst_extra, "window_s": int(pool.burst_window.total_seconds())},
        "guests": {"limit": pool.guests, "held": len(holdings.guests)},
        "tenants": tenants,
    }


def _instances_held(snapshot: Snapshot, now: datetime) -> dict[str, Any] | None:
    contract = snapshot.contract
    pool = contract.instances if contract is not None else None
    if pool is None:
        return None
    holdings = snapshot.holdings
    count, weight = holdings.instance_weight(now)
    tenants = {}
    for key, quotas in sorted(holdings.tenants.items()):
        if quotas.instances is not None:
            tenants[key] = {
                "quota": quotas.instances,
                "held": holdings.instance_weight(now, key)[1],
            }
    return {
        "limit": pool.limit,
        "held": weight,
        "count": count,
        "available": max(0, pool.limit - weight),
        "kinds": dict(pool.kinds),
        "lease_ttl_s": int(pool.lease_ttl.total_seconds()),
        "tenants": tenants,
    }


def _reads_use(
    snapshot: Snapshot, features: Sequence[str], wallet: MonthWallet | None, now: datetime
) -> bool:
    """Whether the entitlements document needs meter use: for a metered feature (or a rule
    reading `usage`), a meter's limit in `limits`, or the wallet's balance."""
    catalog = snapshot.catalog
    if catalog is None or snapshot.contract is None or snapshot.customer_id is None:
        return False
    if wallet is not None and wallet.meters:
        return True
    return _metered(snapshot, features) or any(
        gates.meter_limit(snapshot, name, now) is not None for name in catalog.meters
    )


def _metered(snapshot: Snapshot, features: Sequence[str]) -> bool:
    catalog = snapshot.catalog
    if catalog is None or snapshot.customer_id is None:
        return False
    for name in features:
        feature = catalog.features.get(name)
        if feature is not None and feature.meter is not None:
            return True
        rules = catalog.rules_for(name)
        if rules and reads(rules, "usage"):  # a rule reading `usage` sees it as meters do
            return True
    return False
