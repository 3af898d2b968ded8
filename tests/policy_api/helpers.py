"""Direct reads of the policy tables and the audit log, for assertions the API does not show."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text

from allotment.audit.models import AuditRecord
from allotment.db import session_scope
from allotment.policy import service as policies


async def pointer(app: Any) -> policies.PolicyPointer:
    async with session_scope(app.state.sessionmaker) as session:
        return await policies.pointer(session)


async def audit_records(app: Any, *actions: str) -> list[AuditRecord]:
    """Policy audit records in chain (commit) order, optionally of some actions only."""
    async with session_scope(app.state.sessionmaker) as session:
        query = select(AuditRecord).where(AuditRecord.target_type == "policy")
        if actions:
            query = query.where(AuditRecord.action.in_(actions))
        return list((await session.execute(query.order_by(AuditRecord.id))).scalars())


async def execute(app: Any, sql: str, **params: Any) -> None:
    async with session_scope(app.state.sessionmaker) as session:
        await session.execute(text(sql), params)
