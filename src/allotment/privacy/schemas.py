"""The erasure's answer (docs/privacy.md)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErasureRead(BaseModel):
    customer: str
    subject_ref: str = Field(
        description="The subject's pseudonym: what the audit trail, the decision log, the "
        "events and, from now on, its past seats, sessions and devices hold."
    )
    seats_released: int = Field(description="Live seats released (0 or 1).")
    sessions_closed: int
    devices_ended: int = Field(description="Live devices ended (with the seat, or alone).")
    rows_pseudonymized: int = Field(
        description="Seat, session and device rows, decision records and lifecycle events "
        "that held the subject and now hold its pseudonym."
    )
    responses_forgotten: int = Field(
        description="Stored Idempotency-Key responses that named the subject, dropped."
    )
