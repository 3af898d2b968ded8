"""The reference ("bare") app of docs/design.md's "Targets": parse a pydantic body of
/v1/check's shape and return a constant. Served by the same server with the same flags as
Allotment."""

from __future__ import annotations

from fastapi import FastAPI

from allotment.check.schemas import BatchBody, CheckBody

app = FastAPI()

ANSWER = {
    "allowed": True,
    "reason": "ok",
    "feature": "reports",
    "customer": "c0001",
    "warnings": [],
    "policy_version": 1,
    "contract_revision": 1,
    "decision_id": "dec_01jc0000000000000000000000",
    "stale": False,
    "cache_ttl_s": 5,
}


@app.post("/v1/check")
async def check(body: CheckBody) -> dict[str, object]:
    return ANSWER


@app.post("/v1/check/batch")
async def batch(body: BatchBody) -> dict[str, object]:
    return {"decisions": [ANSWER] * len(body.features)}
