"""The reference of bench/seats.py: one durable single-row INSERT per request.

`POST /v1/customers/{key}/seats` with a seat assignment's body (parsed by the same pydantic
model), answered 201 after one autocommit INSERT into a scratch table of the same PostgreSQL,
on a connection of the same kind of pool as the seat fast path's (`db.create_hot_pool` and
`db.hot_connection`, sized by the same settings). With `synchronous_commit` as the service
runs it, each request waits for its own WAL flush: the most a request can do here while
writing something durable. Served by bench/seats.py with the same uvicorn flags as Allotment.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from allotment.config import Settings
from allotment.db import create_hot_pool, hot_connection
from allotment.kit.jsonx import dumps
from allotment.seats.schemas import SeatAssign

TABLE = "bench_durable_writes"
CREATE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
    "customer text NOT NULL, subject text NOT NULL, at timestamptz NOT NULL DEFAULT now())"
)
_INSERT = f"INSERT INTO {TABLE} (customer, subject) VALUES (%s, %s) RETURNING id, at"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    url = os.environ["ALLOTMENT_DATABASE_URL"]
    pool = create_hot_pool(url, Settings(database_url=url))
    await pool.open()
    app.state.pool = pool
    try:
        yield
    finally:
        await pool.close()


app = FastAPI(lifespan=lifespan)


@app.post("/v1/customers/{key}/seats", status_code=201)
async def write(key: str, body: SeatAssign, request: Request) -> Response:
    async with hot_connection(request.app.state.pool, wait_s=5.0) as pg:
        row = await (await pg.execute(_INSERT, (key, body.subject))).fetchone()
    assert row is not None
    answer = {"id": row[0], "customer": key, "subject": body.subject, "since": row[1]}
    return Response(dumps(answer), status_code=201, media_type="application/json")
