"""One definition of each seat-assignment rule, and less work for the database per assignment.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03

* `allotment_idempotency_lock(principal, key)`: the Idempotency-Key's advisory lock, defined
  once. kit/idempotency.py takes it through this function, and so does
  `allotment_assign_seat_keyed` (replaced here, same signature and answers), so the two
  can never lock different keys for the same request.
* `allotment_assign_seat` is the one implementation of the named-seat rules (held, limit,
  burst, guests, tenant quotas): both the fast path and the general path (seats/direct.py)
  call it; Python keeps no copy of them. New here: a NULL `p_limit` says the plan's seats are
  concurrent, so a member seat is refused with `wrong_model` (after the held check, as before).
  It replaces 0010's pair: the audit append is skipped when `p_actor` is NULL (the keyed
  path appends the record itself, with its COMMIT), and the record's `after` is returned.
* Less work per assignment (docs/performance.md, "Seat assignments"): the helpers
  `allotment_json` / `allotment_isoformat` are STABLE, as `to_json` and `to_char` are, so the
  planner inlines them (declared IMMUTABLE over STABLE bodies they were run as SQL functions,
  their bodies parsed and planned again in every transaction, eleven times per assignment);
  the staleness check is one query instead of four; the held seat, the counts and the open
  burst one instead of three; the tenant's quota and count one instead of two; the lifecycle
  event's two inserts one statement; the answer is built in variables, not by a query; and
  one PL/pgSQL function instead of two nested ones.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

ASSIGN_SIGNATURE = (
    "allotment_assign_seat(text, text, text, text, timestamptz, text, integer, integer, "
    "integer, integer, interval, integer, text, text, text, text, text)"
)
UNAUDITED_SIGNATURE = (
    "allotment_assign_seat_unaudited(text, text, text, text, timestamptz, text, integer, "
    "integer, integer, integer, interval, integer, text, text, text)"
)

LOCK = r"""
-- The advisory lock an Idempotency-Key holds until its transaction ends; false when another
-- transaction holds it (that request is still in flight).
CREATE FUNCTION allotment_idempotency_lock(p_principal text, p_key text) RETURNS boolean
    LANGUAGE sql VOLATILE AS $$
    SELECT pg_try_advisory_xact_lock(hashtextextended('idem:' || p_principal || ':' || p_key, 7))
$$;
"""

HELPERS = r"""
CREATE OR REPLACE FUNCTION allotment_json(v text) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT coalesce(to_json(v)::text, 'null') $$;

CREATE OR REPLACE FUNCTION allotment_isoformat(v timestamptz) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE AS
    $$ SELECT to_char(v AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') $$;
"""

ASSIGN = r"""
CREATE FUNCTION allotment_assign_seat(
    p_customer text, p_subject text, p_type text, p_tenant text, p_now timestamptz,
    p_contract text, p_revision integer, p_active_version integer,
    p_limit integer, p_extra integer, p_window interval, p_guests integer,
    p_seat_id text, p_burst_id text, p_actor text, p_request_id text, p_event_id text
) RETURNS TABLE (
    status text, customer_id bigint, seat_id text, seat_type text, seat_tenant text,
    over_limit boolean, assigned_at timestamptz, held integer, quota integer,
    window_ends_at timestamptz, extra_left integer, after text
) LANGUAGE plpgsql AS $$
DECLARE
    v_customer bigint;
    v_stale boolean;
    v_held_id text;
    v_held_type text;
    v_held_tenant text;
    v_held_over boolean;
    v_held_at timestamptz;
    v_members integer;
    v_guests integer;
    v_in_tenant integer;
    v_quota integer;
    v_burst_id text;
    v_window_end timestamptz;
    v_over boolean := false;
BEGIN
    -- The pool lock: every allocation of this customer waits here (contracts/pools.py).
    SELECT c.id INTO v_customer FROM customers c WHERE c.key = p_customer FOR UPDATE;
    IF NOT FOUND THEN
        status := 'no_customer';
        RETURN NEXT;
        RETURN;
    END IF;
    customer_id := v_customer;
    -- The time is read once the lock is held (unless the caller fixed it): an assignment
    -- that queued behind a downgrade or a release is judged, and stamped, when it runs.
    p_now := coalesce(p_now, clock_timestamp());
    -- Are the caller's limits still those in force? (No contract row: stale too.)
    SELECT p_now < k.starts_at OR (k.ends_at IS NOT NULL AND p_now >= k.ends_at)
           OR (SELECT max(r.revision) FROM contract_revisions r
               WHERE r.contract_id = k.id AND r.effective_at <= p_now) IS DISTINCT FROM p_revision
           OR (p_active_version IS NOT NULL AND (SELECT s.active_version FROM policy_state s
                                                 WHERE s.id = 1) IS DISTINCT FROM p_active_version)
           OR EXISTS (SELECT 1 FROM contracts k2 WHERE k2.customer_id = v_customer
                      AND k2.id <> k.id AND k2.starts_at <= p_now
                      AND (k2.ends_at IS NULL OR k2.ends_at > p_now) AND k2.starts_at > k.starts_at)
        INTO v_stale FROM contracts k WHERE k.id = p_contract AND k.customer_id = v_customer;
    IF v_stale IS DISTINCT FROM false THEN
        status := 'stale';
        RETURN NEXT;
        RETURN;
    END IF;
    -- The subject's live seat, the live counts (seat_counts, kept by a trigger: 0010) and
    -- the open burst episode, in one read.
    SELECT s.id, s.type, s.tenant, s.over_limit, s.assigned_at,
           coalesce(n.members, 0), coalesce(n.guests, 0), b.id, b.window_ends_at
        INTO v_held_id, v_held_type, v_held_tenant, v_held_over, v_held_at,
             v_members, v_guests, v_burst_id, v_window_end
        FROM (SELECT 1) AS one
        LEFT JOIN seats s ON s.customer_id = v_customer AND s.subject = p_subject
                         AND s.released_at IS NULL
        LEFT JOIN seat_counts n ON n.customer_id = v_customer
        LEFT JOIN seat_bursts b ON b.customer_id = v_customer AND b.ended_at IS NULL;
    IF v_held_id IS NOT NULL THEN
        status := 'held';
        seat_id := v_held_id; seat_type := v_held_type; seat_tenant := v_held_tenant;
        over_limit := v_held_over; assigned_at := v_held_at;
        RETURN NEXT;
        RETURN;
    END IF;
    -- No member limit: the plan's seats are concurrent (sessions), guests only here.
    IF p_type = 'member' AND p_limit IS NULL THEN
        status := 'wrong_model';
        RETURN NEXT;
        RETURN;
    END IF;
    IF p_tenant IS NOT NULL THEN
        SELECT (t.quotas ->> 'seats')::integer,
               (SELECT count(*) FROM seats s WHERE s.customer_id = v_customer
                AND s.tenant = p_tenant AND s.type = p_type AND s.released_at IS NULL)
            INTO v_quota, v_in_tenant FROM tenants t
            WHERE t.customer_id = v_customer AND t.key = p_tenant;
        IF NOT FOUND THEN
            status := 'unknown_tenant';
            RETURN NEXT;
            RETURN;
        END IF;
        IF p_type = 'member' AND v_in_tenant + 1 > v_quota THEN
            status := 'tenant_full'; held := v_in_tenant; quota := v_quota;
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;
    IF p_type = 'guest' THEN
        IF v_guests >= p_guests THEN
            status := 'guests_full'; held := v_guests; quota := p_guests;
            RETURN NEXT;
            RETURN;
        END IF;
    ELSIF v_members < p_limit THEN
        IF v_burst_id IS NOT NULL THEN  -- back under the limit: the episode is over
            UPDATE seat_bursts SET ended_at = p_now WHERE id = v_burst_id;
        END IF;
    ELSIF p_extra = 0 OR p_window IS NULL OR v_members >= p_limit + p_extra THEN
        status := 'full'; held := v_members; quota := p_limit; window_ends_at := v_window_end;
        RETURN NEXT;
        RETURN;
    ELSIF v_burst_id IS NULL THEN
        v_window_end := p_now + p_window;
        INSERT INTO seat_bursts (id, customer_id, "limit", extra, started_at, window_ends_at)
            VALUES (p_burst_id, v_customer, p_limit, p_extra, p_now, v_window_end);
        v_over := true;
    ELSIF p_now >= v_window_end THEN
        status := 'burst_closed'; held := v_members; quota := p_limit;
        window_ends_at := v_window_end;
        RETURN NEXT;
        RETURN;
    ELSE
        v_over := true;
    END IF;
    INSERT INTO seats (id, customer_id, subject, type, tenant, over_limit, assigned_at)
        VALUES (p_seat_id, v_customer, p_subject, p_type, p_tenant, v_over, p_now);
    UPDATE customers SET state_version = state_version + 1 WHERE id = v_customer;
    -- The seat as seats/service.py's _audit_view has it, in canonical JSON.
    after := '{"id":' || allotment_json(p_seat_id)
        || ',"over_limit":' || CASE WHEN v_over THEN 'true' ELSE 'false' END
        || ',"released_at":null'
        || ',"since":' || allotment_json(allotment_isoformat(p_now))
        || ',"subject":' || allotment_json(p_subject)
        || ',"tenant":' || allotment_json(p_tenant)
        || ',"type":' || allotment_json(p_type) || '}';
    -- The lifecycle event (usage/lifecycle.py), claimed exactly once like any event.
    WITH claimed AS (
        INSERT INTO usage_event_ids (source, id, customer_id, time, received_at)
            VALUES ('allotment', p_event_id, v_customer, p_now, p_now))
    INSERT INTO usage_events (customer_id, tenant, type, source, id, time, data, received_at)
        VALUES (v_customer, NULL, 'allotment.seat.assigned', 'allotment', p_event_id, p_now,
                after::jsonb, p_now);
    -- Last: the chain lock is then held only for the append and the commit. Without an
    -- actor the caller appends it (the keyed path, in the query that commits: 0011).
    IF p_actor IS NOT NULL THEN
        PERFORM allotment_audit_append(p_actor, 'seat.assigned', 'seat',
                                       p_customer || '/' || p_subject, after, p_request_id);
    END IF;
    status := 'created'; seat_id := p_seat_id; seat_type := p_type; seat_tenant := p_tenant;
    over_limit := v_over; assigned_at := p_now;
    IF v_over THEN
        window_ends_at := v_window_end;
        extra_left := p_limit + p_extra - v_members - 1;
    END IF;
    RETURN NEXT;
END;
$$;
"""

KEYED = r"""
CREATE OR REPLACE FUNCTION allotment_assign_seat_keyed(
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
    IF NOT allotment_idempotency_lock(p_principal, p_key) THEN
        status := 'in_flight';
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT k.request_hash, k.status, k.body INTO v_hash, v_status, v_body
        FROM idempotency_keys k
        WHERE k.principal = p_principal AND k.key = p_key AND k.expires_at > now();
    IF FOUND THEN
        status := CASE WHEN v_hash = p_request_hash THEN 'replay' ELSE 'reused' END;
        stored_status := v_status;
        stored_body := v_body;
        RETURN NEXT;
        RETURN;
    END IF;
    -- Without an actor: the caller appends the audit record with its COMMIT.
    RETURN QUERY SELECT a.*, NULL::smallint, NULL::bytea FROM allotment_assign_seat(
        p_customer, p_subject, p_type, p_tenant, p_now, p_contract, p_revision,
        p_active_version, p_limit, p_extra, p_window, p_guests, p_seat_id, p_burst_id,
        NULL, NULL, p_event_id) AS a;
END;
$$;
"""


def upgrade() -> None:
    op.execute(LOCK)
    op.execute(HELPERS)
    op.execute(f"DROP FUNCTION {ASSIGN_SIGNATURE}")
    op.execute(f"DROP FUNCTION {UNAUDITED_SIGNATURE}")
    op.execute(_as_text(ASSIGN))
    op.execute(KEYED)


def _as_text(sql: str) -> str:
    """SQLAlchemy's text() would read the JSON's `:null` as a bind parameter."""
    return sql.replace(":null", "\\:null")


def _revision(filename: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(filename, Path(__file__).with_name(filename))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def downgrade() -> None:
    r0010 = _revision("2026_11_30_0100-0010_seat_assignment_one_statement.py")
    r0011 = _revision("2026_11_30_0200-0011_assign_seat_keyed.py")
    op.execute(f"DROP FUNCTION {ASSIGN_SIGNATURE}")
    op.execute(r0010._as_text(r0010.HELPERS))
    op.execute(r0010._as_text(r0010.UNAUDITED))
    op.execute(r0010.AUDITED)
    op.execute(r0011.KEYED.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    op.execute("DROP FUNCTION allotment_idempotency_lock(text, text)")
