"""`allotment policy validate FILE` and `allotment policy publish FILE`, run as a user would."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.factories.policies import policy_document, policy_yaml
from tests.policy_api.helpers import audit_records, pointer

ALLOTMENT = str(Path(sys.executable).parent / "allotment")

BROKEN_YAML = """\
currency: usd
features:
  reports: {}
  sso: {requires: [audit_log]}
plans:
  team:
    features: [reports, reprots]
    seats: {limt: 10}
    price: {base: 500.00}
"""


async def run_cli(stores: Any, *args: str | Path) -> subprocess.CompletedProcess[str]:
    # In a thread: a blocking subprocess.run would stall the event loop the app runs on.
    return await asyncio.to_thread(
        subprocess.run,
        [ALLOTMENT, *map(str, args)],
        env=stores.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_validate_reports_every_error_by_path(stores: Any, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN_YAML)
    result = await run_cli(stores, "policy", "validate", broken)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    for path in (
        "currency",
        "features.sso.requires[0]",
        "plans.team.features[1]",
        "plans.team.seats.limt",
        "plans.team.price.base",
    ):
        assert any(line.startswith(f"{path}: ") for line in lines), (path, result.stderr)
    assert "valid" not in result.stdout


async def test_validate_a_valid_file(stores: Any, tmp_path: Path) -> None:
    good_yaml = tmp_path / "policy.yml"
    good_yaml.write_text(policy_yaml())
    good_json = tmp_path / "policy.json"
    good_json.write_text(json.dumps(policy_document()))
    for file in (good_yaml, good_json):
        result = await run_cli(stores, "policy", "validate", file)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "valid"


async def test_validate_needs_a_known_extension(stores: Any, tmp_path: Path) -> None:
    odd = tmp_path / "policy.txt"
    odd.write_text(policy_yaml())
    result = await run_cli(stores, "policy", "validate", odd)
    assert result.returncode == 2 and ".yaml" in result.stderr


async def test_publish_validates_stores_and_publishes(
    app: Any, stores: Any, client: httpx.AsyncClient, admin: dict[str, str], tmp_path: Path
) -> None:
    file = tmp_path / "policy.yaml"
    file.write_text(policy_yaml())
    result = await run_cli(stores, "policy", "publish", file)
    assert result.returncode == 0, result.stderr
    assert "published policy version 1" in result.stdout

    active = (await client.get("/v1/policies/active", headers=admin)).json()
    assert active["version"] == 1 and active["status"] == "published"
    assert active["created_by"] == active["published_by"] == "cli"
    assert active["media_type"] == "application/yaml"
    assert [(r.action, r.actor) for r in await audit_records(app)] == [
        ("policy.created", "cli"),
        ("policy.published", "cli"),
    ]
    # The same file again: it is already the active version, so nothing moves or is announced.
    again = await run_cli(stores, "policy", "publish", file)
    assert again.returncode == 0, again.stderr
    assert "already the active version" in again.stdout
    assert (await pointer(app)).global_version == 1


async def test_publish_of_an_invalid_file_stores_nothing(
    stores: Any, client: httpx.AsyncClient, admin: dict[str, str], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN_YAML)
    result = await run_cli(stores, "policy", "publish", broken)
    assert result.returncode == 1
    assert "plans.team.seats.limt: " in result.stderr
    assert (await client.get("/v1/policies", headers=admin)).json()["items"] == []
