"""docdesk inside a Django project (Django 4.2 or later).

The Document Server's endpoints are one ``include``; the project's own
views ask for the editor config::

    # settings.py
    DOCDESK_PUBLIC_URL = "https://app.example.com/docdesk"
    DOCDESK_DOCUMENT_SERVER_URL = "https://ds.example.com"
    DOCDESK_JWT_SECRET = os.environ["DOCDESK_JWT_SECRET"]

    # urls.py
    urlpatterns = [path("docdesk/", include("docdesk.adapters.django")), ...]

    # views.py
    from docdesk import User
    from docdesk.adapters import django as docdesk

    async def edit(request, document_id):
        config = await docdesk.editor_config(document_id, User("ann", "Ann"))
        api_js = await docdesk.api_js_url()
        return render(request, "edit.html", {"config": config, "api_js": api_js})

Settings come from the ``DOCDESK_*`` names in Django's settings over the
same variables in the environment (see :meth:`docdesk.Settings.from_env`),
or from a :class:`~docdesk.Settings` in ``DOCDESK_SETTINGS``.

The views are async. The desk is opened on first use, once per process, on
an event loop of its own (:class:`~docdesk.adapters.runner.DeskRunner`):
under WSGI Django gives every async view a new loop, and the desk must
outlive them. Downloads stream a chunk at a time, as async iterators under
ASGI and plain ones under WSGI.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import IO, Any, TypeVar

from docdesk.adapters.endpoints import (
    MAX_CALLBACK_BYTES,
    Answer,
    DSRequest,
    Readable,
    Route,
    answer,
    file_chunks,
    headers_from,
    read_at_most,
    refusal,
    settings_from,
)
from docdesk.adapters.endpoints import api_js_url as _api_js_url
from docdesk.adapters.runner import DeskRunner
from docdesk.catalog import DocumentRecord, VersionRecord
from docdesk.desk import DocDesk
from docdesk.editor import EditorMode, User
from docdesk.errors import ConfigurationError
from docdesk.settings import Settings

try:
    from django.conf import settings as django_settings
    from django.core.handlers.asgi import ASGIRequest
    from django.http import (
        HttpRequest,
        HttpResponse,
        JsonResponse,
        StreamingHttpResponse,
    )
    from django.urls import path
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "docdesk.adapters.django needs Django: pip install 'docdesk[django]'"
    ) from exc

__all__ = [
    "api_js_url",
    "app_name",
    "call",
    "close",
    "document",
    "documents",
    "editor_config",
    "runner",
    "upload",
    "urlpatterns",
    "urls",
    "versions",
]

T = TypeVar("T")

# The Django setting that may hold a whole docdesk Settings.
SETTINGS_NAME = "DOCDESK_SETTINGS"


def load_settings() -> Settings:
    """docdesk's settings from Django's, read when the desk first opens."""
    given = getattr(django_settings, SETTINGS_NAME, None)
    if given is not None:
        if not isinstance(given, Settings):
            raise ConfigurationError(f"{SETTINGS_NAME} must be a docdesk.Settings")
        return given
    config = {
        name: getattr(django_settings, name)
        for name in dir(django_settings)
        if name.startswith("DOCDESK_") and name != SETTINGS_NAME
    }
    return settings_from(config, os.environ)


runner = DeskRunner(load_settings)
"""This process's desk; ``runner.call`` serves sync views too."""


# For the project's own views


async def editor_config(
    document_id: str,
    user: User,
    *,
    mode: EditorMode = EditorMode.EDIT,
    lang: str = "en",
) -> dict[str, Any]:
    """The signed config for ``new DocsAPI.DocEditor``, as in the service."""
    return await call(
        lambda desk: desk.editor_config(document_id, user, mode=mode, lang=lang)
    )


async def api_js_url() -> str:
    """The Document Server's ``api.js``, for the editor page's script tag."""
    return _api_js_url(await runner.asettings())


async def upload(
    file: Readable | IO[bytes],
    filename: str | None = None,
    *,
    author: User | None = None,
) -> DocumentRecord:
    """Keep an uploaded file as a new document; streamed, never whole.

    ``file`` is what ``request.FILES`` holds, or any binary file; its
    ``name`` names the document unless ``filename`` does.
    """
    name = filename or getattr(file, "name", None) or ""
    return await call(lambda desk: desk.upload(name, file_chunks(file), author=author))


async def documents() -> list[DocumentRecord]:
    return await call(lambda desk: desk.documents())


async def document(document_id: str) -> DocumentRecord:
    return await call(lambda desk: desk.document(document_id))


async def versions(document_id: str) -> list[VersionRecord]:
    return await call(lambda desk: desk.versions(document_id))


async def call(work: Callable[[DocDesk], Awaitable[T]]) -> T:
    """Run ``work(desk)`` on the desk, for anything the helpers lack."""
    return await runner.acall(work)


def close() -> None:
    """Close the desk; the next call opens it again with fresh settings."""
    runner.close()


# The Document Server's endpoints


async def ds_file(request: HttpRequest, document_id: str) -> HttpResponse:
    return await _serve(request, Route.FILE, document_id)


async def ds_callback(request: HttpRequest, document_id: str) -> HttpResponse:
    return await _serve(request, Route.CALLBACK, document_id)


async def ds_version(
    request: HttpRequest, document_id: str, number: int
) -> HttpResponse:
    return await _serve(request, Route.VERSION, document_id, number)


async def ds_changes(
    request: HttpRequest, document_id: str, number: int
) -> HttpResponse:
    return await _serve(request, Route.CHANGES, document_id, number)


async def _serve(
    request: HttpRequest, route: Route, document_id: str, number: int = 0
) -> HttpResponse:
    allowed = ("POST",) if route is Route.CALLBACK else ("GET", "HEAD")
    if request.method not in allowed:
        return JsonResponse(
            {"error": "method_not_allowed", "message": "Method Not Allowed"},
            status=405,
            headers={"Allow": ", ".join(allowed)},
        )

    ds_request = DSRequest(
        route=route,
        document_id=document_id,
        path=request.path,
        signature=request.GET.get("sig", ""),
        key=request.GET.get("key", ""),
        number=number,
        headers=headers_from(request.headers.items()),
        peer=request.META.get("REMOTE_ADDR") or None,
    )
    settings = await runner.asettings()
    refused = refusal(ds_request, settings)
    if refused is not None:
        return _response(request, refused)

    if route is Route.CALLBACK:
        body = read_at_most(request.read, MAX_CALLBACK_BYTES + 1)
        ds_request = replace(ds_request, body=body)
    answered = await runner.acall(lambda desk: answer(desk, ds_request, settings))
    return _response(request, answered)


def _response(request: HttpRequest, answered: Answer) -> HttpResponse:
    if answered.chunks is None:
        return JsonResponse(
            answered.json, status=answered.status, headers=answered.headers
        )
    # Each handler serves its own kind of iterator without a copy.
    if isinstance(request, ASGIRequest):
        streaming: Any = runner.aiterate(answered.chunks)
    else:
        streaming = runner.iterate(answered.chunks)
    return StreamingHttpResponse(
        streaming,
        status=answered.status,
        content_type=answered.media_type,
        headers=answered.headers,
    )


def _for_the_document_server(view: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a view the DS calls: no CSRF token, no signed-in user.

    Attributes, not Django's decorators: those wrap async views in sync
    functions before Django 5.0. The signed link and the DS's JWT guard
    these views instead.
    """
    view.csrf_exempt = True  # type: ignore[attr-defined]
    view.login_required = False  # type: ignore[attr-defined]
    return view


app_name = "docdesk"
urlpatterns = [
    path(
        "ds/documents/<str:document_id>/file",
        _for_the_document_server(ds_file),
        name="ds-file",
    ),
    path(
        "ds/documents/<str:document_id>/callback",
        _for_the_document_server(ds_callback),
        name="ds-callback",
    ),
    path(
        "ds/documents/<str:document_id>/versions/<int:number>/file",
        _for_the_document_server(ds_version),
        name="ds-version",
    ),
    path(
        "ds/documents/<str:document_id>/versions/<int:number>/changes",
        _for_the_document_server(ds_changes),
        name="ds-changes",
    ),
]
urls = (urlpatterns, app_name, app_name)
"""For ``path("docdesk/", docdesk.urls)``, as Django's admin is mounted."""
