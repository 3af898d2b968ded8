"""Audit records: appended in the mutation's own transaction, chained by SHA-256.

`record()` queues a record on the session; the chain append runs as the transaction's last
step (a `before_commit` hook), so the chain lock — a row lock on `audit_head` — is held only
for the insert and the commit, while every concurrent writer still appends in one line.

    hash = sha256(prev_hash + "\n" + canonical({id, at, actor, action, target, before, after,
                                                request_id}))
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.audit.models import GENESIS_HASH, AuditHead, AuditRecord
from allotment.audit.schemas import AuditProblem, AuditVerification
from allotment.db import before_commit, driver
from allotment.kit.clock import isoformat, utcnow
from allotment.kit.jsonx import canonical
from allotment.kit.metrics import AUDIT_RECORDS
from allotment.kit.pagination import Page, paginate

_PENDING = "audit_pending"


def record(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    target_type: str,
    target_key: str,
    before: Any = None,
    after: Any = None,
) -> None:
    # A JSON round trip now, so what is hashed is exactly what the json column gives back.
    entry = {
        "actor": actor,
        "action": action,
        "target_type": target_type,
        "target_key": target_key,
        "before": json.loads(canonical(before)),
        "after": json.loads(canonical(after)),
        "request_id": session.info.get("request_id"),
    }
    session.info.setdefault(_PENDING, []).append(entry)
    before_commit(session, _append_pending, key=_PENDING)


def content_hash(prev_hash: str, *, id: int, at: datetime, **fields: Any) -> str:
    content = canonical({"id": id, "at": isoformat(at), **fields})
    return hashlib.sha256(f"{prev_hash}\n{content}".encode()).hexdigest()


def _row_hash(row: AuditRecord) -> str:
    return content_hash(
        row.prev_hash,
        id=row.id,
        at=row.at,
        actor=row.actor,
        action=row.action,
        target_type=row.target_type,
        target_key=row.target_key,
        before=row.before,
        after=row.after,
        request_id=row.request_id,
    )


_HEAD = "SELECT last_id, last_hash FROM audit_head WHERE id = 1 FOR UPDATE"
_APPEND = (
    "WITH appended AS (INSERT INTO audit_log (id, at, actor, action, target_type, target_key, "
    "before, after, request_id, prev_hash, hash) SELECT i, a, ac, act, tt, tk, b::json, "
    "af::json, r, p, h FROM unnest(%s::bigint[], %s::timestamptz[], %s::text[], %s::text[], "
    "%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[]) "
    "AS u(i, a, ac, act, tt, tk, b, af, r, p, h)) "
    "UPDATE audit_head SET last_id = %s, last_hash = %s WHERE id = 1"
)


def _json_text(value: Any) -> str | None:
    return None if value is None else canonical(value)


async def _append_pending(session: AsyncSession) -> None:
    """Append the queued records, last thing before commit: two statements on the driver
    connection (every audited write runs this while holding the chain lock, so it is kept
    as short as it can be)."""
    pending = session.info.pop(_PENDING, [])
    if not pending:
        return
    pg = await driver(session)
    # The row lock serialises appends: two writers can never read the same tip and fork.
    cursor = await pg.execute(_HEAD)
    last_id, last_hash = await cursor.fetchone()
    columns: list[list[Any]] = [[] for _ in range(11)]
    for entry in pending:
        at = utcnow()
        last_id += 1
        digest = content_hash(last_hash, id=last_id, at=at, **entry)
        values = (
            last_id,
            at,
            entry["actor"],
            entry["action"],
            entry["target_type"],
            entry["target_key"],
            _json_text(entry["before"]),
            _json_text(entry["after"]),
            entry["request_id"],
            last_hash,
            digest,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
        last_hash = digest
    await pg.execute(_APPEND, (*columns, last_id, last_hash))
    AUDIT_RECORDS.inc(len(pending))


async def _iter_records(session: AsyncSession, batch: int = 5000) -> AsyncIterator[AuditRecord]:
    last = 0
    while True:
        rows = (
            (
                await session.execute(
                    select(AuditRecord)
                    .where(AuditRecord.id > last)
                    .order_by(AuditRecord.id)
                    .limit(batch)
                )
            )
            .scalars()
            .all()
        )
        if not rows:
            return
        for row in rows:
            yield row
        last = rows[-1].id
        session.expunge_all()


async def verify(session: AsyncSession, *, max_problems: int = 100) -> AuditVerification:
    head = (await session.execute(select(AuditHead).where(AuditHead.id == 1))).scalar_one()
    head_id, head_hash = head.last_id, head.last_hash
    problems: list[AuditProblem] = []
    expected_id, prev_hash, checked = 1, GENESIS_HASH, 0

    def problem(row_id: int | None, text: str) -> None:
        if len(problems) < max_problems:
            problems.append(AuditProblem(id=row_id, problem=text))

    async for row in _iter_records(session):
        checked += 1
        if row.id != expected_id:
            problem(expected_id, f"records {expected_id}..{row.id - 1} are missing (deleted)")
        if row.prev_hash != prev_hash:
            problem(row.id, "prev_hash does not match the previous record's hash")
        if _row_hash(row) != row.hash:
            problem(row.id, "content does not match its hash (the record was edited)")
        expected_id, prev_hash = row.id + 1, row.hash
    if expected_id - 1 != head_id:
        if expected_id - 1 < head_id:
            problem(expected_id, f"records {expected_id}..{head_id} are missing (deleted)")
        else:
            problem(head_id + 1, "records exist past the chain's head")
    elif prev_hash != head_hash:
        problem(head_id, "the last record's hash does not match the chain's head")
    return AuditVerification(
        ok=not problems,
        records_checked=checked,
        head_id=head_id,
        head_hash=head_hash,
        problems=problems,
    )


async def list_records(
    session: AsyncSession,
    *,
    target_type: str | None,
    target_key: str | None,
    actor: str | None,
    action: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    cursor: str | None,
) -> Page[AuditRecord]:
    query = select(AuditRecord)
    if target_type:
        query = query.where(AuditRecord.target_type == target_type)
    if target_key:
        query = query.where(AuditRecord.target_key == target_key)
    if actor:
        query = query.where(AuditRecord.actor == actor)
    if action:
        query = query.where(AuditRecord.action == action)
    if since:
        query = query.where(AuditRecord.at >= since)
    if until:
        query = query.where(AuditRecord.at < until)
    return await paginate(
        session, query, AuditRecord.id, limit=limit, cursor=cursor, descending=True
    )
