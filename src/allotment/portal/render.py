"""The portal's templates, its stylesheet, and the headers every page is sent with."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from importlib.resources import files
from typing import Any

import orjson
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse, Response

ENV = Environment(
    loader=PackageLoader("allotment.portal", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(moment: datetime | str | None) -> str:
    if moment is None:
        return "—"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _number(value: Decimal | int | float | str | None) -> str:
    if value is None:
        return "—"
    number = Decimal(str(value))
    if number == number.to_integral_value():
        return f"{int(number):,}"
    return f"{number:,}"


def _plain(value: Any) -> str:
    """A line source's value as a reader sees it: nested values as compact JSON."""
    if value is None:
        return "—"
    if isinstance(value, dict | list):
        return orjson.dumps(value, default=str, option=orjson.OPT_SORT_KEYS).decode()
    return str(value)


ENV.filters["when"] = _when
ENV.filters["plain"] = _plain
ENV.filters["number"] = _number

# No script, no inline style, nothing from another origin; the link's token must not leak
# in a Referer; no page is cached (they show a customer's data).
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}

STYLESHEET = files("allotment.portal").joinpath("static/portal.css").read_bytes()


def page(template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    html = ENV.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def stylesheet() -> Response:
    return Response(
        STYLESHEET,
        media_type="text/css",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
