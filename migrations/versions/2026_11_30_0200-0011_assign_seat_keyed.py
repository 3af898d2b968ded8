"""allotment_assign_seat_keyed(): the named-seat assignment behind an Idempotency-Key.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30

`kit/idempotency.py`'s protocol in one statement, around `allotment_assign_seat`: take the
key's transaction-scoped advisory lock (taken: `in_flight`, the first request still runs);
then, in a statement of its own so it sees whatever the lock's previous holder committed,
look for the stored response (found: `replay` with its status and body, or `reused` when it
answered another request); else assign. The caller stores the response it sends in the same
transaction and commits: the effect and the stored answer become durable together.

The assignment itself moves into `allotment_assign_seat_unaudited` (0010's function without
the audit append, returning the record's `after` instead), and `allotment_assign_seat` keeps
its signature as that plus the append. The keyed function does not append: its caller does,
in the query that stores the answer and commits. The append takes the global chain lock,
held to the commit, and here the commit is a round trip to the worker away: taken in the
first statement, every keyed assignment of every customer would queue behind that trip.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

UNAUDITED = r"""
CREATE FUNCTION allotment_assign_seat_unaudited(
    p_customer text, p_subject text, p_type text, p_tenant text, p_now timestamptz,
    p_contract text, p_revision integer, p_active_version integer,
    p_limit integer, p_extra integer, p_window interval, p_guests integer,
    p_seat_id text, p_burst_id text, p_event_id text
) RETURNS TABLE (
    status text, customer_id bigint, seat_id text, seat_type text, seat_tenant text,
    over_limit boolean, assigned_at timestamptz, held integer, quota integer,
    window_ends_at timestamptz, extra_left integer, after text
) LANGUAGE plpgsql AS $$
DECLARE
    v_customer bigint;
    v_revision integer;
    v_starts timestamptz;
    v_ends timestamptz;
    v_active integer;
    v_members integer;
    v_guests integer;
    v_in_tenant integer;
    v_quotas jsonb;
    v_quota integer;
    v_burst_id text;
    v_window_end timestamptz;
    v_over boolean := false;
    v_extra_left integer;
    v_seat seats%ROWTYPE;
    v_after text;
BEGIN
    -- The pool lock: every allocation of this customer waits here (contracts/pools.py).
    SELECT c.id INTO v_customer FROM customers c WHERE c.key = p_customer FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'no_customer'::text, NULL::bigint, NULL::text, NULL::text,
            NULL::text, NULL::boolean, NULL::timestamptz, NULL::integer, NULL::integer,
            NULL::timestamptz, NULL::integer, NULL::text;
        RETURN;
    END IF;
    -- The time is read once the lock is held (unless the caller fixed it): an assignment
    -- that queued behind a downgrade or a release is judged, and stamped, when it runs.
    IF p_now IS NULL THEN
        p_now := clock_timestamp();
    END IF;
    -- Are the caller's limits still those in force?
    SELECT k.starts_at, k.ends_at INTO v_starts, v_ends FROM contracts k
        WHERE k.id = p_contract AND k.customer_id = v_customer;
    SELECT max(r.revision) INTO v_revision FROM contract_revisions r
        WHERE r.contract_id = p_contract AND r.effective_at <= p_now;
    IF p_active_version IS NOT NULL THEN
        SELECT s.active_version INTO v_active FROM policy_state s WHERE s.id = 1;
    END IF;
    IF v_starts IS NULL OR p_now < v_starts OR (v_ends IS NOT NULL AND p_now >= v_ends)
        OR v_revision IS DISTINCT FROM p_revision
        OR (p_active_version IS NOT NULL AND v_active IS DISTINCT FROM p_active_version)
        OR EXISTS (SELECT 1 FROM contracts k2 WHERE k2.customer_id = v_customer
                   AND k2.id <> p_contract AND k2.starts_at <= p_now
                   AND (k2.ends_at IS NULL OR k2.ends_at > p_now) AND k2.starts_at > v_starts)
    THEN
        RETURN QUERY SELECT 'stale'::text, v_customer, NULL::text, NULL::text, NULL::text,
            NULL::boolean, NULL::timestamptz, NULL::integer, NULL::integer,
            NULL::timestamptz, NULL::integer, NULL::text;
        RETURN;
    END IF;
    SELECT * INTO v_seat FROM seats s
        WHERE s.customer_id = v_customer AND s.subject = p_subject AND s.released_at IS NULL;
    IF FOUND THEN
        RETURN QUERY SELECT 'held'::text, v_customer, v_seat.id, v_seat.type, v_seat.tenant,
            v_seat.over_limit, v_seat.assigned_at, NULL::integer, NULL::integer,
            NULL::timestamptz, NULL::integer, NULL::text;
        RETURN;
    END IF;
    SELECT n.members, n.guests INTO v_members, v_guests FROM seat_counts n
        WHERE n.customer_id = v_customer;
    v_members := coalesce(v_members, 0);
    v_guests := coalesce(v_guests, 0);
    IF p_tenant IS NOT NULL THEN
        SELECT count(*) INTO v_in_tenant FROM seats s
            WHERE s.customer_id = v_customer AND s.tenant = p_tenant AND s.type = p_type
            AND s.released_at IS NULL;
        SELECT t.quotas INTO v_quotas FROM tenants t
            WHERE t.customer_id = v_customer AND t.key = p_tenant;
        IF NOT FOUND THEN
            RETURN QUERY SELECT 'unknown_tenant'::text, v_customer, NULL::text, NULL::text,
                NULL::text, NULL::boolean, NULL::timestamptz, NULL::integer, NULL::integer,
                NULL::timestamptz, NULL::integer, NULL::text;
            RETURN;
        END IF;
        v_quota := (v_quotas ->> 'seats')::integer;
        IF p_type = 'member' AND v_quota IS NOT NULL AND v_in_tenant + 1 > v_quota THEN
            RETURN QUERY SELECT 'tenant_full'::text, v_customer, NULL::text, NULL::text,
                NULL::text, NULL::boolean, NULL::timestamptz, v_in_tenant, v_quota,
                NULL::timestamptz, NULL::integer, NULL::text;
            RETURN;
        END IF;
    END IF;
    IF p_type = 'guest' THEN
        IF v_guests >= p_guests THEN
            RETURN QUERY SELECT 'guests_full'::text, v_customer, NULL::text, NULL::text,
                NULL::text, NULL::boolean, NULL::timestamptz, v_guests, p_guests,
                NULL::timestamptz, NULL::integer, NULL::text;
            RETURN;
        END IF;
    ELSE
        SELECT b.id, b.window_ends_at INTO v_burst_id, v_window_end FROM seat_bursts b
            WHERE b.customer_id = v_customer AND b.ended_at IS NULL;
        IF v_members < p_limit THEN
            IF v_burst_id IS NOT NULL THEN  -- back under the limit: the episode is over
                UPDATE seat_bursts SET ended_at = p_now WHERE id = v_burst_id;
            END IF;
            v_window_end := NULL;
        ELSIF p_extra = 0 OR p_window IS NULL OR v_members >= p_limit + p_extra THEN
            RETURN QUERY SELECT 'full'::text, v_customer, NULL::text, NULL::text,
                NULL::text, NULL::boolean, NULL::timestamptz, v_members, p_limit,
                v_window_end, NULL::integer, NULL::text;
            RETURN;
        ELSIF v_burst_id IS NULL THEN
            v_window_end := p_now + p_window;
            INSERT INTO seat_bursts (id, customer_id, "limit", extra, started_at, window_ends_at)
                VALUES (p_burst_id, v_customer, p_limit, p_extra, p_now, v_window_end);
            v_over := true;
        ELSIF p_now >= v_window_end THEN
            RETURN QUERY SELECT 'burst_closed'::text, v_customer, NULL::text, NULL::text,
                NULL::text, NULL::boolean, NULL::timestamptz, v_members, p_limit,
                v_window_end, NULL::integer, NULL::text;
            RETURN;
        ELSE
            v_over := true;
        END IF;
        IF v_over THEN
            v_extra_left := p_limit + p_extra - v_members - 1;
        END IF;
    END IF;
    INSERT INTO seats (id, customer_id, subject, type, tenant, over_limit, assigned_at)
        VALUES (p_seat_id, v_customer, p_subject, p_type, p_tenant, v_over, p_now);
    UPDATE customers SET state_version = state_version + 1 WHERE id = v_customer;
    -- The seat as seats/service.py's _audit_view has it, in canonical JSON.
    v_after := '{"id":' || allotment_json(p_seat_id)
        || ',"over_limit":' || CASE WHEN v_over THEN 'true' ELSE 'false' END
        || ',"released_at":null'
        || ',"since":' || allotment_json(allotment_isoformat(p_now))
        || ',"subject":' || allotment_json(p_subject)
        || ',"tenant":' || allotment_json(p_tenant)
        || ',"type":' || allotment_json(p_type) || '}';
    -- The lifecycle event (usage/lifecycle.py), claimed exactly once like any event.
    INSERT INTO usage_event_ids (source, id, customer_id, time, received_at)
        VALUES ('allotment', p_event_id, v_customer, p_now, p_now);
    INSERT INTO usage_events (customer_id, tenant, type, source, id, time, data, received_at)
        VALUES (v_customer, NULL, 'allotment.seat.assigned', 'allotment', p_event_id, p_now,
                v_after::jsonb, p_now);
    RETURN QUERY SELECT 'created'::text, v_customer, p_seat_id, p_type, p_tenant, v_over,
        p_now, NULL::integer, NULL::integer,
        CASE WHEN v_over THEN v_window_end END, v_extra_left, v_after;
END;
$$;
"""

AUDITED = r"""
CREATE OR REPLACE FUNCTION allotment_assign_seat(
    p_customer text, p_subject text, p_type text, p_tenant text, p_now timestamptz,
    p_contract text, p_revision integer, p_active_version integer,
    p_limit integer, p_extra integer, p_window interval, p_guests integer,
    p_seat_id text, p_burst_id text, p_actor text, p_request_id text, p_event_id text
) RETURNS TABLE (
    status text, customer_id bigint, seat_id text, seat_type text, seat_tenant text,
    over_limit boolean, assigned_at timestamptz, held integer, quota integer,
    window_ends_at timestamptz, extra_left integer
) LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    SELECT * INTO r FROM allotment_assign_seat_unaudited(
        p_customer, p_subject, p_type, p_tenant, p_now, p_contract, p_revision,
        p_active_version, p_limit, p_extra, p_window, p_guests, p_seat_id, p_burst_id,
        p_event_id);
    IF r.status = 'created' THEN
        -- Last: the chain lock is then held only for the append and the commit.
        PERFORM allotment_audit_append(p_actor, 'seat.assigned', 'seat',
                                       p_customer || '/' || p_subject, r.after, p_request_id);
    END IF;
    RETURN QUERY SELECT r.status, r.customer_id, r.seat_id, r.seat_type, r.seat_tenant,
        r.over_limit, r.assigned_at, r.held, r.quota, r.window_ends_at, r.extra_left;
END;
$$;
"""

KEYED = r"""
CREATE FUNCTION allotment_assign_seat_keyed(
    p_principal text, p_key text, p_request_hash text,
    p_customer text, p_subject text, p_type text, p_tenant text, p_now timestamptz,
    p_contract text, p_revision integer, p_active_version integer,
    p_limit integer, p_extra integer, p_window interval, p_guests integer,
    p_seat_id text, p_burst_id text, p_event_id text
) RETURNS TABLE (
    status text, customer_id bigint, seat_id text, seat_type text, seat_tenant text,
    over_limit boolean, assigned_at timestamptz, held integer, quota integer,
    window_ends_at timestamptz, extra_left integer, after text, stored_status smallint,
    stored_body bytea
) LANGUAGE plpgsql AS $$
DECLARE
    v_hash text;
    v_status smallint;
    v_body bytea;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtextextended('idem:' || p_principal || ':' || p_key, 7))
    THEN
        RETURN QUERY SELECT 'in_flight'::text, NULL::bigint, NULL::text, NULL::text,
            NULL::text, NULL::boolean, NULL::timestamptz, NULL::integer, NULL::integer,
            NULL::timestamptz, NULL::integer, NULL::text, NULL::smallint, NULL::bytea;
        RETURN;
    END IF;
    SELECT k.request_hash, k.status, k.body INTO v_hash, v_status, v_body
        FROM idempotency_keys k
        WHERE k.principal = p_principal AND k.key = p_key AND k.expires_at > now();
    IF FOUND THEN
        RETURN QUERY SELECT CASE WHEN v_hash = p_request_hash THEN 'replay' ELSE 'reused' END,
            NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::boolean,
            NULL::timestamptz, NULL::integer, NULL::integer, NULL::timestamptz,
            NULL::integer, NULL::text, v_status, v_body;
        RETURN;
    END IF;
    RETURN QUERY SELECT a.*, NULL::smallint, NULL::bytea FROM allotment_assign_seat_unaudited(
        p_customer, p_subject, p_type, p_tenant, p_now, p_contract, p_revision,
        p_active_version, p_limit, p_extra, p_window, p_guests, p_seat_id, p_burst_id,
        p_event_id) AS a;
END;
$$;
"""


def upgrade() -> None:
    op.execute(_as_text(UNAUDITED))
    op.execute(AUDITED)
    op.execute(KEYED)


def _as_text(sql: str) -> str:
    """SQLAlchemy's text() would read the JSON's `:null` as a bind parameter."""
    return sql.replace(":null", "\\:null")


def downgrade() -> None:
    spec = importlib.util.spec_from_file_location(
        "revision_0010",
        Path(__file__).with_name("2026_11_30_0100-0010_seat_assignment_one_statement.py"),
    )
    assert spec is not None and spec.loader is not None
    previous = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(previous)
    op.execute(
        "DROP FUNCTION allotment_assign_seat_keyed(text, text, text, text, text, text, text, "
        "timestamptz, text, integer, integer, integer, integer, interval, integer, text, text, "
        "text)"
    )
    op.execute(f"DROP FUNCTION {previous.NEW_SIGNATURE}")
    op.execute(_as_text(previous.FUNCTION))
    op.execute(
        "DROP FUNCTION allotment_assign_seat_unaudited(text, text, text, text, timestamptz, "
        "text, integer, integer, integer, integer, interval, integer, text, text, text)"
    )
