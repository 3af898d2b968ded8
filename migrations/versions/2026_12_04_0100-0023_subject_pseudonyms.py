"""Subjects' pseudonyms in the seat function's audit record and lifecycle event; indexes for
the retention purges.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-04

* `allotment_assign_seat` and `allotment_assign_seat_keyed` take one more argument last,
  `p_subject_ref`: the subject's keyed pseudonym, computed in Python (privacy/pseudonyms.py:
  the key never reaches the database). The audit record's target (`<customer>/<pseudonym>`)
  and `after.subject`, and so the lifecycle event's `data.subject`, carry it instead of the
  subject; the seat row keeps the subject (docs/privacy.md). Otherwise the functions are
  0014's, word for word.
* `ix_decisions_at`: the worker deletes the decision log's rows older than its retention in
  batches by `at`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def _revision(filename: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(filename, Path(__file__).with_name(filename))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _replace(sql: str, *pairs: tuple[str, str]) -> str:
    for old, new in pairs:
        assert sql.count(old) == 1, old
        sql = sql.replace(old, new)
    return sql


def _functions() -> tuple[ModuleType, str, str]:
    r0014 = _revision("2026_12_03_0100-0014_seat_rules_in_one_place.py")
    assign = _replace(
        r0014.ASSIGN,
        (
            "p_request_id text, p_event_id text\n) RETURNS TABLE",
            "p_request_id text, p_event_id text,\n    p_subject_ref text\n) RETURNS TABLE",
        ),
        (
            """|| ',"subject":' || allotment_json(p_subject)""",
            """|| ',"subject":' || allotment_json(p_subject_ref)""",
        ),
        ("p_customer || '/' || p_subject, after", "p_customer || '/' || p_subject_ref, after"),
    )
    keyed = _replace(
        r0014.KEYED,
        ("CREATE OR REPLACE FUNCTION", "CREATE FUNCTION"),
        (
            "p_seat_id text, p_burst_id text, p_event_id text\n) RETURNS TABLE",
            "p_seat_id text, p_burst_id text, p_event_id text, p_subject_ref text\n"
            ") RETURNS TABLE",
        ),
        ("NULL, NULL, p_event_id) AS a;", "NULL, NULL, p_event_id, p_subject_ref) AS a;"),
    )
    return r0014, assign, keyed


KEYED_0014 = (
    "allotment_assign_seat_keyed(text, text, text, text, text, text, text, timestamptz, text, "
    "integer, integer, integer, integer, interval, integer, text, text, text)"
)
ASSIGN_SIGNATURE = (
    "allotment_assign_seat(text, text, text, text, timestamptz, text, integer, integer, "
    "integer, integer, interval, integer, text, text, text, text, text, text)"
)
KEYED_SIGNATURE = KEYED_0014.replace("text, text, text)", "text, text, text, text)")


def upgrade() -> None:
    r0014, assign, keyed = _functions()
    op.execute(f"DROP FUNCTION {KEYED_0014}")
    op.execute(f"DROP FUNCTION {r0014.ASSIGN_SIGNATURE}")
    op.execute(r0014._as_text(assign))
    op.execute(keyed)
    op.create_index("ix_decisions_at", "decisions", ["at"])


def downgrade() -> None:
    r0014, _, _ = _functions()
    op.drop_index("ix_decisions_at", table_name="decisions")
    op.execute(f"DROP FUNCTION {KEYED_SIGNATURE}")
    op.execute(f"DROP FUNCTION {ASSIGN_SIGNATURE}")
    op.execute(r0014._as_text(r0014.ASSIGN))
    op.execute(r0014.KEYED.replace("CREATE OR REPLACE FUNCTION", "CREATE FUNCTION", 1))
