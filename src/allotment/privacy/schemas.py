"""The erasure's answer (docs/privacy.md)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Pseudonymized(BaseModel):
    """Rows that held the subject and now hold its pseudonym, by kind (docs/privacy.md)."""

    seats: int = Field(description="Seat rows, live (now released) and past.")
    sessions: int = Field(description="Concurrent-seat session rows, live (now closed) and past.")
    devices: int = Field(description="Device (instance) rows, live (now ended) and past.")
    decision_records: int = Field(
        description="Decision log records written with the raw subject (before pseudonyms)."
    )
    events: int = Field(
        description="Lifecycle events written with the raw subject (before pseudonyms)."
    )

    @property
    def total(self) -> int:
        return self.seats + self.sessions + self.devices + self.decision_records + self.events


class ErasureRead(BaseModel):
    customer: str
    subject_ref: str = Field(
        description="The subject's pseudonym: what the audit trail, the decision log, the "
        "events and, from now on, its past seats, sessions and devices hold."
    )
    found: bool = Field(
        description="Whether anything held this exact subject (compared byte for byte, case "
        "included): false for a subject never seen, one already erased, or a pseudonym; "
        "then nothing was changed."
    )
    seats_released: int = Field(description="Live seats released (0 or 1).")
    sessions_closed: int = Field(description="Live sessions closed.")
    devices_ended: int = Field(description="Live devices ended (with the seat, or alone).")
    rows_pseudonymized: int = Field(
        description="All rows that held the subject and now hold its pseudonym: the sum of "
        "`pseudonymized`."
    )
    pseudonymized: Pseudonymized
    responses_forgotten: int = Field(
        description="Stored Idempotency-Key responses that named the subject, dropped."
    )
