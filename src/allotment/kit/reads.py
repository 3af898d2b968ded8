"""Response models from rows: the one mapper every domain uses instead of writing its own.

    from_row(InstanceRead, row, customer="acme")

takes each field of the model from the attribute of `row` with the same name (a Core row or
an ORM object), and the rest from keyword arguments: the values a row does not hold as such
(a customer's key, where the row has its id). Pydantic validates the result, so a column
renamed without its field fails loudly rather than answering a stale name.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


def from_row(model: type[M], row: Any, **values: Any) -> M:
    found = {
        name: getattr(row, name)
        for name in model.model_fields
        if name not in values and hasattr(row, name)
    }
    return model.model_validate({**found, **values})
