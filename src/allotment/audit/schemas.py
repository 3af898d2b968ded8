from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class AuditRecordRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    actor: str
    action: str
    target_type: str
    target_key: str
    before: Any
    after: Any
    request_id: str | None
    prev_hash: str
    hash: str


class AuditProblem(BaseModel):
    id: int | None
    problem: str


class AuditVerification(BaseModel):
    ok: bool
    records_checked: int
    head_id: int
    head_hash: str
    problems: list[AuditProblem]
