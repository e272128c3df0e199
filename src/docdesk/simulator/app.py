"""The simulator's HTTP face: the Document Server's endpoints on one port.

Beside the DS's own endpoints (``/healthcheck``, ``api.js``, the command
and conversion services, ``/cache/files``) it serves a control API under
``/simulator/`` that the stand-in editor uses, and that tests in any
language can drive: open an editor with a signed config, edit, press Save,
close, inject faults.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from docdesk import tokens
from docdesk.commands import CommandError
from docdesk.errors import TokenError
from docdesk.simulator.cache import LinkError, base_url_of
from docdesk.simulator.config import SimulatorSettings
from docdesk.simulator.edits import read_text
from docdesk.simulator.inbox import InboxTokenError, read_inbox
from docdesk.simulator.sessions import ConfigRejected, Simulator

__all__ = ["create_simulator_app"]

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1024 * 1024
# How long a stalled download hangs: longer than any client's deadline.
STALL_SECONDS = 3600.0
# How long a slow download waits before its body: slow, not stalled.
SLOW_SECONDS = 3.0
FAULTS = {
    "download": ("fail", "truncate", "stall", "slow"),
    "assembly": ("fail", "corrupt"),
    "callback": ("drop", "reject", "lose", "timeout"),
}


def create_simulator_app(
    settings: SimulatorSettings, *, simulator: Simulator | None = None
) -> Starlette:
    """The simulated Document Server as an ASGI app.

    Mounted under a path prefix, its links and callbacks still work: every
    link is built from the URL the request came to.
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await app.state.conversion.aclose()
        await app.state.simulator.aclose()

    app = Starlette(routes=ROUTES, lifespan=lifespan)
    app.state.simulator = simulator or Simulator(settings)
    from docdesk.simulator.conversion import ConversionService

    app.state.conversion = ConversionService(app.state.simulator)
    return app


def _simulator(request: Request) -> Simulator:
    simulator: Simulator = request.app.state.simulator
    return simulator


# The Document Server's endpoints


async def healthcheck(request: Request) -> Response:
    return PlainTextResponse("true")


async def api_js(request: Request) -> Response:
    script = resources.files("docdesk.simulator").joinpath("static/api.js")
    return Response(
        script.read_text(encoding="utf-8"),
        media_type="application/javascript; charset=utf-8",
        headers={"Cache-Control": "no-cache"},
    )


async def command_service(request: Request) -> Response:
    """``/command`` and ``/coauthoring/CommandService.ashx``: always HTTP 200."""
    simulator = _simulator(request)
    body = await _body_params(request)
    try:
        params = read_inbox(
            body,
            request.headers,
            secret=simulator.settings.secret,
            header=simulator.settings.jwt_header,
        )
    except InboxTokenError as exc:
        error = CommandError.TOKEN_EXPIRED if exc.expired else CommandError.TOKEN
        return _command_answer(body.get("key"), error)

    key = params.get("key")
    if simulator.faults.command:
        return _command_answer(key, CommandError(simulator.faults.command.pop(0)))
    answer = await _run_command(simulator, params, base_url_of(request))
    return JSONResponse({"key": key, **answer} if isinstance(key, str) else answer)


async def _run_command(
    simulator: Simulator, params: dict[str, Any], base_url: str
) -> dict[str, Any]:
    command, key = params.get("c"), params.get("key")
    if command == "version":
        version = simulator.settings.server_version
        return {"error": 0, "version": f"{version}.{simulator.settings.build_number}"}
    if command == "license":
        return {"error": 0, **_license(simulator)}
    if command == "getForgottenList":
        return {"error": 0, "keys": sorted(simulator.forgotten)}
    if command not in COMMANDS:
        return {"error": CommandError.UNKNOWN_COMMAND}
    if not isinstance(key, str):
        return {"error": CommandError.DOCUMENT_ID}

    if command == "info":
        error, users = await simulator.info(
            key,
            userdata=_string(params.get("userdata")),
            callback=_string(params.get("callback")),
        )
        return {"error": error, "users": users} if error == 0 else {"error": error}
    if command == "forcesave":
        error = await simulator.forcesave(key, userdata=_string(params.get("userdata")))
        return {"error": error}
    if command == "drop":
        dropped = params.get("users")
        await simulator.drop(key, dropped if isinstance(dropped, list) else None)
        return {"error": 0}
    if command == "meta":
        meta = params.get("meta")
        if not isinstance(meta, dict):
            return {"error": CommandError.UNKNOWN_COMMAND}
        return {"error": simulator.meta(key, meta)}
    if command == "saved":
        return {"error": simulator.saved(key, str(params.get("status", "")))}
    if command == "getForgotten":
        url = simulator.forgotten_link(key, base_url)
        return {"error": 0, "url": url} if url else {"error": CommandError.DOCUMENT_ID}
    # deleteForgotten
    if simulator.forgotten.pop(key, None) is None:
        return {"error": CommandError.DOCUMENT_ID}
    return {"error": 0}


COMMANDS = frozenset(
    {"info", "forcesave", "drop", "meta", "saved", "getForgotten", "deleteForgotten"}
)


def _license(simulator: Simulator) -> dict[str, Any]:
    users = sorted(
        {e.user_id for e in simulator.editors.values() if e.open and e.edits}
    )
    viewers = sorted(
        {e.user_id for e in simulator.editors.values() if e.open and not e.edits}
    )
    return {
        "license": {"end_date": None, "trial": False, "customization": False},
        "server": {
            "resultType": 7,
            "packageType": 0,
            "buildDate": "2026-01-01T00:00:00.000Z",
            "buildVersion": simulator.settings.server_version,
            "buildNumber": simulator.settings.build_number,
        },
        "quota": {
            "users": [{"userid": u, "expire": None} for u in users],
            "users_view": [{"userid": u, "expire": None} for u in viewers],
        },
    }


def _command_answer(key: Any, error: CommandError) -> Response:
    answer: dict[str, Any] = {"error": int(error)}
    if isinstance(key, str):
        answer = {"key": key, **answer}
    return JSONResponse(answer)


async def conversion_service(request: Request) -> Response:
    response: Response = await request.app.state.conversion.handle(request)
    return response


async def cached_file(request: Request) -> Response:
    """A ``/cache/files`` link, checked as nginx's ``secure_link`` checks it."""
    simulator = _simulator(request)
    try:
        cached = simulator.cache.open(
            request.url.path.removeprefix(request.scope.get("root_path", "")),
            request.query_params.get("md5", ""),
            request.query_params.get("expires", ""),
        )
    except LinkError as exc:
        return PlainTextResponse(str(exc), status_code=exc.status)

    fault = simulator.faults.download.pop(0) if simulator.faults.download else None
    if fault == "fail":
        return PlainTextResponse("injected failure", status_code=500)
    if fault == "stall":
        await asyncio.sleep(STALL_SECONDS)
    if fault == "slow":
        await asyncio.sleep(SLOW_SECONDS)
    data = cached.data
    headers = {"Content-Length": str(len(data))}
    if fault == "truncate":
        return _truncated(data)
    return Response(data, media_type="application/octet-stream", headers=headers)


def _truncated(data: bytes) -> Response:
    """Half the bytes under the whole length: the connection ends early."""

    async def half() -> AsyncIterator[bytes]:
        yield data[: len(data) // 2]

    return StreamingResponse(
        half(),
        media_type="application/octet-stream",
        headers={"Content-Length": str(len(data))},
    )


# The control API


async def open_session(request: Request) -> Response:
    body = await _json(request)
    config = body.get("config")
    if not isinstance(config, dict):
        return _problem(400, "bad_request", "the body needs a 'config' object")
    try:
        editor = await _simulator(request).connect(config, base_url_of(request))
    except ConfigRejected as exc:
        return _problem(403, "config_rejected", exc.message, ds_code=exc.code)
    return JSONResponse({"session": editor.id, "key": editor.key}, status_code=201)


async def session_state(request: Request) -> Response:
    simulator = _simulator(request)
    editor = simulator.editors.get(request.path_params["id"])
    if editor is None:
        return _problem(404, "not_found", "no such session")
    session = simulator.sessions.get(editor.key) if editor.open else None
    state: dict[str, Any] = {
        "session": editor.id,
        "key": editor.key,
        "user": {"id": editor.user_id, "name": editor.user_name},
        "mode": "edit" if editor.edits else "view",
        "forcesave": editor.forcesave,
        "state": "open" if session else "closed",
        "messages": editor.messages,
    }
    if session is not None:
        state.update(
            title=session.title,
            file_type=session.file_type,
            editors=session.editor_ids,
            changes=len(session.changes),
            text=read_text(session.file_type, simulator.text(editor.id)),
        )
    return JSONResponse(state)


async def edit(request: Request) -> Response:
    text = (await _json(request)).get("text")
    if not isinstance(text, str) or not text:
        return _problem(400, "bad_request", "the body needs a non-empty 'text'")

    async def add(simulator: Simulator, editor_id: str) -> dict[str, Any]:
        simulator.edit(editor_id, text)
        return {}

    return await _on_editor(request, add)


async def save(request: Request) -> Response:
    async def press(simulator: Simulator, editor_id: str) -> dict[str, Any]:
        return {"forcesave": await simulator.press_save(editor_id)}

    return await _on_editor(request, press)


async def submit(request: Request) -> Response:
    fields = (await _json(request)).get("fields", {})
    if not isinstance(fields, dict):
        return _problem(400, "bad_request", "'fields' must be an object")

    async def send(simulator: Simulator, editor_id: str) -> dict[str, Any]:
        return {"forcesave": await simulator.submit_form(editor_id, fields)}

    return await _on_editor(request, send)


async def close(request: Request) -> Response:
    async def leave(simulator: Simulator, editor_id: str) -> dict[str, Any]:
        await simulator.leave(editor_id)
        return {}

    return await _on_editor(request, leave)


async def download_as(request: Request) -> Response:
    """``downloadAs``: a signed link to the file as this editor sees it now."""
    simulator = _simulator(request)
    editor = simulator.editors.get(request.path_params["id"])
    session = simulator.session_of(editor.id) if editor and editor.open else None
    if editor is None or session is None:
        return _problem(404, "not_found", "no such open session")
    wanted = request.query_params.get("format", session.file_type).lower()
    if wanted != session.file_type:
        # XXX: downloadAs converts only to the document's own format here;
        # the conversion service covers the rest.
        return _problem(415, "unsupported_format", "only the document's own format")
    data = simulator.text(editor.id)
    path = simulator.cache.put(session.key, f"output.{wanted}", data)
    url = simulator.cache.link(base_url_of(request), path)
    return JSONResponse({"fileType": wanted, "url": url})


async def history_data(request: Request) -> Response:
    """``setHistoryData``: the DS checks the token, then shows that version."""
    simulator = _simulator(request)
    if request.path_params["id"] not in simulator.editors:
        return _problem(404, "not_found", "no such session")
    data = (await _json(request)).get("data")
    if not isinstance(data, dict) or not isinstance(data.get("token"), str):
        return _problem(400, "bad_request", "setHistoryData needs a signed object")
    try:
        claims = tokens.verify(data["token"], simulator.settings.secret)
    except TokenError as exc:
        return _problem(403, "invalid_token", exc.message)
    if "version" not in claims or not isinstance(claims.get("url"), str):
        return _problem(403, "invalid_token", "the token lacks version or url")

    file_type = str(claims.get("fileType") or "docx")
    try:
        content = await simulator.download(claims["url"])
    except ConfigRejected as exc:
        return _problem(502, "download_failed", exc.message, ds_code=exc.code)
    return JSONResponse(
        {"version": claims["version"], "text": read_text(file_type, content)}
    )


async def faults(request: Request) -> Response:
    """Queue misbehaviour, e.g. ``{"download": "stall", "command": 3}``."""
    simulator = _simulator(request)
    body = await _json(request)
    times = body.get("times", 1)
    if not isinstance(times, int) or not 1 <= times <= 100:
        return _problem(400, "bad_request", "'times' must be 1 to 100")
    for kind, allowed in FAULTS.items():
        if kind in body:
            if body[kind] not in allowed:
                return _problem(
                    400, "bad_request", f"'{kind}' must be one of {allowed}"
                )
            getattr(simulator.faults, kind).extend([body[kind]] * times)
    if "command" in body:
        try:
            simulator.faults.command.extend(
                [int(CommandError(body["command"]))] * times
            )
        except (ValueError, TypeError):
            return _problem(400, "bad_request", "'command' must be an error code 0-7")
    return JSONResponse(
        {
            "download": simulator.faults.download,
            "assembly": simulator.faults.assembly,
            "command": simulator.faults.command,
            "callback": simulator.faults.callback,
        }
    )


async def sent_callbacks(request: Request) -> Response:
    """Every callback attempt so far, newest last; ``?key=`` for one key's."""
    sent = _simulator(request).sender.sent
    if key := request.query_params.get("key"):
        sent = [s for s in sent if s.key == key]
    return JSONResponse(
        {
            "callbacks": [
                {
                    "key": s.key,
                    "status": s.status,
                    "attempt": s.attempt,
                    "url": s.url,
                    "http_status": s.http_status,
                    "answer": s.answer,
                    "success": s.success,
                    "body": s.body,
                }
                for s in sent
            ]
        }
    )


async def _on_editor(request: Request, action: Any) -> Response:
    simulator = _simulator(request)
    editor_id = request.path_params["id"]
    if editor_id not in simulator.editors:
        return _problem(404, "not_found", "no such session")
    try:
        result = await action(simulator, editor_id)
    except ConfigRejected as exc:
        return _problem(409, "session_closed", exc.message, ds_code=exc.code)
    return JSONResponse(result or {"ok": True})


async def _json(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > MAX_REQUEST_BYTES:
        return {}
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


async def _body_params(request: Request) -> dict[str, Any]:
    """A command's parameters: the JSON body, or the query string on GET."""
    if request.method == "GET":
        return dict(request.query_params)
    return await _json(request)


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _problem(status: int, code: str, message: str, **extra: Any) -> Response:
    return JSONResponse(
        {"error": code, "message": message, **extra}, status_code=status
    )


ROUTES = [
    Route("/healthcheck", healthcheck, methods=["GET"]),
    Route("/web-apps/apps/api/documents/api.js", api_js, methods=["GET"]),
    Route("/command", command_service, methods=["POST"]),
    Route("/coauthoring/CommandService.ashx", command_service, methods=["GET", "POST"]),
    Route("/converter", conversion_service, methods=["POST"]),
    Route("/ConvertService.ashx", conversion_service, methods=["GET", "POST"]),
    Route("/cache/files/{path:path}", cached_file, methods=["GET"]),
    Route("/simulator/sessions", open_session, methods=["POST"]),
    Route("/simulator/sessions/{id}", session_state, methods=["GET"]),
    Route("/simulator/sessions/{id}/edit", edit, methods=["POST"]),
    Route("/simulator/sessions/{id}/save", save, methods=["POST"]),
    Route("/simulator/sessions/{id}/submit", submit, methods=["POST"]),
    Route("/simulator/sessions/{id}/close", close, methods=["POST"]),
    Route("/simulator/sessions/{id}/download", download_as, methods=["GET"]),
    Route("/simulator/sessions/{id}/history", history_data, methods=["POST"]),
    Route("/simulator/faults", faults, methods=["POST"]),
    Route("/simulator/callbacks", sent_callbacks, methods=["GET"]),
]
