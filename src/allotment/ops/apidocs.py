"""The API's documentation pages, /docs (Swagger UI) and /redoc (ReDoc), served with every
asset from the package, so they render where the service has no internet (docs/api-docs.md).

FastAPI's own pages load Swagger UI and ReDoc from a CDN and render blank air-gapped. Here
the files come from `ops/static/` (copied unchanged from the npm packages `swagger-ui-dist`
and `redoc`, with their licences; `ops/static/README.md` says which versions and how to
refresh them), and each page carries a Content-Security-Policy that lets it load nothing
from any other host: ReDoc's sidebar shows its maker's logo from their CDN, and the browser
refuses it before asking.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

from allotment.deps import public

STATIC_DIR = Path(__file__).parent / "static"
STATIC_URL = "/static/apidocs"
DOCS_URL = "/docs"
REDOC_URL = "/redoc"

# Swagger UI's defaults as FastAPI sets them, and no public validator (its badge belongs to
# a layout these pages do not use: this keeps it off should the layout change).
SWAGGER_PARAMETERS = {
    "dom_id": "#swagger-ui",
    "layout": "BaseLayout",
    "deepLinking": True,
    "showExtensions": True,
    "showCommonExtensions": True,
    "validatorUrl": None,
}

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def content_security_policy(html: str) -> str:
    """Only this host, and the page's own inline scripts by their hashes. Styles may be
    inline (ReDoc writes its styles at run time) and its search runs in a blob: worker."""
    scripts = ["'self'"] + [
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
    ]
    return (
        "default-src 'none'; "
        f"script-src {' '.join(scripts)}; "
        "style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; "
        "font-src 'self' data:; "
        "connect-src 'self'; "
        "worker-src 'self' blob:; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def _page(response: HTMLResponse) -> HTMLResponse:
    """FastAPI's page with a language (screen readers need one) and its policy."""
    html = bytes(response.body).decode().replace("<html>", '<html lang="en">', 1)
    return HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": content_security_policy(html),
            "X-Content-Type-Options": "nosniff",
        },
    )


def install(app: FastAPI) -> None:
    """/docs, /redoc and their assets, for an app made with `docs_url=redoc_url=None`."""
    assert app.openapi_url is not None
    favicon = f"{STATIC_URL}/swagger-ui/favicon-32x32.png"
    # Both pages are the same for every request: built once.
    swagger = _page(
        get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{STATIC_URL}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC_URL}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=favicon,
            swagger_ui_parameters=SWAGGER_PARAMETERS,
        )
    )
    redoc = _page(
        get_redoc_html(
            openapi_url=app.openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{STATIC_URL}/redoc/redoc.standalone.js",
            redoc_favicon_url=favicon,
            with_google_fonts=False,
        )
    )
    router = APIRouter(include_in_schema=False, dependencies=[public()])

    @router.get(DOCS_URL)
    async def swagger_ui() -> HTMLResponse:
        return swagger

    @router.get(REDOC_URL)
    async def redoc_page() -> HTMLResponse:
        return redoc

    app.include_router(router)
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="apidocs")
