"""The service's pages: the document list, one document, and its editor.

The pages are rendered on the server with Jinja2, autoescaped, and read
the :class:`~docdesk.desk.DocDesk` on ``app.state`` directly. Everything a
page changes goes through the JSON API from the browser (``pages.js``), so
there is one set of write endpoints and one set of checks.

The editor page loads ``api.js`` from the Document Server the browser
reaches (the embedded simulator by default) and hands ``DocsAPI.DocEditor``
the signed config; ``docdesk.js`` answers the editor's events.

When people must sign in, ``/login`` and ``/logout`` start and end their
session (:mod:`docdesk.web.access`), and a signed-in person edits as
themselves.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from docdesk.callback import CallbackStatus, ForceSaveType
from docdesk.catalog import (
    CallbackRecord,
    DocumentRecord,
    VersionRecord,
    VersionSource,
)
from docdesk.desk import DocDesk
from docdesk.doctor import recent_checks
from docdesk.errors import ConfigurationError, DocdeskError, InvalidRequest, TooLarge
from docdesk.formats import FORMATS, format_for
from docdesk.settings import Settings
from docdesk.web.access import (
    LOGIN_PATH,
    LOGOUT_PATH,
    AccessControl,
    access_control,
    editor_request,
    safe_next,
    signed_in,
)
from docdesk.web.guard import client_address

__all__ = ["API_JS_PATH", "PAGE_ROUTES", "made_by", "status_words"]

logger = logging.getLogger(__name__)

# Where every Document Server serves its editor script, under its base URL.
API_JS_PATH = "/web-apps/apps/api/documents/api.js"
# Who edits when nobody signed in and the page is not told.
# The blank documents the list page offers, in the DS's document types' order.
BLANK_FORMATS = ("docx", "xlsx", "pptx")
# A sign-in form is a few short fields: anything bigger is not one.
MAX_LOGIN_BYTES = 8192

environment = Environment(
    loader=PackageLoader("docdesk.web", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


# What the pages say about versions and callbacks


def made_by(version: VersionRecord) -> str:
    """What made a version, in the words a person uses."""
    source = version.source
    if source is VersionSource.FORCESAVE:
        return _FORCESAVE_WORDS.get(version.forcesave_type, "Force save")
    if source is VersionSource.RESTORE and version.restored_from is not None:
        return f"Restore of version {version.restored_from}"
    return _SOURCE_WORDS[source]


_SOURCE_WORDS = {
    VersionSource.UPLOAD: "Upload",
    VersionSource.NEW: "New blank document",
    VersionSource.SAVE: "Editor save",
    VersionSource.FORCESAVE: "Force save",
    VersionSource.RESTORE: "Restore",
    VersionSource.RECOVERY: "Recovery",
}

_FORCESAVE_WORDS: dict[int | None, str] = {
    ForceSaveType.COMMAND: "Capture",
    ForceSaveType.BUTTON: "Save button",
    ForceSaveType.TIMER: "Timed save",
    ForceSaveType.FORM: "Form submitted",
}


def status_words(status: int | None) -> str:
    """A callback ``status``, its number and what the DS means by it."""
    if status is None:
        return "unreadable"
    try:
        return f"{status} {_STATUS_WORDS[CallbackStatus(status)]}"
    except ValueError:
        return f"{status} unknown"


_STATUS_WORDS = {
    CallbackStatus.EDITING: "editing",
    CallbackStatus.MUST_SAVE: "ready to save",
    CallbackStatus.CORRUPTED: "save failed",
    CallbackStatus.CLOSED: "closed, no changes",
    CallbackStatus.MAIL_MERGE: "mail merge",
    CallbackStatus.MUST_FORCE_SAVE: "force save",
    CallbackStatus.CORRUPTED_FORCE_SAVE: "force save failed",
}


def _size(size: int) -> str:
    amount = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            break
        amount /= 1024
    return f"{size} bytes" if unit == "bytes" else f"{amount:.1f} {unit}"


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


environment.filters["size"] = _size
environment.filters["when"] = _when


# What the templates get: plain rows, worked out here rather than in Jinja.


@dataclass(frozen=True)
class _VersionRow:
    number: int
    created: datetime
    author: str
    size: int
    made_by: str
    current: bool


@dataclass(frozen=True)
class _CallbackRow:
    received: datetime
    status: str
    outcome: str
    detail: str
    version: int | None
    http_status: int
    duration_ms: float
    source: str
    key: str


def _version_rows(versions: Iterable[VersionRecord], current: int) -> list[_VersionRow]:
    rows = [
        _VersionRow(
            number=v.number,
            created=v.created,
            author=v.author_name or v.author_id or "",
            size=v.size,
            made_by=made_by(v),
            current=v.number == current,
        )
        for v in versions
    ]
    return sorted(rows, key=lambda row: row.number, reverse=True)


def _callback_rows(records: Iterable[CallbackRecord]) -> list[_CallbackRow]:
    return [
        _CallbackRow(
            received=r.received,
            status=status_words(r.status),
            outcome=r.outcome,
            detail=r.detail or "",
            version=r.version,
            http_status=r.http_status,
            duration_ms=r.duration_ms,
            source=r.source or "",
            # The key names a DS cache entry; its start is enough to tell
            # sessions apart.
            key=(r.key or "")[:8],
        )
        for r in records
    ]


def _document_view(document: DocumentRecord) -> dict[str, Any]:
    return {
        "id": document.id,
        "title": document.title,
        "file_type": document.file_type,
        "document_type": str(format_for(document.file_type).document_type),
        "version": document.current_version,
        "size": document.size,
        "updated": document.updated,
        "editors": list(document.editors),
    }


# The pages


async def status_page(request: Request) -> Response:
    """The doctor's checks as a panel: what /api/health answers, for people."""
    checks = await recent_checks(request)
    return _render(
        "status.html",
        checks=checks,
        ok=checks is not None and all(check.ok for check in checks),
        viewer=signed_in(request.scope),
    )


async def document_list(request: Request) -> Response:
    documents = await _desk(request).documents()
    return _render(
        "index.html",
        documents=[_document_view(d) for d in documents],
        blank_formats=BLANK_FORMATS,
        accept=",".join(f".{extension}" for extension in sorted(FORMATS)),
        viewer=signed_in(request.scope),
    )


async def document_page(request: Request) -> Response:
    desk = _desk(request)
    document = await desk.document(request.path_params["id"])
    versions = await desk.versions(document.id)
    callbacks = await desk.catalog.callback_log(document.id)
    return _render(
        "document.html",
        document=_document_view(document),
        versions=_version_rows(versions, document.current_version),
        callbacks=_callback_rows(callbacks),
        viewer=signed_in(request.scope),
    )


async def edit_page(request: Request) -> Response:
    mode, user = editor_request(request)

    desk = _desk(request)
    document = await desk.document(request.path_params["id"])
    config = await desk.editor_config(document.id, user, mode=mode)
    return _render(
        "edit.html",
        document=_document_view(document),
        config=config,
        user=user,
        mode=str(mode),
        api_url=_settings(request).effective_document_server_url.rstrip("/")
        + API_JS_PATH,
        viewer=signed_in(request.scope),
    )


# Signing in and out


async def login_form(request: Request) -> Response:
    gate = _sign_in_gate(request)
    if gate is None:
        return _no_sign_in()
    wanted = safe_next(request.query_params.get("next"))
    return _render("login.html", next=wanted, user_id="", failed=False)


async def login(request: Request) -> Response:
    """Check the id and password; on success set the cookie and go on."""
    gate = _sign_in_gate(request)
    if gate is None:
        return _no_sign_in()
    fields = await _form_fields(request)
    user_id, password = fields.get("user_id", ""), fields.get("password", "")
    wanted = safe_next(fields.get("next"))

    user_id = user_id.strip()
    address = client_address(request.scope, request.app.state.trusted_proxies)
    wait = gate.sign_in_wait(user_id, address)
    if wait:
        return _render(
            "login.html",
            status_code=429,
            headers={"Retry-After": str(wait)},
            next=wanted,
            user_id=user_id[:128],
            failed=False,
            wait_minutes=math.ceil(wait / 60),
        )

    user = await gate.sign_in(user_id, password, address)
    if user is None:
        return _render(
            "login.html",
            status_code=401,
            next=wanted,
            user_id=user_id[:128],
            failed=True,
        )

    response = RedirectResponse(wanted, status_code=303)
    gate.start_session(response, user, request.scope)
    return response


async def logout(request: Request) -> Response:
    gate = _sign_in_gate(request)
    if gate is None:
        return _no_sign_in()
    response = RedirectResponse(LOGIN_PATH, status_code=303)
    gate.end_session(response, request.scope)
    return response


def _sign_in_gate(request: Request) -> AccessControl | None:
    gate = access_control(request.scope)
    return None if gate is None or gate.open_access else gate


def _no_sign_in() -> Response:
    return _render(
        "error.html",
        status_code=404,
        status=404,
        message="This docdesk has no sign-in: nobody is asked who they are.",
    )


async def _form_fields(request: Request) -> dict[str, str]:
    """A small url-encoded form's fields, the first value of each."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOGIN_BYTES:
            raise TooLarge(f"a sign-in form has at most {MAX_LOGIN_BYTES} bytes")
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=8)
    except ValueError:
        raise InvalidRequest("the sign-in form is not a url-encoded form") from None
    return {name: values[0] for name, values in fields.items()}


Page = Callable[[Request], Awaitable[Response]]


def _guarded(page: Page) -> Page:
    """The page, or an error page for what the reader asked wrongly.

    The app's own handler answers errors in JSON, which suits the API but
    not a person following a link to a deleted document.
    """

    async def handler(request: Request) -> Response:
        try:
            return await page(request)
        except DocdeskError as exc:
            if exc.status_code >= 500:
                raise
            return _render(
                "error.html",
                status_code=exc.status_code,
                status=exc.status_code,
                message=exc.message,
            )

    handler.__name__ = page.__name__
    return handler


def _render(
    name: str,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Response:
    html = environment.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=headers)


def _desk(request: Request) -> DocDesk:
    desk: DocDesk = request.app.state.desk
    return desk


def _settings(request: Request) -> Settings:
    settings: Settings | None = getattr(request.app.state, "settings", None)
    if settings is None:
        # An app built around a ready DocDesk has no settings to name the DS.
        raise ConfigurationError("the editor page needs the app's Settings")
    return settings


PAGE_ROUTES: list[BaseRoute] = [
    Route("/", _guarded(document_list), methods=["GET"], name="documents"),
    Route("/status", _guarded(status_page), methods=["GET"], name="status"),
    Route("/documents/{id}", _guarded(document_page), methods=["GET"], name="document"),
    Route("/documents/{id}/edit", _guarded(edit_page), methods=["GET"], name="editor"),
    Route(LOGIN_PATH, login_form, methods=["GET"], name="login"),
    Route(LOGIN_PATH, login, methods=["POST"]),
    Route(LOGOUT_PATH, logout, methods=["POST"], name="logout"),
    Mount(
        "/static", app=StaticFiles(packages=[("docdesk.web", "static")]), name="static"
    ),
]
