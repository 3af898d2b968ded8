from __future__ import annotations

from types import SimpleNamespace

import pytest
from pydantic import BaseModel, ValidationError

from allotment.kit.reads import from_row


class Thing(BaseModel):
    id: str
    customer: str
    size: int
    note: str | None = None


def test_fields_come_from_the_row_and_the_rest_from_arguments() -> None:
    row = SimpleNamespace(id="t1", customer_id=7, size=3, unrelated=True)
    assert from_row(Thing, row, customer="acme") == Thing(id="t1", customer="acme", size=3)


def test_an_argument_wins_over_the_row() -> None:
    row = SimpleNamespace(id="t1", customer="raw", size=3)
    assert from_row(Thing, row, customer="acme").customer == "acme"


def test_a_column_renamed_without_its_field_fails_loudly() -> None:
    with pytest.raises(ValidationError, match="size"):
        from_row(Thing, SimpleNamespace(id="t1", bytes=3), customer="acme")
