"""The docdesk service as a Starlette application.

Two kinds of route: the JSON API for people and their programs, and the
DS-facing routes under ``/ds/`` that the Document Server calls with the
links in an editor config. Requests are parsed here and handed to
:class:`~docdesk.desk.DocDesk`; nothing past this module sees a request.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from docdesk.callback import MAX_CALLBACK_BYTES
from docdesk.catalog import VersionRecord
from docdesk.desk import DocDesk
from docdesk.doctor import PROBE_PATH, health_handler, probe_handler
from docdesk.errors import DocdeskError, InvalidRequest, TooLarge
from docdesk.formats import format_for
from docdesk.logs import RequestIdMiddleware
from docdesk.metrics import MISSING_EXTRA
from docdesk.recovery import (
    background_recovery,
    list_recoveries,
    recovery_json,
    restore_recovery,
)
from docdesk.settings import SIMULATOR_PATH, Settings
from docdesk.shapes import callback_json, document_json, version_json
from docdesk.simulator import Simulator, SimulatorSettings, create_simulator_app
from docdesk.web.access import AccessControl, editor_request
from docdesk.web.guard import DocumentServerGuard, client_address
from docdesk.web.pages import PAGE_ROUTES

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

READ_CHUNK = 262_144
# How long a capture waits for its force-save callback.
CAPTURE_WAIT = 30.0


def create_app(
    settings: Settings | None = None,
    *,
    desk: DocDesk | None = None,
    simulator_settings: SimulatorSettings | None = None,
) -> Starlette:
    """The service; it opens a DocDesk from ``settings`` unless given one.

    With no Document Server in ``settings`` the simulator is mounted at
    SIMULATOR_PATH, sharing the settings' secret; ``simulator_settings``
    changes how it behaves, as tests do to shorten its delays.
    """
    if settings is None and desk is None:
        settings = Settings.from_env()

    # The pages before the API: "/" is the library page, not the API's index.
    # The callback before both: the busiest route, matched by no other, so
    # it is not tried against forty patterns first.
    routes: list[BaseRoute] = [CALLBACK_ROUTE, *PAGE_ROUTES, *ROUTES]
    simulator = None
    if settings is not None and settings.uses_simulator:
        simulator = Simulator(
            simulator_settings
            or SimulatorSettings(
                secret=settings.jwt_secret, jwt_header=settings.jwt_header
            )
        )
        simulator_app = create_simulator_app(simulator.settings, simulator=simulator)
        routes.append(Mount(SIMULATOR_PATH, app=simulator_app))

    allow = settings.callback_allow if settings else ()
    trusted = settings.trusted_proxies if settings else ()
    recovery_interval = settings.recovery_interval if settings else 0.0

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        opened = desk or await DocDesk.open(settings)  # type: ignore[arg-type]
        app.state.desk = opened
        try:
            async with background_recovery(opened, every=recovery_interval):
                yield
        finally:
            # A mounted app's own lifespan never runs: close it here.
            if simulator is not None:
                await simulator.aclose()
            if desk is None:
                await opened.close()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(RequestLog),
            Middleware(DocumentServerGuard, allow=allow, trusted_proxies=trusted),
            Middleware(AccessControl.for_settings, settings),
        ],
        exception_handlers={
            DocdeskError: _docdesk_error,
            HTTPException: _http_error,
        },
    )
    app.state.settings = settings
    app.state.trusted_proxies = trusted
    return app


def _desk(request: Request) -> DocDesk:
    desk: DocDesk = request.app.state.desk
    return desk


# The JSON API


async def metrics(request: Request) -> Response:
    """Prometheus' text format; the catalog's figures are read on each scrape."""
    desk = _desk(request)
    if not desk.metrics.available:
        return PlainTextResponse(MISSING_EXTRA, status_code=501)
    body, content_type = await desk.metrics.render(desk.catalog)
    return Response(body, media_type=content_type)


async def list_documents(request: Request) -> Response:
    documents = await _desk(request).documents()
    return JSONResponse({"documents": [document_json(d) for d in documents]})


async def upload(request: Request) -> Response:
    desk = _desk(request)
    async with _uploaded_file(request, desk.max_upload_bytes) as file:
        document = await desk.upload(file.filename or "", _chunks(file))
    return JSONResponse(document_json(document), status_code=201)


async def create_blank(request: Request) -> Response:
    body = await _json_object(request)
    title, extension = body.get("title", ""), body.get("format", "docx")
    if not isinstance(title, str) or not isinstance(extension, str):
        raise InvalidRequest("'title' and 'format' must be strings")
    document = await _desk(request).create(title, extension.lower().lstrip("."))
    return JSONResponse(document_json(document), status_code=201)


async def get_document(request: Request) -> Response:
    document = await _desk(request).document(request.path_params["id"])
    return JSONResponse(document_json(document))


async def delete_document(request: Request) -> Response:
    await _desk(request).delete(request.path_params["id"])
    return Response(status_code=204)


async def document_content(request: Request) -> Response:
    desk = _desk(request)
    document = await desk.document(request.path_params["id"])
    version = await desk.version(document.id, document.current_version)
    return _file_response(desk, version, document.title)


async def list_versions(request: Request) -> Response:
    versions = await _desk(request).versions(request.path_params["id"])
    return JSONResponse({"versions": [version_json(v) for v in versions]})


async def add_version(request: Request) -> Response:
    desk = _desk(request)
    async with _uploaded_file(request, desk.max_upload_bytes) as file:
        version = await desk.add_version(request.path_params["id"], _chunks(file))
    return JSONResponse(version_json(version), status_code=201)


async def version_content(request: Request) -> Response:
    desk = _desk(request)
    document = await desk.document(request.path_params["id"])
    version = await desk.version(document.id, request.path_params["number"])
    stem = document.title.rpartition(".")[0] or document.title
    return _file_response(
        desk, version, f"{stem} v{version.number}.{version.file_type}"
    )


async def restore_version(request: Request) -> Response:
    desk = _desk(request)
    version = await desk.restore(
        request.path_params["id"], request.path_params["number"]
    )
    return JSONResponse(version_json(version), status_code=201)


async def editor_config(request: Request) -> Response:
    mode, user = editor_request(request)
    config = await _desk(request).editor_config(
        request.path_params["id"],
        user,
        mode=mode,
        lang=request.query_params.get("lang", "en"),
    )
    return JSONResponse(config)


async def capture(request: Request) -> Response:
    """Force-save now; answer the document with the version it produced."""
    desk = _desk(request)
    captured = await desk.capture(request.path_params["id"], wait=CAPTURE_WAIT)
    document = await desk.document(request.path_params["id"])
    body = document_json(document)
    body["version"] = captured.version.number
    body["capture"] = {"outcome": captured.outcome}
    return JSONResponse(body)


async def history(request: Request) -> Response:
    return JSONResponse(await _desk(request).history(request.path_params["id"]))


async def history_data(request: Request) -> Response:
    desk = _desk(request)
    data = await desk.history_data(
        request.path_params["id"], request.path_params["number"]
    )
    return JSONResponse(data)


async def rename(request: Request) -> Response:
    title = (await _json_object(request)).get("title")
    if not isinstance(title, str):
        raise InvalidRequest("'title' must be a string")
    document = await _desk(request).rename(request.path_params["id"], title)
    return JSONResponse(document_json(document))


async def copy(request: Request) -> Response:
    title = (await _json_object(request)).get("title")
    if title is not None and not isinstance(title, str):
        raise InvalidRequest("'title' must be a string")
    document = await _desk(request).copy(request.path_params["id"], title)
    return JSONResponse(document_json(document), status_code=201)


async def list_recovery(request: Request) -> Response:
    """The files kept aside from status 3 and 7, of one document if asked."""
    document_id = request.query_params.get("document_id") or None
    records = await list_recoveries(_desk(request), document_id)
    return JSONResponse({"recoveries": [recovery_json(r) for r in records]})


async def restore_kept_file(request: Request) -> Response:
    version = await restore_recovery(_desk(request), request.path_params["id"])
    return JSONResponse(version_json(version), status_code=201)


async def callback_log(request: Request) -> Response:
    desk = _desk(request)
    document = await desk.document(request.path_params["id"])
    records = await desk.catalog.callback_log(document.id)
    return JSONResponse({"callbacks": [callback_json(r) for r in records]})


# What the Document Server calls


async def ds_file(request: Request) -> Response:
    desk = _desk(request)
    version, chunks = await desk.open_file(
        request.path_params["id"],
        request.query_params.get("key", ""),
        request.query_params.get("sig", ""),
        request.headers,
    )
    return StreamingResponse(
        chunks,
        media_type=format_for(version.file_type).mime_type,
        headers={"Content-Length": str(version.size)},
    )


async def ds_version(request: Request) -> Response:
    return await _history_file(request, changes=False)


async def ds_changes(request: Request) -> Response:
    # The editor fetches the changes from its own frame, across origins.
    response = await _history_file(request, changes=True)
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


async def _history_file(request: Request, *, changes: bool) -> Response:
    version, chunks = await _desk(request).open_version(
        request.path_params["id"],
        request.path_params["number"],
        request.query_params.get("sig", ""),
        changes=changes,
    )
    media_type = (
        "application/zip" if changes else format_for(version.file_type).mime_type
    )
    return StreamingResponse(chunks, media_type=media_type)


async def ds_callback(request: Request) -> Response:
    body = await _read_body(request, MAX_CALLBACK_BYTES + 1)
    reply = await _desk(request).handle_callback(
        request.path_params["id"],
        request.query_params.get("sig", ""),
        body,
        request.headers,
        source=client_address(request.scope, request.app.state.trusted_proxies),
    )
    return JSONResponse(reply.body(), status_code=reply.http_status)


CALLBACK_ROUTE = Route("/ds/documents/{id}/callback", ds_callback, methods=["POST"])
ROUTES = [
    Route("/metrics", metrics, methods=["GET"]),
    Route("/api/health", health_handler, methods=["GET"]),
    Route(PROBE_PATH, probe_handler, methods=["GET"]),
    Route("/api/documents", list_documents, methods=["GET"]),
    Route("/api/documents", upload, methods=["POST"]),
    Route("/api/documents/new", create_blank, methods=["POST"]),
    Route("/api/documents/{id}", get_document, methods=["GET"]),
    Route("/api/documents/{id}", delete_document, methods=["DELETE"]),
    Route("/api/documents/{id}/content", document_content, methods=["GET"]),
    Route("/api/documents/{id}/versions", list_versions, methods=["GET"]),
    Route("/api/documents/{id}/versions", add_version, methods=["POST"]),
    Route(
        "/api/documents/{id}/versions/{number:int}/content",
        version_content,
        methods=["GET"],
    ),
    Route(
        "/api/documents/{id}/versions/{number:int}/restore",
        restore_version,
        methods=["POST"],
    ),
    Route("/api/documents/{id}/editor-config", editor_config, methods=["GET"]),
    Route("/api/documents/{id}/callbacks", callback_log, methods=["GET"]),
    Route("/api/documents/{id}/capture", capture, methods=["POST"]),
    Route("/api/documents/{id}/history", history, methods=["GET"]),
    Route("/api/documents/{id}/history/{number:int}", history_data, methods=["GET"]),
    Route("/api/documents/{id}/rename", rename, methods=["POST"]),
    Route("/api/documents/{id}/copy", copy, methods=["POST"]),
    Route("/api/recovery", list_recovery, methods=["GET"]),
    Route("/api/recovery/{id:int}/restore", restore_kept_file, methods=["POST"]),
    Route("/ds/documents/{id}/file", ds_file, methods=["GET"]),
    Route("/ds/documents/{id}/versions/{number:int}/file", ds_version, methods=["GET"]),
    Route(
        "/ds/documents/{id}/versions/{number:int}/changes",
        ds_changes,
        methods=["GET"],
    ),
]


def _file_response(desk: DocDesk, version: VersionRecord, filename: str) -> Response:
    return StreamingResponse(
        desk.read(version),
        media_type=format_for(version.file_type).mime_type,
        headers={
            "Content-Length": str(version.size),
            "Content-Disposition": _attachment(filename),
            "ETag": f'"{version.sha256}"',
        },
    )


def _attachment(filename: str) -> str:
    fallback = filename.encode("ascii", "replace").decode().replace('"', "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename)}"


# Reading requests


async def _read_body(request: Request, limit: int) -> bytes:
    """At most ``limit`` bytes of the body; the caller judges what is too much."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk[: limit - len(body)]
        if len(body) >= limit:
            break
    return bytes(body)


async def _json_object(request: Request) -> dict[str, Any]:
    body = await _read_body(request, 65_536)
    try:
        value = json.loads(body)
    # 64 KiB of "[" nests deeper than the parser's recursion limit.
    except (ValueError, RecursionError):
        raise InvalidRequest("the body is not JSON") from None
    if not isinstance(value, dict):
        raise InvalidRequest("the body is not a JSON object")
    return value


class _CappedRequest(Request):
    """A request whose body stream stops with TooLarge past a cap."""

    cap: int = 0

    async def stream(self) -> AsyncIterator[bytes]:  # type: ignore[override]
        seen = 0
        async for chunk in super().stream():
            seen += len(chunk)
            if seen > self.cap:
                raise TooLarge(f"the upload is larger than {self.cap} bytes")
            yield chunk


@asynccontextmanager
async def _uploaded_file(request: Request, cap: int) -> AsyncIterator[UploadFile]:
    """The multipart ``file`` field, spooled to disk past 1 MiB, size-capped."""
    capped = _CappedRequest(request.scope, request.receive)
    capped.cap = cap + 65_536  # the multipart framing around the file
    try:
        form = await capped.form(max_files=1, max_fields=8)
    except TooLarge:
        raise
    except Exception as exc:
        raise InvalidRequest(f"the upload is not valid multipart: {exc}") from None
    try:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise InvalidRequest("the upload needs a multipart field named 'file'")
        yield file
    finally:
        await form.close()


async def _chunks(file: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await file.read(READ_CHUNK):
        yield chunk


# Errors and the request log


async def _docdesk_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DocdeskError)
    if exc.status_code >= 500:
        logger.error("request failed path=%s code=%s", request.url.path, exc.code)
    return JSONResponse(
        {"error": exc.code, "message": exc.message}, status_code=exc.status_code
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
    return JSONResponse(
        {"error": code, "message": exc.detail}, status_code=exc.status_code
    )


class RequestLog:
    """One line per request, with the path but never the query string.

    The query of a DS-facing link holds its signature, so access logs of the
    usual kind would leak it; this replaces them.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            logger.info(
                "request method=%s path=%s status=%d ms=%.1f",
                scope["method"],
                scope["path"],
                status,
                (time.monotonic() - started) * 1000,
            )
