"""allotment_assign_seat() writes its audit record and lifecycle event; live seats counted.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30

0009 made the seat assignment one statement, but the audit record (a chain append under the
`audit_head` row lock) and the lifecycle event still took three more round trips, and the
transaction two more (BEGIN, COMMIT). Here the function does all of it, so an assignment can
run as one autocommit statement: the seat, the burst episode, the state-version bump, the
audit record and the `allotment.seat.assigned` event commit together or not at all.

It is two functions: `allotment_assign_seat_unaudited` does the assignment and the event and
returns the audit record's canonical `after`; `allotment_assign_seat` is that plus the audit
append, last, so the chain lock is held only for the append and the commit. (0011's keyed
variant calls the first and leaves the append to the query that commits.)

The audit hash must be exactly the one `audit/service.py` computes and `verify` recomputes:

    sha256(prev_hash || "\\n" || canonical({id, at, actor, action, target_type, target_key,
                                            before, after, request_id}))

`canonical` is Python's `json.dumps(sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`. The record's shape is fixed, so the text is assembled with its keys
already in sorted order; strings go through `to_json(text)`, whose escaping (`\\"`, `\\\\`,
`\\b \\f \\n \\r \\t`, other controls as lowercase `\\u00xx`, everything else verbatim) is
Python's. Times are `kit.clock.isoformat`: UTC, microseconds, `Z`.
tests/seats/test_audit_sql.py holds both sides to the same bytes for arbitrary text.

And the live seats of each customer are counted in `seat_counts`, kept by a trigger on
`seats` (so no writer can forget it): an assignment read `count(*)` over every live seat
of the customer, under the pool lock, which made it O(seats held) — 1 ms at 6,000 seats,
all of it serialised per customer. A tenant's seats are still counted, through a partial
index of the live tenant seats.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

NEW_SIGNATURE = (
    "allotment_assign_seat(text, text, text, text, timestamptz, text, integer, integer, "
    "integer, integer, interval, integer, text, text, text, text, text)"
)
OLD_SIGNATURE = (
    "allotment_assign_seat(text, text, text, text, timestamptz, text, integer, integer, "
    "integer, integer, interval, integer, text, text)"
)

COUNTS = r"""
CREATE TABLE seat_counts (
    customer_id bigint PRIMARY KEY REFERENCES customers (id) ON DELETE CASCADE,
    members integer NOT NULL DEFAULT 0 CHECK (members >= 0),
    guests integer NOT NULL DEFAULT 0 CHECK (guests >= 0)
);
INSERT INTO seat_counts (customer_id, members, guests)
    SELECT s.customer_id, count(*) FILTER (WHERE s.type = 'member'),
           count(*) FILTER (WHERE s.type = 'guest')
    FROM seats s WHERE s.released_at IS NULL GROUP BY s.customer_id;
CREATE INDEX ix_seats_live_tenant ON seats (customer_id, tenant)
    WHERE released_at IS NULL AND tenant IS NOT NULL;

-- A live seat counts once, in its customer's row: added when a live seat appears, taken
-- away when it is released (or deleted). Every writer of `seats` goes through here.
CREATE FUNCTION allotment_count_seats() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        IF OLD.released_at IS NULL THEN
            UPDATE seat_counts SET members = members - (OLD.type = 'member')::integer,
                                   guests = guests - (OLD.type = 'guest')::integer
                WHERE customer_id = OLD.customer_id;
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF NEW.released_at IS NULL THEN
            UPDATE seat_counts SET members = members + (NEW.type = 'member')::integer,
                                   guests = guests + (NEW.type = 'guest')::integer
                WHERE customer_id = NEW.customer_id;
            IF NOT FOUND THEN
                INSERT INTO seat_counts AS n (customer_id, members, guests)
                    VALUES (NEW.customer_id, (NEW.type = 'member')::integer,
                            (NEW.type = 'guest')::integer)
                    ON CONFLICT (customer_id) DO UPDATE
                    SET members = n.members + excluded.members,
                        guests = n.guests + excluded.guests;
            END IF;
        END IF;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER seats_counted AFTER INSERT OR DELETE OR UPDATE OF released_at, type, customer_id
    ON seats FOR EACH ROW EXECUTE FUNCTION allotment_count_seats();
-- TRUNCATE fires no row trigger: emptied seats, emptied counts.
CREATE FUNCTION allotment_uncount_seats() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM seat_counts;
    RETURN NULL;
END;
$$;
CREATE TRIGGER seats_truncated AFTER TRUNCATE ON seats
    FOR EACH STATEMENT EXECUTE FUNCTION allotment_uncount_seats();
"""

HELPERS = r"""
CREATE OR REPLACE FUNCTION allotment_json(v text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT coalesce(to_json(v)::text, 'null') $$;

CREATE OR REPLACE FUNCTION allotment_isoformat(v timestamptz) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
    $$ SELECT to_char(v AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') $$;

-- Append one record to the audit chain: the same row, hash and head move as
-- audit/service.py's `_append_pending`. `p_after` is canonical JSON text (or NULL).
CREATE OR REPLACE FUNCTION allotment_audit_append(
    p_actor text, p_action text, p_target_type text, p_target_key text,
    p_after text, p_request_id text
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
    v_prev text;
    v_at timestamptz;
    v_hash text;
BEGIN
    -- The chain lock, held to commit: two writers can never read the same tip and fork.
    SELECT last_id + 1, last_hash INTO v_id, v_prev FROM audit_head WHERE id = 1 FOR UPDATE;
    v_at := clock_timestamp();
    v_hash := encode(sha256(convert_to(
        v_prev || E'\n'
        || '{"action":' || allotment_json(p_action)
        || ',"actor":' || allotment_json(p_actor)
        || ',"after":' || coalesce(p_after, 'null')
        || ',"at":' || allotment_json(allotment_isoformat(v_at))
        || ',"before":null'
        || ',"id":' || v_id::text
        || ',"request_id":' || allotment_json(p_request_id)
        || ',"target_key":' || allotment_json(p_target_key)
        || ',"target_type":' || allotment_json(p_target_type)
        || '}', 'UTF8')), 'hex');
    INSERT INTO audit_log (id, at, actor, action, target_type, target_key, before, after,
                           request_id, prev_hash, hash)
        VALUES (v_id, v_at, p_actor, p_action, p_target_type, p_target_key, NULL,
                p_after::json, p_request_id, v_prev, v_hash);
    UPDATE audit_head SET last_id = v_id, last_hash = v_hash WHERE id = 1;
    RETURN v_id;
END;
$$;
"""

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
CREATE FUNCTION allotment_assign_seat(
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


def upgrade() -> None:
    op.execute(f"DROP FUNCTION {OLD_SIGNATURE}")
    op.execute(COUNTS)
    op.execute(_as_text(HELPERS))
    op.execute(_as_text(UNAUDITED))
    op.execute(AUDITED)


def _as_text(sql: str) -> str:
    """SQLAlchemy's text() would read the JSON's `:null` as a bind parameter."""
    return sql.replace(":null", "\\:null")


def downgrade() -> None:
    spec = importlib.util.spec_from_file_location(
        "revision_0009", Path(__file__).with_name("2026_11_29_0400-0009_assign_seat_function.py")
    )
    assert spec is not None and spec.loader is not None
    previous = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(previous)
    op.execute(f"DROP FUNCTION {NEW_SIGNATURE}")
    op.execute(
        "DROP FUNCTION allotment_assign_seat_unaudited(text, text, text, text, timestamptz, "
        "text, integer, integer, integer, integer, interval, integer, text, text, text)"
    )
    op.execute("DROP FUNCTION allotment_audit_append(text, text, text, text, text, text)")
    op.execute("DROP FUNCTION allotment_isoformat(timestamptz)")
    op.execute("DROP FUNCTION allotment_json(text)")
    op.execute("DROP TRIGGER seats_truncated ON seats")
    op.execute("DROP FUNCTION allotment_uncount_seats()")
    op.execute("DROP TRIGGER seats_counted ON seats")
    op.execute("DROP FUNCTION allotment_count_seats()")
    op.execute("DROP INDEX ix_seats_live_tenant")
    op.execute("DROP TABLE seat_counts")
    op.execute(previous.FUNCTION)
