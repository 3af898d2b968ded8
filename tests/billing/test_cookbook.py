"""The pricing cookbook (docs/pricing-cookbook.md), through the API: each model's policy is
published from tests/billing/cookbook/<model>.yaml (the file the doc shows verbatim), a
customer and contract are created, a month of seats, sessions, instances, events and credits
is placed in November 2026 (a closed month of 30 days, 720 hours), and the invoice preview is
compared with the doc's worked table line by line: code, quantity, unit_price, amount, and
the subtotal.

Seats, sessions and instances are created through the API and then moved to their November
instants in the database (the API records them now); events are ingested through the usage
service as if received on December 1 (the API's late window refuses events older than seven
days). Everything else — the policy, the customer, the contract, the credit top-up, the
preview — goes through the HTTP API.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import text

from allotment.db import session_scope
from tests.factories.auth import create_key
from tests.factories.contracts import create_contract, iso
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.seats import assign, register
from tests.factories.usage import event, ingest_at

COOKBOOK = Path(__file__).parent / "cookbook"
DOC = Path(__file__).parents[2] / "docs" / "pricing-cookbook.md"
MODELS = ("dev_platform", "host_monitoring", "usage_api", "onprem_licence")

NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)
PERIOD = "2026-11"
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

Line = tuple[str, Decimal, Decimal, Decimal]
INVOICE_HEADER = "| code | quantity | unit_price | amount |"


def policy_text(model: str) -> str:
    return (COOKBOOK / f"{model}.yaml").read_text()


def policy(model: str) -> dict[str, Any]:
    return yaml.safe_load(policy_text(model))  # type: ignore[no-any-return]


def doc_sections() -> dict[str, str]:
    """The doc cut at each model's marker, `<!-- cookbook: <model> -->`."""
    text_ = DOC.read_text()
    parts = re.split(r"<!-- cookbook: ([a-z_]+) -->", text_)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def doc_yaml(section: str) -> str:
    blocks = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "one yaml block per model"
    return blocks[0]  # type: ignore[no-any-return]


def _number(cell: str) -> Decimal:
    return Decimal(cell.strip().strip("*").replace(",", "").replace("−", "-"))


def doc_invoice(section: str) -> tuple[list[Line], Decimal]:
    """The model's invoice table: the rows under `| code | quantity | unit_price | amount |`,
    each `| `code` | quantity | unit_price | amount | how |`, to its `| **subtotal** |` row."""
    rows = section.splitlines()
    header = next(i for i, row in enumerate(rows) if row.startswith(INVOICE_HEADER))
    lines: list[Line] = []
    for row in rows[header + 2 :]:
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        if cells[0] == "**subtotal**":
            return lines, _number(cells[3])
        assert re.fullmatch(r"`[a-z_:]+`", cells[0]), row
        lines.append((cells[0].strip("`"), *(_number(cell) for cell in cells[1:4])))
    raise AssertionError("the invoice table has no subtotal row")


async def _sql(app: Any, statement: str, **params: Any) -> None:
    async with session_scope(app.state.sessionmaker) as session:
        await session.execute(text(statement), params)


async def _publish(client: httpx.AsyncClient, admin: dict[str, str], model: str) -> None:
    created = await client.post(
        "/v1/policies",
        content=policy_text(model),
        headers={**admin, "Content-Type": "application/yaml"},
    )
    assert created.status_code in (200, 201), created.text
    version = created.json()["version"]
    published = await client.post(f"/v1/policies/{version}/publish", headers=admin)
    assert published.status_code == 200, published.text


async def _preview(
    client: httpx.AsyncClient, finance: dict[str, str], contract: dict[str, Any]
) -> tuple[list[Line], Decimal, dict[str, Any]]:
    response = await client.get(
        f"/v1/contracts/{contract['id']}/invoice-preview",
        params={"period": PERIOD},
        headers=finance,
    )
    assert response.status_code == 200, response.text
    invoice = response.json()
    lines = [
        (
            line["code"],
            Decimal(line["quantity"]),
            Decimal(line["unit_price"]),
            Decimal(line["amount"]),
        )
        for line in invoice["lines"]
    ]
    return lines, Decimal(invoice["subtotal"]), invoice


async def _ingest(app: Any, events: list[dict[str, Any]]) -> None:
    outcome = await ingest_at(app, events, received=DEC)
    assert outcome.accepted == len(events), outcome


# --- 1. a per-seat developer platform -------------------------------------------------------


async def dev_platform(app: Any, client: httpx.AsyncClient, admin: dict[str, str]) -> Any:
    await create_customer(client, admin, key="acme")
    contract = await create_contract(client, admin, plan="team", starts_at=iso(NOV))
    backend = await create_key(app, scopes=["check"])
    for n in range(14):
        assert (await assign(client, backend, f"dev{n:02}")).status_code == 201
    # 12 developers all month; 2 joined on November 16 and are still members
    await _sql(app, "UPDATE seats SET assigned_at = :t", t=NOV)
    await _sql(
        app,
        "UPDATE seats SET assigned_at = :t WHERE subject IN ('dev12', 'dev13')",
        t=NOV + 15 * DAY,
    )
    jobs = []
    for day in range(30):
        at = NOV + day * DAY + 10 * HOUR
        for run in range(3):  # three 60-minute Linux pipelines a day: 5,400 minutes
            jobs.append(
                event(
                    f"ci-{day}-{run}",
                    type="ci.job.finished",
                    time=at + run * HOUR,
                    data={"os": "linux", "minutes": 60},
                )
            )
        jobs.append(  # one 20-minute Windows build a day: 600 minutes
            event(
                f"ci-{day}-win",
                type="ci.job.finished",
                time=at + 5 * HOUR,
                data={"os": "windows", "minutes": 20},
            )
        )
    storage = [  # 5 GB from the 1st, 20 GB from the 16th
        event("st-1", type="storage.measured", time=NOV, data={"gb": 5}),
        event("st-2", type="storage.measured", time=NOV + 15 * DAY, data={"gb": 20}),
    ]
    await _ingest(app, [*jobs, *storage])
    return contract


# --- 2. per-host infrastructure monitoring --------------------------------------------------


def host_reports() -> list[dict[str, Any]]:
    """One report an hour: 40 hosts (10 with APM); 44 (12 with APM) on weekdays 09:00-15:00
    when the web tier scales out; on Thursday November 12 09:00-15:00 a load test runs 90
    hosts (12 with APM)."""
    reports = []
    for h in range(720):
        at = NOV + h * HOUR
        busy = at.weekday() < 5 and 9 <= at.hour < 15
        hosts, apm = (40, 10) if not busy else (44, 12)
        if at.day == 12 and busy:
            hosts = 90
        reports.append(
            event(
                f"hosts-{h}",
                type="agent.hosts_reported",
                time=at + timedelta(minutes=5),
                data={"hosts": hosts, "apm_hosts": apm},
            )
        )
    return reports


async def host_monitoring(app: Any, client: httpx.AsyncClient, admin: dict[str, str]) -> Any:
    await create_customer(client, admin, key="acme")
    contract = await create_contract(
        client,
        admin,
        plan="pro",
        starts_at=iso(NOV),
        addons=["apm", {"name": "metrics_pack", "quantity": 3}],
    )
    metrics = [  # 420 custom series from the 1st, 480 from the 16th
        event("cm-1", type="agent.metrics_reported", time=NOV, data={"series": 420}),
        event("cm-2", type="agent.metrics_reported", time=NOV + 15 * DAY, data={"series": 480}),
    ]
    await _ingest(app, [*host_reports(), *metrics])
    return contract


# --- 3. pure usage, volume tiers, a minimum and prepaid credits -----------------------------


async def usage_api(app: Any, client: httpx.AsyncClient, admin: dict[str, str]) -> Any:
    await create_customer(client, admin, key="acme")
    contract = await create_contract(client, admin, plan="committed", starts_at=iso(NOV))
    topped = await client.post(
        "/v1/customers/acme/credits",
        json={
            "amount": "500.00",
            "kind": "purchased",
            "granted_at": iso(NOV + 4 * DAY),
            "reason": "prepaid top-up",
        },
        headers=admin,
    )
    assert topped.status_code == 201, topped.text
    # 250,000 messages: 25 daily batches of 10,000
    sends = [
        event(
            f"msg-{day}",
            type="message.sent",
            time=NOV + day * DAY + 12 * HOUR,
            data={"count": 10_000},
        )
        for day in range(25)
    ]
    await _ingest(app, sends)
    return contract


# --- 4. an on-premises enterprise licence ---------------------------------------------------


async def onprem_licence(app: Any, client: httpx.AsyncClient, admin: dict[str, str]) -> Any:
    await create_customer(client, admin, key="acme")
    contract = await create_contract(
        client,
        admin,
        plan="site",
        kind="educational",
        starts_at=iso(NOV),
        ends_at=iso(datetime(2027, 11, 1, tzinfo=UTC)),
        quantities={"seats": 25, "instances": 4},
        addons=["maintenance"],
        discount_percent=40,
        discount_reason="university site licence",
    )
    backend = await create_key(app, scopes=["check"])
    for n in range(28):
        opened = await client.post(
            "/v1/customers/acme/sessions", json={"subject": f"user{n:02}"}, headers=backend
        )
        assert opened.status_code == 201, opened.text
    for n in range(5):
        assert (await register(client, backend, f"srv-{n}", kind="server")).status_code == 201
    # 25 floating licences in use all month; 3 more users on November 18, 14:00-16:00
    await _sql(app, "UPDATE seat_sessions SET opened_at = :s, ended_at = :e", s=NOV, e=DEC)
    await _sql(
        app,
        "UPDATE seat_sessions SET opened_at = :s, ended_at = :e "
        "WHERE subject IN ('user25', 'user26', 'user27')",
        s=NOV + 17 * DAY + 14 * HOUR,
        e=NOV + 17 * DAY + 16 * HOUR,
    )
    # 4 production servers all month; a fifth (a failover copy) November 20-23
    await _sql(
        app,
        "UPDATE instances SET registered_at = :s, lease_expires_at = :e, ended_at = :e, "
        "end_reason = 'deregistered'",
        s=NOV,
        e=DEC,
    )
    await _sql(
        app,
        "UPDATE instances SET registered_at = :s, lease_expires_at = :e, ended_at = :e "
        "WHERE fingerprint = 'srv-4'",
        s=NOV + 19 * DAY,
        e=NOV + 22 * DAY,
    )
    return contract


SCENARIOS = {
    "dev_platform": dev_platform,
    "host_monitoring": host_monitoring,
    "usage_api": usage_api,
    "onprem_licence": onprem_licence,
}


def test_each_yaml_block_of_the_doc_is_its_policy_file() -> None:
    sections = doc_sections()
    assert [name for name in sections if name != "end"] == list(MODELS)
    for model in MODELS:
        assert doc_yaml(sections[model]) == policy_text(model), model


def test_the_cookbook_is_linked_from_the_readme_and_the_billing_page() -> None:
    root = DOC.parents[1]
    assert "docs/pricing-cookbook.md" in (root / "README.md").read_text()
    assert "(pricing-cookbook.md)" in (root / "docs" / "billing.md").read_text()


@pytest.mark.parametrize("model", MODELS)
async def test_the_invoice_is_the_one_worked_in_the_doc(
    model: str,
    app: Any,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    finance: dict[str, str],
) -> None:
    expected_lines, expected_subtotal = doc_invoice(doc_sections()[model])
    await _publish(client, admin, model)
    contract = await SCENARIOS[model](app, client, admin)
    lines, subtotal, invoice = await _preview(client, finance, contract)
    assert invoice["currency"] == "USD" and invoice["late"]["events"] == 0
    assert lines == expected_lines
    assert subtotal == expected_subtotal == sum(line[3] for line in lines)
    sources = {line["code"]: line["source"] for line in invoice["lines"]}
    # What the worked tables say beside the numbers.
    if model == "dev_platform":
        assert sources["seats"]["held"] == "13"
        assert sources["meter:ci_linux_minutes"]["total"] == "5400"
        assert sources["meter:storage_gb"]["total"] == "12.5"
    elif model == "host_monitoring":
        assert sources["meter:hosts"]["total"] == "44" and sources["meter:hosts"]["events"] == 720
        assert sources["addon:apm"]["total"] == "12"
        assert sources["meter:custom_metrics"]["included_by_addons"] == 300
    elif model == "usage_api":
        assert sources["meter:messages"]["reached"] == 1
        credits = sources["credits"]
        assert [(g["kind"], g["amount"]) for g in credits["grants"]] == [
            ("plan", "25.00"),
            ("purchased", "175.00"),
        ]
        assert credits["lines"] == ["meter:messages"] and credits["balance_after"] == "325.00"
    else:
        assert sources["seats_overage"]["held"] == "28"
        assert sources["instance_licences_overage"]["held"] == "5"
        assert sources["discount:educational"]["reason"] == "university site licence"
        assert sources["addon:maintenance"]["base"] == {
            "one_time:designer_licence": "75000.00",
            "one_time:server_licence": "48000.00",
        }


async def test_a_contract_from_the_12th_pays_for_the_load_test(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    """The monitoring model's note: p99 of the 456 hours from November 12 drops 4 of them,
    so the six load-test hours at 90 hosts count."""
    await _publish(client, admin, "host_monitoring")
    await create_customer(client, admin, key="acme")
    contract = await create_contract(
        client, admin, plan="pro", starts_at=iso(NOV + 11 * DAY), addons=["apm"]
    )
    await _ingest(app, host_reports())
    lines, _, _ = await _preview(client, finance, contract)
    priced = {code: (quantity, unit_price, amount) for code, quantity, unit_price, amount in lines}
    assert priced["meter:hosts"] == (Decimal(90), Decimal("15.00"), Decimal("855.00"))
    assert priced["addon:apm"] == (Decimal(12), Decimal("31.00"), Decimal("235.60"))


async def test_credits_that_apply_to_the_minimum_pay_the_true_up_too(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    """The usage model's note: with `applies_to: ["meter:*", minimum]` the wallet pays the
    messages line and the true-up, 300.00 (25.00 of the monthly grant, 275.00 of the top-up)."""
    document = policy("usage_api")
    document["plans"]["committed"]["price"]["credits"]["applies_to"] = ["meter:*", "minimum"]
    await publish_policy(client, admin, document)
    contract = await usage_api(app, client, admin)
    lines, subtotal, invoice = await _preview(client, finance, contract)
    assert lines[-1] == ("credits", Decimal("300.00"), Decimal(-1), Decimal("-300.00"))
    assert subtotal == Decimal("0.00")
    assert invoice["lines"][-1]["source"]["balance_after"] == "225.00"


async def test_a_monthly_percentage_of_an_annual_addon_is_refused_with_its_path(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """Found while writing the cookbook: a monthly percentage of a yearly add-on's line would
    count nothing in the months it is not due; it is refused, and the message says to make
    the percentage yearly (as the on-premises model's maintenance is)."""
    document = {
        "currency": "USD",
        "plans": {"site": {"price": {"base": "0"}}},
        "addons": {
            "licence": {"price": "1440.00", "interval": "year"},
            "maintenance": {"percent": 20, "of": ["addon:licence"]},
        },
    }
    created = await client.post("/v1/policies", json=document, headers=admin)
    assert created.status_code == 422, created.text
    errors = created.json()["errors"]
    assert [e["path"] for e in errors] == ["addons.maintenance.of[0]"]
    assert "billed yearly" in errors[0]["message"]
    assert "interval: year" in errors[0]["message"]


async def test_a_licence_per_bought_seat_needs_the_contract_to_say_how_many(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await _publish(client, admin, "onprem_licence")
    await create_customer(client, admin, key="acme")
    response = await client.post(
        "/v1/customers/acme/contracts",
        json={"plan": "site", "starts_at": iso(NOV), "quantities": {"instances": 4}},
        headers=admin,
    )
    assert response.status_code == 422, response.text
    errors = {e["path"]: e["message"] for e in response.json()["errors"]}
    assert "price.one_time_per.designer_licence" in errors["quantities.seats"]
