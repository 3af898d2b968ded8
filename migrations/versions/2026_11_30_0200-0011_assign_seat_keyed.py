"""allotment_assign_seat_keyed(): the named-seat assignment behind an Idempotency-Key.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30

`kit/idempotency.py`'s protocol in one statement, around the assignment: take the
key's transaction-scoped advisory lock (taken: `in_flight`, the first request still runs);
then, in a statement of its own so it sees whatever the lock's previous holder committed,
look for the stored response (found: `replay` with its status and body, or `reused` when it
answered another request); else assign. The caller stores the response it sends in the same
transaction and commits: the effect and the stored answer become durable together.

It calls `allotment_assign_seat_unaudited` (0010), which returns the audit record's `after`
but does not append it: the caller does, in the query that stores the answer and commits.
The append takes the global chain lock, held to the commit, and here the commit is a round
trip to the worker away: taken in the first statement, every keyed assignment of every
customer would queue behind that trip.
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

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
    op.execute(KEYED)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION allotment_assign_seat_keyed(text, text, text, text, text, text, text, "
        "timestamptz, text, integer, integer, integer, integer, interval, integer, text, text, "
        "text)"
    )
