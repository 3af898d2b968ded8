"""Profile the warm /v1/check path in process (pyinstrument), without HTTP in the way.

.venv/bin/python bench/profile_check.py [--n 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.factories.auth import create_key  # noqa: E402

from allotment import embedded  # noqa: E402
from allotment.app import create_app  # noqa: E402
from allotment.check.values import CheckRequest  # noqa: E402
from allotment.config import Settings  # noqa: E402
from allotment.migrate import upgrade  # noqa: E402
from bench.run import bench_policy, fresh_database  # noqa: E402


async def main(n: int) -> None:
    servers = embedded.start(Settings(data_dir=Path(tempfile.gettempdir()) / "allotment-bench"))
    try:
        url = fresh_database(servers, "allotment_profile")
        upgrade(url)
        settings = Settings(
            database_url=url,
            redis_url=servers.redis_url,
            redis_namespace=f"profile-{os.getpid()}",
            log_level="WARNING",
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            admin = await create_key(app, scopes=["admin"])
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                v = (await client.post("/v1/policies", json=bench_policy(), headers=admin)).json()
                await client.post(f"/v1/policies/{v['version']}/publish", headers=admin)
                await client.post("/v1/customers", json={"key": "c1", "name": "c"}, headers=admin)
                await client.post(
                    "/v1/customers/c1/contracts",
                    json={"plan": "pro", "starts_at": "2026-01-01T00:00:00Z"},
                    headers=admin,
                )
                checker = app.state.checker
                request = CheckRequest(customer="c1", feature="f01")
                await checker.check(request)
                started = time.perf_counter()
                for _ in range(n):
                    await checker.check(request)
                per = (time.perf_counter() - started) / n * 1e6
                print(f"Checker.check warm: {per:.1f} µs per call")
                body = {"customer": "c1", "feature": "f01"}
                started = time.perf_counter()
                for _ in range(2000):
                    await client.post("/v1/check", json=body, headers=admin)
                per = (time.perf_counter() - started) / 2000 * 1e6
                print(f"through ASGI (httpx in process): {per:.1f} µs per request")
                try:
                    from pyinstrument import Profiler
                except ImportError:
                    return
                profiler = Profiler(interval=0.0001, async_mode="enabled")
                profiler.start()
                for _ in range(2000):
                    await client.post("/v1/check", json=body, headers=admin)
                profiler.stop()
                print(profiler.output_text(unicode=False, color=False, show_all=False))
    finally:
        servers.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    asyncio.run(main(parser.parse_args().n))
