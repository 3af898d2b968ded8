"""Cursor (keyset) pagination over one unique, ordered column.

The cursor is opaque to callers: base64url of the last value seen. A list endpoint takes
`?limit=&cursor=` and answers `{items, next_cursor}`; `next_cursor` is null on the last page.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from allotment.errors import BadRequest

T = TypeVar("T")
M = TypeVar("M")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


@dataclass
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


class PageRead(BaseModel, Generic[M]):
    items: list[M]
    next_cursor: str | None


def encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([value])).decode().rstrip("=")


def decode_cursor(cursor: str) -> Any:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        (value,) = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
    except Exception as exc:
        raise BadRequest("The cursor is not one this API issued.", type="invalid-cursor") from exc
    return value


async def paginate(
    session: AsyncSession,
    query: Select[Any],
    column: InstrumentedAttribute[Any],
    *,
    limit: int,
    cursor: str | None,
    descending: bool = False,
    scalars: bool = True,
) -> Page[Any]:
    if cursor is not None:
        last = decode_cursor(cursor)
        query = query.where(column < last if descending else column > last)
    query = query.order_by(column.desc() if descending else column.asc()).limit(limit + 1)
    result = await session.execute(query)
    rows: list[Any] = list(result.scalars().all() if scalars else result.all())
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more and rows:
        last_row = rows[-1]
        next_cursor = encode_cursor(_value_of(last_row, column))
    return Page(items=rows, next_cursor=next_cursor)


def _value_of(row: Any, column: InstrumentedAttribute[Any]) -> Any:
    """The column's value in a row: an entity, a row of columns, or a row of entities
    (`select(A, B)`: taken from the one that is of the column's class)."""
    if hasattr(row, column.key):
        return getattr(row, column.key)
    owner: Any = column.class_
    (entity,) = (item for item in row if isinstance(item, owner))
    return getattr(entity, column.key)
