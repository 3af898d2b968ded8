from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from allotment.policy.models import PolicyVersion

# Versions are PostgreSQL `integer`s: a larger number names no version and cannot even be
# sent as the query's parameter, so it is refused as invalid (422) like a version of 0.
MAX_VERSION = 2**31 - 1


class PolicyVersionRead(BaseModel):
    version: int
    status: Literal["draft", "published"]
    digest: str = Field(description="SHA-256 of the canonical form: same meaning, same digest.")
    media_type: str = Field(description="How the document was posted (JSON or YAML).")
    created_at: datetime
    created_by: str
    published_at: datetime | None
    published_by: str | None
    active: bool = Field(description="Whether this is the version checks use now.")

    @classmethod
    def of(cls, row: PolicyVersion, *, active_version: int | None) -> PolicyVersionRead:
        return cls(
            version=row.version,
            status=row.status,  # type: ignore[arg-type]  # the table's check constraint
            digest=row.digest,
            media_type=row.media_type,
            created_at=row.created_at,
            created_by=row.created_by,
            published_at=row.published_at,
            published_by=row.published_by,
            active=row.version == active_version,
        )


class PolicyVersionDetail(PolicyVersionRead):
    document: dict[str, Any] = Field(
        description="The canonical form: defaults filled, durations and amounts normalised."
    )

    @classmethod
    def of(cls, row: PolicyVersion, *, active_version: int | None) -> PolicyVersionDetail:
        summary = PolicyVersionRead.of(row, active_version=active_version)
        return cls(**summary.model_dump(), document=row.document)


# A human summary or an approval's comment: a paragraph or a few, not a document. NUL is
# refused, as everywhere: PostgreSQL text cannot hold it.
MAX_SUMMARY = 10_000
Prose = Annotated[str, StringConstraints(max_length=MAX_SUMMARY, pattern=r"^[^\x00]*$")]
Summary = Field(
    default=None,
    description="A human summary, stored with the release notes (docs/release-notes.md).",
)


class PolicyPublish(BaseModel):
    model_config = ConfigDict(extra="forbid")

    summary: Prose | None = Summary


class PolicyRollback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to_version: int = Field(
        ge=1, le=MAX_VERSION, description="A published version other than the active one."
    )
    summary: Prose | None = Summary


class ApprovalCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: Prose | None = None


class ApprovalRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    version: int
    approved_by: str = Field(description="The approving key, as the audit log names it.")
    comment: str | None
    created_at: datetime
    used_at: datetime | None = Field(description="When a publish used it; each serves one.")
    used_by: str | None


class PathAdded(BaseModel):
    path: str
    value: Any


class PathRemoved(BaseModel):
    path: str
    value: Any


class PathChanged(BaseModel):
    path: str
    old: Any
    new: Any


class PolicyDiffRead(BaseModel):
    version: int = Field(description="The version compared (the new side).")
    against: int = Field(description="The version it is compared with (the old side).")
    added: list[PathAdded]
    removed: list[PathRemoved]
    changed: list[PathChanged]
