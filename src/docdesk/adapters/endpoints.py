"""The Document Server's endpoints, whatever framework carries the request.

An adapter parses its framework's request into a :class:`DSRequest`, asks
:func:`refusal` whether the allow-list lets it in, runs :func:`answer` on
the desk's loop, and turns the :class:`Answer` into its framework's
response. The answers are those of the service's routes under ``/ds/``
(``docdesk.web.app``): the same statuses, bodies and streams, and the
callback's ``{"error": 0|1}`` form.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import urlsplit

import anyio.to_thread
from starlette.datastructures import Headers

from docdesk.callback import MAX_CALLBACK_BYTES
from docdesk.catalog import VersionRecord
from docdesk.desk import DocDesk
from docdesk.errors import ConfigurationError, DocdeskError
from docdesk.formats import format_for
from docdesk.settings import Settings
from docdesk.web.guard import client_address, is_allowed
from docdesk.web.pages import API_JS_PATH
from docdesk.web.scopes import shown

__all__ = [
    "MAX_CALLBACK_BYTES",
    "Answer",
    "DSRequest",
    "Readable",
    "Route",
    "answer",
    "api_js_url",
    "check_prefix",
    "file_chunks",
    "headers_from",
    "read_at_most",
    "refusal",
    "settings_from",
    "source_address",
]

logger = logging.getLogger(__name__)

READ_CHUNK = 262_144
# What a refused request hears: the callback answers in the DS's own form.
_CALLBACK_REFUSAL = {"error": 1}
_REFUSAL = {
    "error": "forbidden",
    "message": "this address may not call the Document Server endpoints",
}


class Route(StrEnum):
    """The four things the Document Server asks docdesk for."""

    FILE = "file"
    VERSION = "version"
    CHANGES = "changes"
    CALLBACK = "callback"


@dataclass(frozen=True)
class DSRequest:
    """One request to a DS-facing endpoint, parsed out of its framework.

    ``path`` is for the log; ``peer`` is the socket's address, which
    ``X-Forwarded-For`` refines when the peer is a trusted proxy. The body
    is read only once :func:`refusal` let the request in.
    """

    route: Route
    document_id: str
    path: str
    signature: str
    headers: Headers
    peer: str | None
    key: str = ""
    number: int = 0
    body: bytes = b""


@dataclass(frozen=True)
class Answer:
    """What to send back: JSON, or a stream of bytes."""

    status: int
    json: dict[str, Any] | None = None
    chunks: AsyncIterator[bytes] | None = None
    media_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class Readable(Protocol):
    """A binary file, as frameworks hand over uploads."""

    def read(self, size: int = ..., /) -> bytes: ...


def headers_from(pairs: Iterable[tuple[str, str]]) -> Headers:
    """Case-insensitive headers, as the desk's token checks need them."""
    return Headers(
        raw=[
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in pairs
        ]
    )


def source_address(request: DSRequest, settings: Settings) -> str | None:
    """Where the request came from, believing only trusted proxies."""
    scope = {
        "client": (request.peer, 0) if request.peer else None,
        "headers": request.headers.raw,
    }
    return client_address(scope, settings.trusted_proxies)


def refusal(request: DSRequest, settings: Settings) -> Answer | None:
    """The allow-list's 403, or None when the request may go on.

    ``DOCDESK_CALLBACK_ALLOW`` guards what the DS fetches and posts; the
    changes archive is fetched by the editor in the user's browser, so its
    signed link alone guards it, as in the service.
    """
    if request.route is Route.CHANGES or not settings.callback_allow:
        return None
    address = source_address(request, settings)
    if is_allowed(address, settings.callback_allow):
        return None

    logger.warning(
        "document server endpoint refused address=%s peer=%s path=%s",
        address or "unknown",
        request.peer,
        shown(request.path),
    )
    body = _CALLBACK_REFUSAL if request.route is Route.CALLBACK else _REFUSAL
    return Answer(403, dict(body))


async def answer(desk: DocDesk, request: DSRequest, settings: Settings) -> Answer:
    """Do what the request asks of the desk and say how to answer it."""
    if request.route is Route.CALLBACK:
        reply = await desk.handle_callback(
            request.document_id,
            request.signature,
            request.body,
            request.headers,
            source=source_address(request, settings),
        )
        return Answer(reply.http_status, reply.body())

    try:
        return await _file(desk, request)
    except DocdeskError as exc:
        if exc.status_code >= 500:
            logger.error(
                "request failed path=%s code=%s", shown(request.path), exc.code
            )
        return Answer(exc.status_code, {"error": exc.code, "message": exc.message})


async def _file(desk: DocDesk, request: DSRequest) -> Answer:
    if request.route is Route.FILE:
        version, chunks = await desk.open_file(
            request.document_id, request.key, request.signature, request.headers
        )
        return await _stream(
            version, chunks, {"Content-Length": str(version.size)}, changes=False
        )

    changes = request.route is Route.CHANGES
    version, chunks = await desk.open_version(
        request.document_id, request.number, request.signature, changes=changes
    )
    # The editor fetches the changes from its own frame, across origins.
    headers = {"Access-Control-Allow-Origin": "*"} if changes else {}
    return await _stream(version, chunks, headers, changes=changes)


async def _stream(
    version: VersionRecord,
    chunks: AsyncIterator[bytes],
    headers: dict[str, str],
    *,
    changes: bool,
) -> Answer:
    media_type = (
        "application/zip" if changes else format_for(version.file_type).mime_type
    )
    primed = await _primed(chunks)
    return Answer(200, chunks=primed, media_type=media_type, headers=headers)


async def _primed(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The stream with its first chunk already read.

    A blob store says a blob is missing with the first chunk: read before
    the answer starts, that becomes an error answer, not a cut-off stream.
    """
    try:
        first = await chunks.__anext__()
    except StopAsyncIteration:
        first = b""
    return _chained(first, chunks)


async def _chained(first: bytes, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        async for chunk in chunks:
            yield chunk
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


async def file_chunks(file: Readable) -> AsyncIterator[bytes]:
    """A blocking file's bytes, read on a worker thread."""
    while chunk := await anyio.to_thread.run_sync(file.read, READ_CHUNK):
        yield chunk


def api_js_url(settings: Settings) -> str:
    """Where the browser loads the Document Server's editor script."""
    return settings.effective_document_server_url.rstrip("/") + API_JS_PATH


def settings_from(config: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    """Settings from the ``DOCDESK_*`` names of ``config`` over ``environ``.

    ``DOCDESK_PUBLIC_URL`` is required: no default can guess where the
    Document Server reaches an application.
    """
    merged = dict(environ)
    merged.update(
        (name, str(value))
        for name, value in config.items()
        if name.startswith("DOCDESK_") and value is not None
    )
    if not merged.get("DOCDESK_PUBLIC_URL", "").strip():
        raise ConfigurationError(
            "DOCDESK_PUBLIC_URL is required: the URL where the Document Server "
            "reaches docdesk's routes in this application, prefix included"
        )
    return Settings.from_env(merged)


def check_prefix(settings: Settings, prefix: str) -> None:
    """Warn when the public URL does not end with the routes' prefix.

    A proxy may rewrite paths, so a mismatch is worth a warning, not a stop.
    """
    path = urlsplit(settings.public_url).path.rstrip("/")
    if not path.endswith(prefix.rstrip("/")):
        logger.warning(
            "public url does not end with the prefix public_path=%s prefix=%s",
            path or "/",
            prefix,
        )


def read_at_most(read: Callable[[int], bytes], limit: int) -> bytes:
    """At most ``limit`` bytes of a body; the desk judges what is too much."""
    body = bytearray()
    while len(body) < limit:
        chunk = read(limit - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)
