"""The portal's templates, its stylesheet, and the headers every page is sent with."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from importlib.resources import files
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse, Response

from allotment.portal import wording
from allotment.releases import notes

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


def _source(line: Any) -> str:
    """An invoice line's source in words (the CSV and the API keep its JSON)."""
    return wording.source(line.code, line.source)


ENV.filters["when"] = _when
ENV.filters["number"] = _number
ENV.filters["moment"] = wording.moment
ENV.filters["source"] = _source
ENV.filters["limit_words"] = notes.limit_words
ENV.filters["words"] = notes.words

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
