"""The audit record built in SQL (migration 0010) hashes to the byte what audit/service.py
computes and `verify` recomputes: the same canonical JSON for any text, the same timestamps,
the same chain."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import namedtuple_row
from sqlalchemy import text

from allotment.audit.service import content_hash
from allotment.db import libpq_url, session_scope
from allotment.kit.clock import isoformat
from allotment.kit.jsonx import canonical
from tests.factories.seats import assign

# Any text PostgreSQL can store: no NUL, no lone surrogates (not UTF-8).
TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"))
CONTROL_HEAVY = st.text(st.characters(max_codepoint=0x80, exclude_characters="\x00"))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
RELAXED = settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)


@pytest.fixture(scope="module")
def pg(stores: Any) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(
        libpq_url(stores.database_url), autocommit=True, row_factory=namedtuple_row
    ) as connection:
        yield connection


def _one(pg: psycopg.Connection[Any], sql: str, *params: Any) -> Any:
    row = pg.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


@RELAXED
@given(value=TEXT | CONTROL_HEAVY | st.none())
def test_a_string_is_pythons_canonical_json(pg: psycopg.Connection[Any], value: str) -> None:
    assert _one(pg, "SELECT allotment_json(%s)", value) == canonical(value)


@RELAXED
@given(moment=st.datetimes(datetime(1900, 1, 1), datetime(9000, 1, 1), timezones=OFFSETS))
def test_a_time_is_kit_clock_isoformat(pg: psycopg.Connection[Any], moment: datetime) -> None:
    assert _one(pg, "SELECT allotment_isoformat(%s)", moment) == isoformat(moment)


@RELAXED
@given(
    actor=TEXT,
    action=TEXT,
    target_type=TEXT,
    target_key=TEXT,
    after=JSON,
    request_id=TEXT | st.none(),
)
def test_an_appended_record_hashes_as_verify_recomputes_it(
    pg: psycopg.Connection[Any],
    actor: str,
    action: str,
    target_type: str,
    target_key: str,
    after: Any,
    request_id: str | None,
) -> None:
    with pg.transaction(force_rollback=True):
        head = pg.execute("SELECT last_id, last_hash FROM audit_head WHERE id = 1").fetchone()
        appended = _one(
            pg,
            "SELECT allotment_audit_append(%s, %s, %s, %s, %s, %s)",
            actor, action, target_type, target_key, canonical(after), request_id,
        )  # fmt: skip
        row = pg.execute("SELECT * FROM audit_log WHERE id = %s", (appended,)).fetchone()
        moved = pg.execute("SELECT last_id, last_hash FROM audit_head WHERE id = 1").fetchone()
    assert row.id == head.last_id + 1 and row.prev_hash == head.last_hash
    assert row.after == json.loads(canonical(after)) and row.before is None
    expected = content_hash(
        row.prev_hash,
        id=row.id,
        at=row.at,
        actor=actor,
        action=action,
        target_type=target_type,
        target_key=target_key,
        before=None,
        after=row.after,
        request_id=request_id,
    )
    assert row.hash == expected
    assert (moved.last_id, moved.last_hash) == (row.id, row.hash)


NASTY_SUBJECTS = [
    'quote"d',
    "back\\slash",
    "tab\tnew\nline\rcarriage",
    "\x01\x08\x0c\x1f\x7f",
    "émoji 🎉 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "\u2028\u2029",
    "слово/字/😀",
    "</script>&amp;",
]


async def test_fast_path_seats_with_any_subject_keep_the_chain_verifiable(
    app: Any, client: httpx.AsyncClient, backend: dict[str, str], team: str, finance: dict[str, str]
) -> None:
    assert (await assign(client, backend, "first")).status_code == 201  # learns the limits
    for subject in NASTY_SUBJECTS:
        response = await assign(client, backend, subject)
        assert response.status_code == 201, response.text
        assert response.json()["subject"] == subject
    verified = (await client.get("/v1/audit/verify", headers=finance)).json()
    assert verified["ok"] is True, verified["problems"]
    assert verified["records_checked"] >= len(NASTY_SUBJECTS) + 1
    async with session_scope(app.state.sessionmaker) as session:
        afters = (
            await session.execute(
                text("SELECT after FROM audit_log WHERE action = 'seat.assigned' ORDER BY id")
            )
        ).scalars()
        # By pseudonym (docs/privacy.md), built by the SQL function from its argument.
        of = app.state.pseudonyms.of
        assert [a["subject"] for a in afters] == [of("acme", s) for s in ["first", *NASTY_SUBJECTS]]
