"""The portal's HTML routes: sign-in by one-time link, the pages, their forms, sign-out.

    GET  /portal/login?token=…                  spend a link, set the session cookie
    POST /portal/logout                         end the session (CSRF)
    GET  /portal                                → the session's customer, or a sign-in page
    GET  /portal/customers/{key}[/<page>]       the pages (portal/views.py gathers them)
    POST /portal/customers/{key}/seats/release  release one seat (CSRF)

Every route is `public()` to the API-key guard: a page is authorised by its session cookie
instead (`Viewer`), and sees its own customer only; another customer's URL is a 404. Any
refusal, on any route here, is an HTML page with its status, never problem+json or a trace.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlencode

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from starlette.responses import RedirectResponse, Response
from starlette.routing import Match

from allotment.billing import service as billing
from allotment.db import session_scope
from allotment.deps import SessionDep, SettingsDep, public
from allotment.errors import AllotmentError
from allotment.kit.clock import isoformat, utcnow
from allotment.kit.identifiers import MAX_SUBJECT, Subject
from allotment.portal import access, render, views
from allotment.portal.models import PortalSession
from allotment.seats import service as seats

log = structlog.get_logger("allotment.portal")

PREFIX = "/portal/"
COOKIE = "allotment_portal"
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 4096
SUBJECT = TypeAdapter(Subject)  # the API's one definition of a subject (docs/seats.md)
# GET routes that answer no HEAD: a link checker must not spend a link, and a HEAD on an
# unknown path is the last route's (a 404, or a 405 naming the methods the path takes).
NO_HEAD = frozenset({"portal_login", "other_page"})


class Refusal(Exception):
    """A page that cannot be shown, rendered as an HTML page with `status`."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


def refusal_page(status: int, title: str, message: str, home: str | None = None) -> Response:
    """A refusal as a page with a way on: a link back to `home`, the overview of the
    browser's live session, or else how to get a new link (docs/portal.md, "Errors")."""
    return render.page(
        "message.html",
        status=status,
        title=title,
        message=message,
        home=home,
        retry=status >= 500,
        customer=None,
        csrf=None,
    )


async def home_of(request: Request) -> str | None:
    """The overview of the browser's live session, if it has one, for a refusal page's link
    back; None without one, or when it cannot be told (the store is down)."""
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    try:
        async with session_scope(request.app.state.sessionmaker) as session:
            found = await access.session_of(session, token=token, now=utcnow())
    except Exception:  # the refusal must still be shown: without the link, then
        log.warning("portal_home_unknown", path=request.url.path, exc_info=True)
        return None
    return None if found is None else _home(found.customer_key)


class PortalRoute(APIRoute):
    """Routes whose every refusal is an HTML page; a page also answers HEAD (no body)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        if self.methods is not None and "GET" in self.methods and self.name not in NO_HEAD:
            self.methods.add("HEAD")

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            response = await self._answer(handler, request)
            if request.method == "HEAD":
                # The GET's headers, its Content-Length too, and no body.
                return Response(status_code=response.status_code, headers=response.headers)
            return response

        return handle

    @staticmethod
    async def _answer(
        handler: Callable[[Request], Coroutine[Any, Any, Response]], request: Request
    ) -> Response:
        try:
            return await handler(request)
        except (Refusal, access.LinkRefused) as exc:
            return refusal_page(exc.status, exc.title, exc.message, await home_of(request))
        except RequestValidationError:
            return refusal_page(404, "Not found", "There is no such page.", await home_of(request))
        except AllotmentError as exc:
            home = await home_of(request) if exc.status < 500 else None
            response = refusal_page(exc.status, exc.title, exc.message, home)
            response.headers.update(exc.headers)
            return response
        except Exception:
            log.exception("portal_page_failed", path=request.url.path)
            request_id = getattr(request.state, "request_id", None) or "unknown"
            return refusal_page(
                500,
                "Something went wrong",
                f"The page could not be shown. Quote request id {request_id} when you report it.",
            )


router = APIRouter(route_class=PortalRoute, include_in_schema=False, dependencies=[public()])


@dataclass(frozen=True)
class Viewer:
    """The signed-in browser: its session, and the CSRF token its forms carry."""

    portal_session: PortalSession
    csrf: str

    @property
    def customer(self) -> str:
        return self.portal_session.customer_key

    @property
    def actor(self) -> str:
        return f"portal:{self.portal_session.id}"


async def _signed_in(request: Request, session: SessionDep) -> Viewer:
    token = request.cookies.get(COOKIE)
    found = await access.session_of(session, token=token, now=utcnow())
    if found is None or token is None:
        raise Refusal(401, "Signed out", "Your portal session has ended, or this browser has none.")
    return Viewer(portal_session=found, csrf=access.csrf_token(token))


async def _viewer(key: str, viewer: Annotated[Viewer, Depends(_signed_in)]) -> Viewer:
    if key != viewer.customer:  # another customer's page: as if it did not exist
        raise Refusal(404, "Not found", "There is no such page.")
    return viewer


SignedIn = Annotated[Viewer, Depends(_signed_in)]
ViewerDep = Annotated[Viewer, Depends(_viewer)]


async def _form(request: Request, viewer: Viewer) -> dict[str, str]:
    """The posted form, once its CSRF token is found to be the session's."""
    body = await request.body()
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and media_type != FORM_TYPE:
        raise Refusal(415, "Not a form", "Send the form as application/x-www-form-urlencoded.")
    if len(body) > MAX_FORM_BYTES:
        raise Refusal(413, "Form too large", f"A portal form is at most {MAX_FORM_BYTES} bytes.")
    fields = {
        name: values[0]
        for name, values in parse_qs(body.decode("utf-8", "replace")).items()
        if values
    }
    token = request.cookies.get(COOKIE)
    if token is None or not access.csrf_matches(token, fields.get("csrf")):
        raise Refusal(
            403,
            "Form refused",
            "The form's security token does not match this session. Reload the page and try again.",
        )
    return fields


def _home(key: str) -> str:
    return f"/portal/customers/{quote(key)}"


@router.get("/portal/login", name="portal_login")
async def login(
    request: Request, session: SessionDep, settings: SettingsDep, token: str = ""
) -> Response:
    secret, opened = await access.redeem(
        session, token=token, ttl_s=settings.portal_session_ttl_s, now=utcnow()
    )
    response = RedirectResponse(_home(opened.customer_key), status_code=303)
    response.set_cookie(
        COOKIE,
        secret,
        max_age=settings.portal_session_ttl_s,
        path="/portal",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    response.headers.update({"Referrer-Policy": "no-referrer", "Cache-Control": "no-store"})
    return response


@router.post("/portal/logout")
async def logout(request: Request, session: SessionDep, viewer: SignedIn) -> Response:
    await _form(request, viewer)
    await access.end(session, portal_session=viewer.portal_session, now=utcnow())
    response = render.page(
        "message.html", title="Signed out", message="You are signed out.", customer=None, csrf=None
    )
    response.delete_cookie(COOKIE, path="/portal", httponly=True, samesite="strict")
    return response


@router.get("/portal/static/portal.css")
async def stylesheet() -> Response:
    return render.stylesheet()


@router.get("/portal")
async def home(viewer: SignedIn) -> Response:
    return RedirectResponse(_home(viewer.customer), status_code=303)


def _show(template: str, viewer: Viewer, page: str, context: dict[str, Any]) -> Response:
    return render.page(template, customer=viewer.customer, csrf=viewer.csrf, page=page, **context)


@router.get("/portal/customers/{key}")
async def overview(request: Request, session: SessionDep, viewer: ViewerDep) -> Response:
    context = await views.overview(session, request.app.state.checker, viewer.customer, utcnow())
    return _show("overview.html", viewer, "overview", context)


@router.get("/portal/customers/{key}/entitlements")
async def entitlements(request: Request, viewer: ViewerDep) -> Response:
    context = await views.entitlement_list(request.app.state.checker, viewer.customer, utcnow())
    return _show("entitlements.html", viewer, "entitlements", context)


@router.get("/portal/customers/{key}/graph")
async def feature_graph(request: Request, viewer: ViewerDep) -> Response:
    context = await views.feature_graph(request.app.state.checker, viewer.customer, utcnow())
    return _show("graph.html", viewer, "graph", context)


@router.get("/portal/customers/{key}/usage")
async def usage(request: Request, session: SessionDep, viewer: ViewerDep) -> Response:
    context = await views.usage(session, request.app.state.checker, viewer.customer, utcnow())
    return _show("usage.html", viewer, "usage", context)


@router.get("/portal/customers/{key}/seats")
async def seat_list(
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
    cursor: str | None = None,
    released: str | None = None,
    notice: str | None = None,
) -> Response:
    context = await views.seats_page(
        session,
        request.app.state.checker,
        customer=viewer.customer,
        customer_id=viewer.portal_session.customer_id,
        now=utcnow(),
        cursor=cursor,
    )
    # The notice is shown only for a release this session made just now, never for any
    # text a link puts in the query.
    token = request.cookies.get(COOKIE, "")
    genuine = released is not None and access.notice_is_genuine(token, released, notice, utcnow())
    return _show(
        "seats.html", viewer, "seats", {**context, "released": released if genuine else None}
    )


@router.post("/portal/customers/{key}/seats/release")
async def release_seat(request: Request, session: SessionDep, viewer: ViewerDep) -> Response:
    fields = await _form(request, viewer)
    subject = fields.get("subject", "")
    if not subject:
        raise Refusal(422, "No seat chosen", "Choose the seat holder to release.")
    try:
        SUBJECT.validate_python(subject)
    except ValidationError:
        raise Refusal(
            422,
            "Not a seat holder",
            f"A seat holder's name is 1 to {MAX_SUBJECT} characters and holds no NUL "
            "character; this one is not. Choose the seat holder from the list.",
        ) from None
    await seats.release(session, customer_key=viewer.customer, subject=subject, actor=viewer.actor)
    notice = access.release_notice(request.cookies.get(COOKIE, ""), subject, utcnow())
    query = urlencode({"released": subject, "notice": notice})
    return RedirectResponse(f"{_home(viewer.customer)}/seats?{query}", status_code=303)


@router.get("/portal/customers/{key}/instances")
async def instance_list(
    request: Request, session: SessionDep, viewer: ViewerDep, cursor: str | None = None
) -> Response:
    context = await views.instances_page(
        session, request.app.state.checker, viewer.customer, utcnow(), cursor
    )
    return _show("instances.html", viewer, "instances", context)


@router.get("/portal/customers/{key}/invoice")
async def invoice(request: Request, session: SessionDep, viewer: ViewerDep) -> Response:
    context = await views.invoice_page(
        session, request.app.state.checker, viewer.customer, utcnow()
    )
    return _show("invoice.html", viewer, "invoice", context)


@router.get("/portal/customers/{key}/invoice.csv")
async def invoice_csv(request: Request, session: SessionDep, viewer: ViewerDep) -> Response:
    context = await views.invoice_page(
        session, request.app.state.checker, viewer.customer, utcnow()
    )
    found = context["invoice"]
    if found is None:
        raise Refusal(404, "No invoice", "No contract is in force, so there is no invoice.")
    name = f"invoice-{viewer.customer}-{found.period}.csv"
    return Response(
        billing.csv_lines(found),
        media_type="text/csv",
        headers={
            **render.HEADERS,
            "Content-Disposition": f'attachment; filename="{name}"',
            "Allotment-As-Of": isoformat(found.as_of),
        },
    )


@router.get("/portal/customers/{key}/releases")
async def release_notes(session: SessionDep, viewer: ViewerDep) -> Response:
    context = await views.release_notes(session, viewer.customer)
    return _show("releases.html", viewer, "releases", context)


def body_refusal(status: int, detail: str, path: str) -> Response:
    """The body guard's refusals (too large, a malformed request line) on portal paths, as
    pages. The guard lets any content type through here: the form routes check their own.
    Its way back is /portal, which takes a signed-in browser to its overview."""
    return refusal_page(status, "Request refused", detail, "/portal")


EVERY_METHOD = ["GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"]


@router.api_route("/portal", methods=EVERY_METHOD)
@router.api_route("/portal/{rest:path}", methods=EVERY_METHOD)
async def other_page(request: Request, rest: str = "") -> Response:
    """Last of the portal's routes: a path no route has is a 404 page; a method the path's
    routes do not take is a 405 page naming those they take (GET on a form's POST route
    included). `/portal/` is `/portal`."""
    if request.url.path == "/portal/" and request.method == "GET":
        return RedirectResponse("/portal", status_code=303)
    allowed: set[str] = set()
    for route in router.routes:
        if not isinstance(route, PortalRoute) or route.endpoint is other_page:
            continue
        if route.matches(request.scope)[0] is not Match.NONE:
            allowed |= route.methods or set()
    home = await home_of(request)
    if not allowed:
        return refusal_page(404, "Not found", "There is no such page.", home)
    allow = ", ".join(sorted(allowed))
    response = refusal_page(
        405, "Method not allowed", f"This page takes {allow}, not {request.method}.", home
    )
    response.headers["Allow"] = allow
    return response
