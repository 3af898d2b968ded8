"""What must hold in PostgreSQL after every fault, whatever happened on the way.

`verify(cluster, load, sampler)` asserts, against the tables (not the API's own reports):

  caps        no sample the sampler took showed a pool over its cap (live member seats ≤
              limit + burst extra, live instance weight ≤ limit), nor does the final state
  no double   every seat subject and instance fingerprint the load used has at most one row
  allocation  ever; an acknowledged one has exactly the row it was told about; a refused one
              has none; a row the client never heard of exists only for a request that got no
              answer at all
  whole       each change is all there or not at all: every seat and instance row has its
  writes      audit record and its lifecycle event (and every release/deregistration too),
              every stored Idempotency-Key response names a row that exists and every
              allocation the load made has its stored key; every accepted event id has its
              event row and the counters moved by exactly the accepted events
  events      the load's event ids in `usage_event_ids` are exactly those sent (each once),
              `usage_events` holds each once, and the api_calls counters total Σ count of
              the distinct ids plus the consumed units — lost answers retried with the same
              ids neither lost nor double-counted anything
  audit       GET /v1/audit/verify answers ok

It returns the figures it checked, for the test's report.
"""

from __future__ import annotations

import collections
from typing import Any

import orjson
import psycopg

from tests.faults.cluster import Cluster
from tests.faults.load import SOURCE, Load, Sampler

CONSUME_SOURCE = "allotment:consume"


async def _rows(conn: psycopg.AsyncConnection[Any], sql: str, **params: Any) -> list[Any]:
    cursor = await conn.execute(sql, params)  # type: ignore[arg-type]
    return await cursor.fetchall()


async def verify(cluster: Cluster, load: Load, sampler: Sampler) -> dict[str, Any]:
    ledger = load.ledger
    prefix = load.prefix
    customers = load.write_customers
    assert not ledger.violations, f"{len(ledger.violations)} violations: {ledger.violations[:5]}"
    assert sampler.samples > 0
    assert not sampler.over, f"pools over their cap at sampled instants: {sampler.over[:5]}"
    figures: dict[str, Any] = {}
    async with await psycopg.AsyncConnection.connect(cluster.libpq_url, autocommit=True) as conn:
        # -- caps, now --------------------------------------------------------------------
        now = await _rows(conn, _NOW_LIVE, keys=customers)
        for key, seats, weight in now:
            assert seats <= sampler.seat_cap and weight <= sampler.instance_cap, (
                key,
                seats,
                weight,
            )

        # -- seats: at most one row per subject, the one acknowledged ----------------------
        rows = await _rows(
            conn,
            "SELECT s.subject, c.key, s.id, s.released_at IS NOT NULL FROM seats s "
            "JOIN customers c ON c.id = s.customer_id WHERE s.subject LIKE %(p)s",
            p=f"{prefix}-user-%",
        )
        per_subject = collections.Counter(row[0] for row in rows)
        twice = [s for s, n in per_subject.items() if n > 1]
        assert not twice, f"subjects allocated twice: {twice[:5]}"
        found = {subject: (key, seat_id, released) for subject, key, seat_id, released in rows}
        for subject, (key, seat_id) in ledger.seats.items():
            assert found.get(subject, (None, None, None))[:2] == (key, seat_id), subject
        assert not ledger.seats_refused & found.keys(), "a refused seat was allocated"
        unknown = found.keys() - ledger.seats.keys() - ledger.seats_unanswered
        assert not unknown, f"seats nobody was told about: {sorted(unknown)[:5]}"
        released_rows = {s for s, (_, _, released) in found.items() if released}
        assert ledger.released <= released_rows, "an acknowledged release is not in the table"
        assert released_rows <= ledger.released | ledger.releases_unanswered
        figures["seats"] = {
            "rows": len(rows),
            "acknowledged": len(ledger.seats),
            "refused (409)": len(ledger.seats_refused),
            "released": len(released_rows),
        }

        # -- instances: the same --------------------------------------------------------------
        rows = await _rows(
            conn,
            "SELECT i.fingerprint, c.key, i.id, i.end_reason FROM instances i "
            "JOIN customers c ON c.id = i.customer_id WHERE i.fingerprint LIKE %(p)s",
            p=f"{prefix}-host-%",
        )
        per_fingerprint = collections.Counter(row[0] for row in rows)
        twice = [f for f, n in per_fingerprint.items() if n > 1]
        assert not twice, f"instances registered twice: {twice[:5]}"
        instances = {fp: (key, iid, reason) for fp, key, iid, reason in rows}
        for fingerprint, (key, instance_id) in ledger.instances.items():
            assert instances.get(fingerprint, (None, None, None))[:2] == (key, instance_id)
        assert not ledger.instances_refused & instances.keys(), "a refused instance was made"
        unknown = instances.keys() - ledger.instances.keys() - ledger.instances_unanswered
        assert not unknown, f"instances nobody was told about: {sorted(unknown)[:5]}"
        for fingerprint in ledger.deregistered:
            assert instances[fingerprint][2] == "deregistered", fingerprint
        figures["instances"] = {
            "rows": len(rows),
            "acknowledged": len(ledger.instances),
            "refused (409)": len(ledger.instances_refused),
            "deregistered": len(ledger.deregistered),
        }

        # -- whole writes: audit record + lifecycle event + stored key with every row -----------
        for key in customers:
            counts = (await _rows(conn, _WHOLE, key=key, like=f"{key}/%"))[0]
            (
                seats_made,
                seats_released,
                audit_assigned,
                audit_released,
                events_assigned,
                events_released,
                instances_made,
                instances_ended,
                audit_registered,
                audit_ended,
                events_registered,
                events_ended,
            ) = counts
            assert seats_made == audit_assigned == events_assigned, (key, counts)
            assert seats_released == audit_released == events_released, (key, counts)
            assert instances_made == audit_registered == events_registered, (key, counts)
            assert instances_ended == audit_ended == events_ended, (key, counts)
        stored = await _rows(
            conn,
            "SELECT key, status, body FROM idempotency_keys WHERE key LIKE 'seat:%%' "
            "OR key LIKE 'instance:%%' OR key LIKE %(consume)s",
            consume=f"{prefix}-consume-%",
        )
        seat_ids = {seat_id for _, seat_id, _ in found.values()}
        instance_ids = {iid for _, iid, _ in instances.values()}
        keyed_seats: set[str] = set()
        keyed_instances: set[str] = set()
        keyed_decisions: set[str] = set()
        for idem_key, status, body in stored:
            answer = orjson.loads(bytes(body))
            if idem_key.startswith("seat:"):
                assert status in (200, 201) and answer["id"] in seat_ids, (idem_key, answer)
                keyed_seats.add(answer["id"])
            elif idem_key.startswith("instance:"):
                assert status in (200, 201) and answer["id"] in instance_ids, (idem_key, answer)
                keyed_instances.add(answer["id"])
            else:
                keyed_decisions.add(answer["decision_id"])
        assert keyed_seats == seat_ids, "a seat without its stored Idempotency-Key response"
        assert keyed_instances == instance_ids, "an instance without its stored response"

        # -- events: exactly once -------------------------------------------------------------
        ids = {row[0] for row in await _rows(conn, _IDS, source=SOURCE)}
        sent = set(ledger.events)
        assert ledger.events_acked <= ids, f"{len(ledger.events_acked - ids)} acknowledged ids lost"
        assert ids <= sent, "ids nobody sent"
        stored_events, distinct_events = (await _rows(conn, _EVENTS, source=SOURCE))[0]
        assert stored_events == distinct_events == len(ids), (stored_events, len(ids))
        consumed = {row[0] for row in await _rows(conn, _IDS, source=CONSUME_SOURCE)}
        acknowledged_consumes = {decision for _, decision in ledger.consumed.values()}
        assert acknowledged_consumes <= consumed
        assert consumed <= keyed_decisions, "a consume event without its stored response"
        assert len(consumed) - len(acknowledged_consumes) <= len(ledger.consumes_unanswered)
        value, events = (await _rows(conn, _COUNTERS, keys=customers))[0]
        expected_value = sum(ledger.events[i][1] for i in ids) + len(consumed)
        assert (int(value), int(events)) == (expected_value, len(ids) + len(consumed)), (
            value,
            events,
            expected_value,
        )
        answered = ledger.events_accepted + ledger.events_duplicates
        assert answered == len(ledger.events_acked), (answered, len(ledger.events_acked))
        figures["events"] = {
            "sent": len(sent),
            "acknowledged": len(ledger.events_acked),
            "in the database": len(ids),
            "accepted in answers": ledger.events_accepted,
            "reported duplicate on retry (answer lost, commit kept)": ledger.events_duplicates,
            "api_calls total": int(value),
            "consumed": len(consumed),
        }

    audit = await cluster.audit_verify()
    assert audit["ok"] is True and not audit["problems"], audit
    figures["audit"] = {"ok": audit["ok"], "records_checked": audit["records_checked"]}
    figures["sampler"] = sampler.summary()
    trouble = cluster.trouble()
    assert not trouble, "the workers logged unhandled errors:\n" + "\n".join(trouble)
    return figures


_NOW_LIVE = (
    "SELECT c.key, "
    "(SELECT count(*) FROM seats s WHERE s.customer_id = c.id AND s.type = 'member' "
    " AND s.released_at IS NULL), "
    "(SELECT coalesce(sum(i.weight), 0) FROM instances i WHERE i.customer_id = c.id "
    " AND i.ended_at IS NULL AND i.lease_expires_at > now()) "
    "FROM customers c WHERE c.key = ANY(%(keys)s)"
)

_WHOLE = (
    "WITH c AS (SELECT id FROM customers WHERE key = %(key)s) SELECT "
    "(SELECT count(*) FROM seats WHERE customer_id = (SELECT id FROM c)), "
    "(SELECT count(*) FROM seats WHERE customer_id = (SELECT id FROM c) "
    " AND released_at IS NOT NULL), "
    "(SELECT count(*) FROM audit_log WHERE action = 'seat.assigned' AND target_key LIKE %(like)s), "
    "(SELECT count(*) FROM audit_log WHERE action = 'seat.released' AND target_key LIKE %(like)s), "
    "(SELECT count(*) FROM usage_events WHERE customer_id = (SELECT id FROM c) "
    " AND type = 'allotment.seat.assigned'), "
    "(SELECT count(*) FROM usage_events WHERE customer_id = (SELECT id FROM c) "
    " AND type = 'allotment.seat.released'), "
    "(SELECT count(*) FROM instances WHERE customer_id = (SELECT id FROM c)), "
    "(SELECT count(*) FROM instances WHERE customer_id = (SELECT id FROM c) "
    " AND ended_at IS NOT NULL), "
    "(SELECT count(*) FROM audit_log WHERE action = 'instance.registered' "
    " AND target_key LIKE %(like)s), "
    "(SELECT count(*) FROM audit_log WHERE action IN ('instance.deregistered', "
    " 'instance.expired') AND target_key LIKE %(like)s), "
    "(SELECT count(*) FROM usage_events WHERE customer_id = (SELECT id FROM c) "
    " AND type = 'allotment.instance.registered'), "
    "(SELECT count(*) FROM usage_events WHERE customer_id = (SELECT id FROM c) "
    " AND type IN ('allotment.instance.deregistered', 'allotment.instance.expired'))"
)

_IDS = "SELECT id FROM usage_event_ids WHERE source = %(source)s"
_EVENTS = "SELECT count(*), count(DISTINCT id) FROM usage_events WHERE source = %(source)s"
_COUNTERS = (
    "SELECT coalesce(sum(u.value), 0), coalesce(sum(u.events), 0) FROM usage_counters u "
    "JOIN customers c ON c.id = u.customer_id "
    "WHERE c.key = ANY(%(keys)s) AND u.meter = 'api_calls'"
)
