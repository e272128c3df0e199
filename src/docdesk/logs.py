"""Request ids on log lines, and the two formats the command line writes.

While the service handles a request, :class:`RequestIdMiddleware` keeps the
request's id in a context variable; :class:`RequestIdFilter` copies it onto
every record logged meanwhile, by docdesk or by anything it calls, so an
operator can gather one request's lines with a single grep. The id also goes
back in the response's ``X-Request-ID`` header, for the caller to quote.

The library only logs: :func:`configure` is for the CLI, or for an
application that wants docdesk's formats for its own handlers.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TextIO

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "HEADER",
    "NO_REQUEST",
    "TEXT_FORMAT",
    "JsonFormatter",
    "LogFormat",
    "RequestIdFilter",
    "RequestIdMiddleware",
    "TextFormatter",
    "configure",
    "request_id",
]

LogFormat = Literal["text", "json"]
_ExcInfo = (
    tuple[type[BaseException], BaseException, TracebackType | None]
    | tuple[None, None, None]
)

HEADER = "X-Request-ID"
# What a record logged outside any request shows as its request id.
NO_REQUEST = "-"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"

# A caller's id lands verbatim in every line: no spaces, no line breaks,
# nothing long enough to flood a log.
_SANE_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")
_HEADER_NAME = HEADER.lower().encode()

_current: ContextVar[str | None] = ContextVar("docdesk_request_id", default=None)


def request_id() -> str | None:
    """The id of the request being handled, or None outside a request."""
    return _current.get()


class RequestIdFilter(logging.Filter):
    """Puts ``request_id`` on each record: the current request's, or ``-``.

    Add it to a handler, not a logger: a logger's filters never see the
    records its children pass up. A record that already has an id keeps it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        _stamp(record)
        return True


class TextFormatter(logging.Formatter):
    """``time LEVEL logger [request id] message``, the traceback beneath."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        _stamp(record)
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors.

    The fields are ``time`` (ISO 8601, UTC, milliseconds), ``level``,
    ``logger``, ``request_id``, ``message`` and, when there is one,
    ``exception``. A record whose arguments do not render still gives a
    line: a log call must never be what fails.
    """

    def format(self, record: logging.LogRecord) -> str:
        _stamp(record)
        entry = {
            "time": _utc(record.created),
            "level": _text(record.levelname),
            "logger": _text(record.name),
            "request_id": _text(getattr(record, "request_id", NO_REQUEST)),
            "message": _message(record),
        }

        if record.exc_info and not record.exc_text:
            record.exc_text = self._traceback(record.exc_info)
        if record.exc_text:
            entry["exception"] = _text(record.exc_text)
        if record.stack_info:
            entry["stack"] = _text(record.stack_info)

        # ASCII escapes keep even a lone surrogate from failing the write.
        return json.dumps(entry, ensure_ascii=True)

    def _traceback(self, exc_info: _ExcInfo) -> str:
        try:
            return self.formatException(exc_info)
        except Exception as exc:
            return f"<traceback not rendered: {_repr(exc)}>"


def configure(level: str | int = "info", fmt: LogFormat | str = "text") -> None:
    """Send every record at ``level`` and above to stderr, in ``fmt``.

    One handler on the root logger, with :class:`RequestIdFilter`; calling
    again replaces its level and format rather than adding a second one.
    """
    formatter = _formatter(fmt)
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _StderrHandler)), None)

    if handler is None:
        handler = _StderrHandler()
        handler.addFilter(RequestIdFilter())
        root.addHandler(handler)
    handler.setFormatter(formatter)
    root.setLevel(level.upper() if isinstance(level, str) else level)


class RequestIdMiddleware:
    """Give every HTTP request an id, for its log lines and its answer.

    A caller's ``X-Request-ID`` is taken when it is 1 to 64 characters of
    letters, digits, ``.``, ``_`` and ``-`` (a proxy's id then joins both
    logs); anything else is ignored, never cleaned up, and a new random id
    used instead. Put it outermost, so every other middleware's lines carry
    the id too.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        value = _incoming(scope.get("headers", ())) or secrets.token_hex(8)
        header = (_HEADER_NAME, value.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [
                    (name, raw)
                    for name, raw in message.get("headers", ())
                    if name.lower() != _HEADER_NAME
                ]
                message = {**message, "headers": [*kept, header]}
            await send(message)

        token = _current.set(value)
        await self.app(scope, receive, send_with_id)
        # Not reset when the app raises: the server logs the traceback next,
        # in this same task, and that line should name the request too.
        _current.reset(token)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is at the time of each record.

    As logging's own last-resort handler does: a stderr swapped after
    start-up (click's test runner, a daemonizing wrapper) still gets lines.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _formatter(fmt: str) -> logging.Formatter:
    if fmt.lower() == "text":
        return TextFormatter()
    if fmt.lower() == "json":
        return JsonFormatter()
    raise ValueError(f"unknown log format {fmt!r}: use 'text' or 'json'")


def _incoming(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The caller's request id if it is sane; only the first header counts."""
    for name, value in headers:
        if name.lower() == _HEADER_NAME:
            return value.decode("ascii") if _SANE_ID.fullmatch(value) else None
    return None


def _stamp(record: logging.LogRecord) -> None:
    if "request_id" not in record.__dict__:
        record.__dict__["request_id"] = _current.get() or NO_REQUEST


def _utc(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _message(record: logging.LogRecord) -> str:
    try:
        return _text(record.getMessage())
    except Exception:
        # A wrong argument count or a failing __str__: keep what there is.
        args = record.args if isinstance(record.args, tuple) else (record.args,)
        if not args:
            return _text(record.msg)
        shown = ", ".join(_repr(arg) for arg in args)
        return f"{_text(record.msg)} (unformatted args: {shown})"


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return str(value)
    except Exception:
        return _repr(value)


def _repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__} object>"
